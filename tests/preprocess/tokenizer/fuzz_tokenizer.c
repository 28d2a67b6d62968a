/* fuzz_tokenizer.c: libFuzzer target for encoding untrusted caption bytes.
 * Every input must encode without error, and decoding the ids must give
 * back the input with invalid UTF-8 replaced by U+FFFD (unless it holds
 * the added token that strips white space around it). */
#include <string.h>
#include <stdio.h>
#include <unistd.h>

#include "tiny_tokenizer.h"
#include "tokenizer_internal.h"

static Tokenizer *tok;
static TokenizerSession *sess;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    TfError err;
    if (!tok) {
        char path[128];
        snprintf(path, sizeof path, "/tmp/tf_fuzz_tokenizer_%d.json", (int)getpid());
        if (tiny_tokenizer_write(path) != 0)
            abort();
        tok = tokenizer_load(path, &err);
        unlink(path);
        if (!tok || !(sess = tokenizer_session_new(tok, &err)))
            abort();
    }
    unsigned flags = size > 0 && (data[0] & 1) ? TOKENIZER_SPECIALS_AS_TEXT : 0;
    TokenIds ids = {0};
    if (tokenizer_encode(sess, (const char *)data, size, flags, &ids, &err))
        abort();
    char *text;
    size_t len;
    if (tokenizer_decode(tok, ids.ids, ids.len, 0, &text, &len, &err))
        abort();
    uint8_t *want = malloc(3 * size + 1);
    size_t want_len = tok_utf8_sanitize(data, size, want);
    /* "<x>" strips the white space around it (lstrip/rstrip), so only
     * inputs without it must come back exactly */
    if (!memmem(data, size, "<x>", 3) && (len != want_len || memcmp(text, want, len)))
        abort();
    free(want);
    free(text);
    token_ids_deinit(&ids);
    return 0;
}
