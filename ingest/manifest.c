/* manifest.c: reading TSV, CSV and JSON-lines manifests, plain, gzip or
 * zstd compressed, as a stream of rows in bounded memory (a slice of the
 * decompressed text at a time), and the whole-file loader of the local
 * `transfuse ingest` on top of it. */
#include "stats_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#define MANIFEST_MAX_RECORD ((size_t)16 << 20) /* one row, quoted newlines included */
#define MANIFEST_IN_CHUNK ((size_t)256 << 10)

typedef struct Fields {
    char **v;
    size_t n, cap;
} Fields;

static int fields_push(Fields *f, const char *s, size_t len)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        char **g = realloc(f->v, cap * sizeof *g);
        if (!g)
            return -1;
        f->v = g;
        f->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, s, len);
    copy[len] = 0;
    f->v[f->n++] = copy;
    return 0;
}

static void fields_clear(Fields *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->v[i]);
    f->n = 0;
}

/* Appends one byte to a growing buffer. Returns -1 when out of memory. */
static int byte_push(char **buf, size_t *len, size_t *cap, char c)
{
    if (*len + 1 >= *cap) {
        size_t ncap = *cap ? *cap * 2 : 256;
        char *g = realloc(*buf, ncap);
        if (!g)
            return -1;
        *buf = g;
        *cap = ncap;
    }
    (*buf)[(*len)++] = c;
    return 0;
}

/* Splits one record starting at *p (CSV with RFC 4180 quotes, or TSV with
 * none), advancing *p past its line end. Counts lines into *line. Returns
 * 0, or -1 with err on an unterminated quote or out of memory. */
static int split_record(const char **p, const char *end, int csv, Fields *out, uint64_t *line, TfError *err)
{
    const char *s = *p;
    char *buf = NULL;
    size_t blen = 0, bcap = 0;
    char sep = csv ? ',' : '\t';
    uint64_t start_line = *line;
    for (;;) {
        blen = 0;
        if (csv && s < end && *s == '"') {
            s++;
            for (;;) {
                if (s >= end) {
                    free(buf);
                    return tf_fail(err, "line %llu: unterminated quoted field", (unsigned long long)start_line);
                }
                if (*s == '"') {
                    if (s + 1 < end && s[1] == '"') {
                        s++;
                    } else {
                        s++;
                        break;
                    }
                }
                if (*s == '\n')
                    (*line)++;
                if (byte_push(&buf, &blen, &bcap, *s++)) {
                    free(buf);
                    return tf_fail(err, "out of memory");
                }
            }
            /* anything up to the separator after a closing quote is kept */
            while (s < end && *s != sep && *s != '\n' && *s != '\r') {
                if (byte_push(&buf, &blen, &bcap, *s++)) {
                    free(buf);
                    return tf_fail(err, "out of memory");
                }
            }
            if (fields_push(out, buf ? buf : "", blen)) {
                free(buf);
                return tf_fail(err, "out of memory");
            }
        } else {
            const char *f = s;
            while (s < end && *s != sep && *s != '\n' && *s != '\r')
                s++;
            if (fields_push(out, f, (size_t)(s - f))) {
                free(buf);
                return tf_fail(err, "out of memory");
            }
        }
        if (s < end && *s == sep) {
            s++;
            continue;
        }
        break;
    }
    if (s < end && *s == '\r')
        s++;
    if (s < end && *s == '\n')
        s++;
    (*line)++;
    *p = s;
    free(buf);
    return 0;
}


/* ---- the byte stream: plain, gzip or zstd, told by the magic bytes ---- */

enum { COMP_NONE = 0, COMP_GZIP, COMP_ZSTD };

struct ManifestReader {
    ManifestReaderOptions o;
    char *path, *identity, *col_image, *col_caption, *col_key, *col_hash;
    char base_dir[4096];
    int fd, comp, csv, jsonl;
    z_stream zs;
    int zs_live;
    ZSTD_DStream *zd;
    unsigned char *in;           /* compressed input */
    size_t in_len, in_pos;
    int in_eof, eof;             /* file ended; decompressed stream ended */
    char *buf;                   /* decompressed text [buf_off, buf_off + len) */
    size_t len, pos, cap;        /* pos: the next row's first byte */
    uint64_t buf_off;
    uint64_t line;               /* line of the byte at pos */
    uint64_t file_bytes;
    Fields header, values;
    IngestRow cur;               /* strings owned until the next call */
    int header_done;
};

