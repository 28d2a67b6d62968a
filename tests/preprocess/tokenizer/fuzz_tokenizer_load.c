/* fuzz_tokenizer_load.c: libFuzzer target for the tokenizer loaders
 * (tokenizer.json and tiktoken tokenizer.model): arbitrary file contents
 * must load or fail with a message, never crash or leak. Seeds in
 * fuzz_load_seeds/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "preprocess.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[128];
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/tf_fuzz_tokenizer_load_%d", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);
    TfError err = {{0}};
    Tokenizer *tok = tokenizer_load(path, &err);
    if (!tok && !err.msg[0])
        abort(); /* a failure must say why */
    if (tok) {
        TokenizerSession *s = tokenizer_session_new(tok, &err);
        TokenIds ids = {0};
        if (!s || tokenizer_encode(s, "Hello world <|bos|> 123", 23, TOKENIZER_ADD_BOS, &ids, &err))
            abort();
        token_ids_deinit(&ids);
        tokenizer_session_free(s);
        tokenizer_free(tok);
    }
    unlink(path);
    return 0;
}
