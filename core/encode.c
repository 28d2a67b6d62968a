/* encode.c: base64, hex and SHA-256 (OpenSSL's EVP interface), plus JSON
 * file loading and atomic JSON writes. */
#include "core.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *tf_base64_encode(const void *data, size_t len)
{
    const unsigned char *in = data;
    size_t out_len = 4 * ((len + 2) / 3);
    char *out = malloc(out_len + 1), *o = out;
    if (!out)
        return NULL;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = B64[(v >> 6) & 63];
        *o++ = B64[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = i + 1 < len ? B64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = 0;
    return out;
}

/* The decoding table, built once (pthread_once: the first calls may come
 * from several threads at the same time). */
static signed char b64_map[256];
static pthread_once_t b64_once = PTHREAD_ONCE_INIT;

static void b64_map_init(void)
{
    memset(b64_map, -1, sizeof b64_map);
    for (int i = 0; i < 64; i++)
        b64_map[(unsigned char)B64[i]] = (signed char)i;
}

unsigned char *tf_base64_decode(const char *text, size_t text_len, size_t *out_len, TfError *err)
{
    pthread_once(&b64_once, b64_map_init);
    const signed char *map = b64_map;
    while (text_len && text[text_len - 1] == '=')
        text_len--;
    if (text_len % 4 == 1) {
        tf_fail(err, "base64 text has a bad length");
        return NULL;
    }
    unsigned char *out = malloc(text_len / 4 * 3 + 3), *o = out;
    if (!out) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < text_len; i++) {
        int v = map[(unsigned char)text[i]];
        if (v < 0) {
            free(out);
            tf_fail(err, "base64 text has a bad character at %zu", i);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (unsigned char)(acc >> bits);
        }
    }
    *out_len = (size_t)(o - out);
    return out;
}

void tf_hex(const unsigned char *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    out[2 * len] = 0;
}

void tf_sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 32;
    EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

struct TfSha256 {
    EVP_MD_CTX *ctx;
};

TfSha256 *tf_sha256_new(void)
{
    TfSha256 *h = malloc(sizeof *h);
    if (!h)
        return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h->ctx);
        free(h);
        return NULL;
    }
    return h;
}

void tf_sha256_update(TfSha256 *h, const void *data, size_t len)
{
    EVP_DigestUpdate(h->ctx, data, len);
}

void tf_sha256_final(TfSha256 *h, unsigned char out[32])
{
    unsigned int n = 32;
    EVP_DigestFinal_ex(h->ctx, out, &n);
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

json_t *tf_json_load_file(const char *path, size_t max_bytes, TfError *err)
{
    size_t len;
    char *text = tf_read_file(path, max_bytes, &len, err);
    if (!text)
        return NULL;
    json_error_t je;
    json_t *v = json_loadb(text, len, 0, &je);
    free(text);
    if (!v)
        tf_fail(err, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    return v;
}

int tf_json_write_file_atomic(const char *path, const json_t *value, TfError *err)
{
    char *text = json_dumps(value, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text)
        return tf_fail(err, "%s: could not serialise JSON", path);
    size_t n = strlen(text);
    char *withnl = realloc(text, n + 2);
    if (!withnl) {
        free(text);
        return tf_fail(err, "out of memory");
    }
    withnl[n] = '\n';
    withnl[n + 1] = 0;
    int rc = tf_write_file_atomic(path, withnl, n + 1, err);
    free(withnl);
    return rc;
}