/* Reads more compressed or plain input. Returns 0, or -1 with err. */
static int input_fill(ManifestReader *r, TfError *err)
{
    if (r->in_pos < r->in_len || r->in_eof)
        return 0;
    for (;;) {
        ssize_t n = read(r->fd, r->in, MANIFEST_IN_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return tf_fail(err, "%s: read: %s", r->path, strerror(errno));
        r->in_len = (size_t)n;
        r->in_pos = 0;
        r->file_bytes += (uint64_t)n;
        if (n == 0)
            r->in_eof = 1;
        return 0;
    }
}

/* Appends decompressed text to buf (growing it to at most
 * MANIFEST_MAX_RECORD + a chunk beyond pos). Returns 1 when bytes were
 * added, 0 at the end of the text, -1 with err. */
static int text_more(ManifestReader *r, TfError *err)
{
    if (r->eof)
        return 0;
    if (r->pos > 0 && r->pos >= r->len / 2) { /* keep the row being read at the front */
        memmove(r->buf, r->buf + r->pos, r->len - r->pos);
        r->len -= r->pos;
        r->buf_off += r->pos;
        r->pos = 0;
    }
    if (r->cap - r->len < MANIFEST_IN_CHUNK) {
        size_t cap = r->cap ? r->cap * 2 : 2 * MANIFEST_IN_CHUNK;
        if (r->len - r->pos > MANIFEST_MAX_RECORD)
            return tf_fail(err, "%s:%llu: a row longer than %zu MiB (unterminated quote?)", r->path,
                           (unsigned long long)r->line, MANIFEST_MAX_RECORD >> 20);
        char *g = realloc(r->buf, cap + 1);
        if (!g)
            return tf_fail(err, "out of memory");
        r->buf = g;
        r->cap = cap;
    }
    for (;;) {
        if (input_fill(r, err))
            return -1;
        size_t room = r->cap - r->len, before = r->len;
        if (r->comp == COMP_NONE) {
            if (r->in_eof && r->in_pos >= r->in_len) {
                r->eof = 1;
                return 0;
            }
            size_t n = r->in_len - r->in_pos < room ? r->in_len - r->in_pos : room;
            memcpy(r->buf + r->len, r->in + r->in_pos, n);
            r->in_pos += n;
            r->len += n;
            return 1;
        }
        if (r->comp == COMP_GZIP) {
            if (!r->zs_live) { /* the next member of a multi-member file, or the end */
                if (r->in_eof && r->in_pos >= r->in_len) {
                    r->eof = 1;
                    return 0;
                }
                if (r->in_pos >= r->in_len)
                    continue;
                if (inflateReset(&r->zs) != Z_OK)
                    return tf_fail(err, "%s: gzip: cannot restart", r->path);
                r->zs_live = 1;
            }
            r->zs.next_in = r->in + r->in_pos;
            r->zs.avail_in = (uInt)(r->in_len - r->in_pos);
            r->zs.next_out = (Bytef *)r->buf + r->len;
            r->zs.avail_out = (uInt)room;
            int zr = inflate(&r->zs, Z_NO_FLUSH);
            r->in_pos = r->in_len - r->zs.avail_in;
            r->len = r->cap - r->zs.avail_out;
            if (zr == Z_STREAM_END)
                r->zs_live = 0;
            else if (zr != Z_OK && zr != Z_BUF_ERROR)
                return tf_fail(err, "%s: gzip data at byte %llu: %s", r->path, (unsigned long long)r->file_bytes,
                               r->zs.msg ? r->zs.msg : "corrupt");
            if (zr == Z_BUF_ERROR && r->in_eof && r->in_pos >= r->in_len)
                return tf_fail(err, "%s: the gzip stream is truncated", r->path);
        } else {
            if (r->in_eof && r->in_pos >= r->in_len) {
                if (r->zs_live)
                    return tf_fail(err, "%s: the zstd stream is truncated", r->path);
                r->eof = 1;
                return 0;
            }
            ZSTD_inBuffer ib = {r->in, r->in_len, r->in_pos};
            ZSTD_outBuffer ob = {r->buf + r->len, room, 0};
            size_t zr = ZSTD_decompressStream(r->zd, &ob, &ib);
            if (ZSTD_isError(zr))
                return tf_fail(err, "%s: zstd data: %s", r->path, ZSTD_getErrorName(zr));
            r->zs_live = zr != 0; /* 0: a frame ended */
            r->in_pos = ib.pos;
            r->len += ob.pos;
        }
        if (r->len > before)
            return 1;
    }
}

/* Finds the end of the record at pos (one past its '\n', or the end of
 * the text), reading more as needed. CSV: newlines inside quotes do not
 * end it. Returns 1 with *end set, 0 when no bytes are left, -1 with err. */
static int record_end(ManifestReader *r, size_t *end, TfError *err)
{
    size_t i = r->pos;
    int quoted = 0;
    for (;;) {
        for (; i < r->len; i++) {
            char c = r->buf[i];
            if (c == '"' && r->csv)
                quoted = !quoted;
            else if (c == '\n' && !quoted) {
                *end = i + 1;
                return 1;
            }
        }
        size_t rel = i - r->pos;
        int m = text_more(r, err);
        if (m < 0)
            return -1;
        i = r->pos + rel; /* text_more may have moved the row to the front */
        if (m == 0) {
            if (r->pos >= r->len)
                return 0;
            *end = r->len;
            return 1;
        }
    }
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Resolves a relative local path against the manifest's folder. */
static char *resolve_image(const char *image, const char *base_dir)
{
    if (image[0] == '/' || strstr(image, "://") || !base_dir[0])
        return strdup(image);
    size_t n = strlen(base_dir) + strlen(image) + 2;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s/%s", base_dir, image);
    return out;
}

/* The default key of a row: the first 24 hex digits of SHA-256 over the
 * row's line number and its image and caption values as written (before
 * path resolution), NUL-separated; with a manifest identity (ingest run,
 * ingest worker) the identity too, under another version tag. The line
 * makes two equal rows two samples (the same URL with two captions is
 * common in web data); the values make a row whose content changed a new
 * sample. The same manifest gives the same keys on every run and machine,
 * and a job that knows its first line derives them from its slice alone. */
static char *derive_key(const char *identity, uint64_t line, const char *image, const char *caption)
{
    char head[48];
    int with_id = identity && *identity;
    int n = snprintf(head, sizeof head, "transfuse-row-v%d%c%llu", with_id ? 2 : 1, 0, (unsigned long long)line);
    TfSha256 *h = tf_sha256_new();
    if (!h)
        return NULL;
    tf_sha256_update(h, head, (size_t)n + 1); /* with the NUL after the line */
    if (with_id)
        tf_sha256_update(h, identity, strlen(identity) + 1);
    tf_sha256_update(h, image, strlen(image) + 1);
    tf_sha256_update(h, caption, strlen(caption));
    unsigned char digest[32];
    char hex[65];
    tf_sha256_final(h, digest);
    tf_hex(digest, 32, hex);
    hex[INGEST_KEY_HEX] = 0;
    return strdup(hex);
}

void ingest_row_deinit(IngestRow *r)
{
    free(r->image);
    free(r->caption);
    free(r->key);
    for (size_t k = 0; k < r->n_extra; k++) {
        free(r->extra_names[k]);
        free(r->extra_values[k]);
    }
    free(r->extra_names);
    free(r->extra_values);
    memset(r, 0, sizeof *r);
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

int ingest_row_copy(IngestRow *dst, const IngestRow *src)
{
    memset(dst, 0, sizeof *dst);
    dst->line = src->line;
    dst->offset = src->offset;
    memcpy(dst->sha256, src->sha256, 32);
    dst->has_sha256 = src->has_sha256;
    dst->image = dup_or_empty(src->image);
    dst->caption = dup_or_empty(src->caption);
    dst->key = dup_or_empty(src->key);
    size_t n = src->n_extra;
    dst->extra_names = calloc(n ? n : 1, sizeof(char *));
    dst->extra_values = calloc(n ? n : 1, sizeof(char *));
    if (!dst->image || !dst->caption || !dst->key || !dst->extra_names || !dst->extra_values)
        goto fail;
    for (size_t k = 0; k < n; k++) {
        dst->n_extra = k + 1;
        dst->extra_names[k] = dup_or_empty(src->extra_names[k]);
        dst->extra_values[k] = dup_or_empty(src->extra_values[k]);
        if (!dst->extra_names[k] || !dst->extra_values[k])
            goto fail;
    }
    return 0;
fail:
    ingest_row_deinit(dst);
    return -1;
}

/* Fills r->cur from column names and values. Returns MANIFEST_ROW,
 * MANIFEST_BAD_ROW with why filled, or -1 (out of memory). */
static int row_fill(ManifestReader *rd, char **names, char **values, size_t n, char *why, size_t cap, TfError *err)
{
    IngestRow *r = &rd->cur;
    const char *image = NULL, *caption = NULL, *key = NULL, *hash = NULL;
    r->extra_names = calloc(n ? n : 1, sizeof *r->extra_names);
    r->extra_values = calloc(n ? n : 1, sizeof *r->extra_values);
    if (!r->extra_names || !r->extra_values)
        return tf_fail(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(names[i], rd->col_image))
            image = values[i];
        else if (!strcmp(names[i], rd->col_caption))
            caption = values[i];
        else if (rd->col_key && !strcmp(names[i], rd->col_key))
            key = values[i];
        else if (rd->col_hash && !strcmp(names[i], rd->col_hash))
            hash = values[i];
        else {
            if (!(r->extra_names[r->n_extra] = strdup(names[i])) ||
                !(r->extra_values[r->n_extra] = strdup(values[i])))
                return tf_fail(err, "out of memory");
            r->n_extra++;
        }
    }
    if (!image || !*image) {
        snprintf(why, cap, "line %llu: no value in image column '%s'", (unsigned long long)r->line, rd->col_image);
        return MANIFEST_BAD_ROW;
    }
    if (!caption) {
        snprintf(why, cap, "line %llu: no caption column '%s'", (unsigned long long)r->line, rd->col_caption);
        return MANIFEST_BAD_ROW;
    }
    if (rd->col_key && (!key || !*key)) {
        snprintf(why, cap, "line %llu: no value in key column '%s'", (unsigned long long)r->line, rd->col_key);
        return MANIFEST_BAD_ROW;
    }
    if (hash && *hash) {
        if (fetch_sha256_from_hex(hash, r->sha256)) {
            snprintf(why, cap, "line %llu: hash column '%s' holds '%.80s', not 64 hex digits",
                     (unsigned long long)r->line, rd->col_hash, hash);
            return MANIFEST_BAD_ROW;
        }
        r->has_sha256 = 1;
    }
    r->image = rd->o.resolve_relative ? resolve_image(image, rd->base_dir) : strdup(image);
    r->caption = strdup(caption);
    r->key = key ? strdup(key) : derive_key(rd->identity, r->line, image, caption);
    if (!r->image || !r->caption || !r->key)
        return tf_fail(err, "out of memory");
    return MANIFEST_ROW;
}

/* Parses the record [pos, end) into fields (TSV/CSV) and advances pos
 * and line past it. Returns 0, or -1 with err (an unterminated quote at
 * the end of the text). */
static int record_split(ManifestReader *r, size_t end, Fields *out, TfError *err)
{
    const char *p = r->buf + r->pos;
    fields_clear(out);
    if (split_record(&p, r->buf + end, r->csv, out, &r->line, err))
        return tf_fail_context(err, "%s", r->path);
    /* split_record stops at a lone CR; the record ends where record_end said */
    r->pos = end;
    return 0;
}

/* Skips the record [pos, end) without parsing it: lines counted as
 * split_record counts them. */
static void record_skip(ManifestReader *r, size_t end)
{
    uint64_t nl = 0;
    for (size_t i = r->pos; i < end; i++)
        nl += r->buf[i] == '\n';
    r->line += nl + (end > r->pos && r->buf[end - 1] != '\n');
    r->pos = end;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

void manifest_reader_free(ManifestReader *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    if (r->comp == COMP_GZIP)
        inflateEnd(&r->zs);
    ZSTD_freeDStream(r->zd);
    ingest_row_deinit(&r->cur);
    fields_clear(&r->header);
    fields_clear(&r->values);
    free(r->header.v);
    free(r->values.v);
    free(r->in);
    free(r->buf);
    free(r->path);
    free(r->identity);
    free(r->col_image);
    free(r->col_caption);
    free(r->col_key);
    free(r->col_hash);
    free(r);
}

ManifestReader *manifest_reader_open(const ManifestReaderOptions *o, TfError *err)
{
    ManifestReader *r = calloc(1, sizeof *r);
    if (!r) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    r->fd = -1;
    r->o = *o;
    r->path = dup_or_null(o->path);
    r->identity = dup_or_null(o->identity);
    r->col_image = strdup(o->columns.image ? o->columns.image : "url");
    r->col_caption = strdup(o->columns.caption ? o->columns.caption : "caption");
    r->col_key = dup_or_null(o->columns.key);
    r->col_hash = dup_or_null(o->columns.hash);
    r->in = malloc(MANIFEST_IN_CHUNK);
    r->line = 1;
    if (!r->path || !r->col_image || !r->col_caption || (o->identity && !r->identity) ||
        (o->columns.key && !r->col_key) || (o->columns.hash && !r->col_hash) || !r->in) {
        tf_fail(err, "out of memory");
        goto fail;
    }
    const char *slash = strrchr(r->path, '/');
    if (slash)
        snprintf(r->base_dir, sizeof r->base_dir, "%.*s", (int)(slash - r->path), r->path);
    if ((r->fd = open(r->path, O_RDONLY | O_CLOEXEC)) < 0) {
        tf_fail(err, "%s: %s", r->path, strerror(errno));
        goto fail;
    }
    /* compression by magic bytes */
    unsigned char magic[4] = {0};
    ssize_t got = pread(r->fd, magic, 4, 0);
    if (got >= 2 && magic[0] == 0x1f && magic[1] == 0x8b)
        r->comp = COMP_GZIP;
    else if (got == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd)
        r->comp = COMP_ZSTD;
    if (r->comp == COMP_GZIP && inflateInit2(&r->zs, 16 + MAX_WBITS) != Z_OK) {
        tf_fail(err, "out of memory");
        r->comp = COMP_NONE;
        goto fail;
    }
    r->zs_live = r->comp == COMP_GZIP;
    if (r->comp == COMP_ZSTD && (!(r->zd = ZSTD_createDStream()) || ZSTD_isError(ZSTD_initDStream(r->zd)))) {
        tf_fail(err, "out of memory");
        goto fail;
    }
    /* the format: named, or from the name without .gz/.zst/.zstd */
    ManifestFormat fmt = o->format;
    if (fmt == MANIFEST_AUTO) {
        char name[4096];
        snprintf(name, sizeof name, "%s", r->path);
        size_t n = strlen(name);
        if (ends_with(name, ".gz"))
            name[n - 3] = 0;
        else if (ends_with(name, ".zst"))
            name[n - 4] = 0;
        else if (ends_with(name, ".zstd"))
            name[n - 5] = 0;
        if (ends_with(name, ".jsonl") || ends_with(name, ".json"))
            fmt = MANIFEST_JSONL;
        else if (ends_with(name, ".csv"))
            fmt = MANIFEST_CSV;
        else if (ends_with(name, ".tsv") || ends_with(name, ".txt"))
            fmt = MANIFEST_TSV;
        else {
            tf_fail(err, "%s: unknown manifest format (use .tsv, .csv or .jsonl, optionally .gz or .zst)",
                    r->path);
            goto fail;
        }
    }
    r->jsonl = fmt == MANIFEST_JSONL;
    r->csv = fmt == MANIFEST_CSV;
    if (!r->jsonl) { /* the header, always from the top */
        size_t end;
        int rc = record_end(r, &end, err);
        if (rc < 0 || (rc == 1 && record_split(r, end, &r->header, err)))
            goto fail;
        int has_image = 0, has_caption = 0;
        for (size_t i = 0; i < r->header.n; i++) {
            has_image |= !strcmp(r->header.v[i], r->col_image);
            has_caption |= !strcmp(r->header.v[i], r->col_caption);
        }
        if (!has_image || !has_caption) {
            tf_fail(err, "%s: the header has no %s column '%s'", r->path, has_image ? "caption" : "image",
                    has_image ? r->col_caption : r->col_image);
            goto fail;
        }
    }
    uint64_t here = r->buf_off + r->pos;
    if (o->start > here) {
        if (r->comp == COMP_NONE && o->first_line) { /* seek straight to the slice */
            if (lseek(r->fd, (off_t)o->start, SEEK_SET) < 0) {
                tf_fail(err, "%s: seek: %s", r->path, strerror(errno));
                goto fail;
            }
            r->in_len = r->in_pos = r->len = r->pos = 0;
            r->buf_off = o->start;
            r->line = o->first_line;
        } else { /* read through the rows before it */
            while (r->buf_off + r->pos < o->start) {
                size_t end;
                int rc = record_end(r, &end, err);
                if (rc < 0)
                    goto fail;
                if (rc == 0)
                    break;
                record_skip(r, end);
            }
            if (r->buf_off + r->pos != o->start && !(r->eof && r->pos >= r->len)) {
                tf_fail(err, "%s: slice start %llu is not the start of a row", r->path, (unsigned long long)o->start);
                goto fail;
            }
        }
    }
    return r;
fail:
    manifest_reader_free(r);
    return NULL;
}

uint64_t manifest_reader_offset(const ManifestReader *r)
{
    return r->buf_off + r->pos;
}

uint64_t manifest_reader_line(const ManifestReader *r)
{
    return r->line;
}

uint64_t manifest_reader_file_bytes(const ManifestReader *r)
{
    return r->file_bytes;
}

int manifest_reader_next(ManifestReader *r, IngestRow *row, char *why, size_t cap, TfError *err)
{
    ingest_row_deinit(&r->cur);
    memset(row, 0, sizeof *row);
    if (why && cap)
        why[0] = 0;
    char dummy[8];
    if (!why || !cap) {
        why = dummy;
        cap = sizeof dummy;
    }
    for (;;) {
        uint64_t off = r->buf_off + r->pos;
        if (r->o.end && off >= r->o.end)
            return MANIFEST_END;
        size_t end;
        int rc = record_end(r, &end, err);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return MANIFEST_END;
        off = r->buf_off + r->pos;
        uint64_t line = r->line;
        r->cur.line = line;
        r->cur.offset = off;
        int out;
        if (r->jsonl) {
            const char *q = r->buf + r->pos, *e = r->buf + end;
            record_skip(r, end);
            while (q < e && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n'))
                q++;
            while (e > q && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
                e--;
            if (q == e)
                continue; /* blank line */
            json_error_t je;
            json_t *obj = json_loadb(q, (size_t)(e - q), 0, &je);
            if (!json_is_object(obj)) {
                snprintf(why, cap, "line %llu: not a JSON object (%s)", (unsigned long long)line,
                         obj ? "other value" : je.text);
                json_decref(obj);
                out = MANIFEST_BAD_ROW;
            } else {
                fields_clear(&r->header);
                fields_clear(&r->values);
                const char *k;
                json_t *v;
                int bad = 0;
                json_object_foreach(obj, k, v)
                {
                    char *s = json_is_string(v) ? strdup(json_string_value(v))
                                                : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
                    bad |= !s || fields_push(&r->header, k, strlen(k)) || fields_push(&r->values, s, strlen(s));
                    free(s);
                    if (bad)
                        break;
                }
                json_decref(obj);
                if (bad)
                    return tf_fail(err, "out of memory");
                out = row_fill(r, r->header.v, r->values.v, r->header.n, why, cap, err);
            }
        } else {
            if (record_split(r, end, &r->values, err))
                return -1;
            if (r->values.n == 1 && !r->values.v[0][0])
                continue; /* blank line */
            if (r->values.n != r->header.n) {
                snprintf(why, cap, "line %llu: %zu fields, the header has %zu", (unsigned long long)line,
                         r->values.n, r->header.n);
                out = MANIFEST_BAD_ROW;
            } else {
                out = row_fill(r, r->header.v, r->values.v, r->header.n, why, cap, err);
            }
        }
        if (out < 0)
            return -1;
        *row = r->cur;
        return out;
    }
}

/* ---- the whole-file loader of the local pipeline ---- */

void ingest_manifest_free(IngestManifest *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_rows; i++)
        ingest_row_deinit(&m->rows[i]);
    free(m->rows);
    free(m);
}

IngestManifest *ingest_manifest_load(const char *path, const IngestColumns *cols, TfError *err)
{
    ManifestReaderOptions o = {.path = path, .columns = *cols, .resolve_relative = 1};
    ManifestReader *r = manifest_reader_open(&o, err);
    if (!r)
        return NULL;
    IngestManifest *m = calloc(1, sizeof *m);
    size_t cap = 0;
    char why[512];
    if (!m) {
        tf_fail(err, "out of memory");
        goto fail;
    }
    for (;;) {
        IngestRow row;
        int rc = manifest_reader_next(r, &row, why, sizeof why, err);
        if (rc == MANIFEST_END)
            break;
        if (rc < 0)
            goto fail;
        if (rc == MANIFEST_BAD_ROW) {
            tf_fail(err, "%s:%s", path, why + (strncmp(why, "line ", 5) ? 0 : 5));
            goto fail;
        }
        if (m->n_rows == cap) {
            size_t c = cap ? cap * 2 : 256;
            IngestRow *g = realloc(m->rows, c * sizeof *g);
            if (!g) {
                tf_fail(err, "out of memory");
                goto fail;
            }
            m->rows = g;
            cap = c;
        }
        m->rows[m->n_rows++] = r->cur;
        memset(&r->cur, 0, sizeof r->cur); /* taken */
    }
    manifest_reader_free(r);
    return m;
fail:
    manifest_reader_free(r);
    ingest_manifest_free(m);
    return NULL;
}
