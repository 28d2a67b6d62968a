/* test_encode_threads.c: base64 from many threads at once, starting
 * together on the first call, so a lazily built table without a
 * once-guard is a data race that ThreadSanitizer reports (this test carries
 * the `tsan` label). Also checks the round trip and the decoder's errors. */
#include <stdint.h>

#include "core.h"
#include "test.h"

#define THREADS 8

static const char TEXT[] = "transfuse base64: any bytes \x01\x02\xfe\xff, padded or not";

static void *decode_many(void *arg)
{
    int *bad = arg;
    char *enc = tf_base64_encode(TEXT, sizeof TEXT - 1);
    for (int i = 0; i < 200 && enc; i++) {
        size_t n = 0;
        unsigned char *dec = tf_base64_decode(enc, strlen(enc), &n, NULL);
        if (!dec || n != sizeof TEXT - 1 || memcmp(dec, TEXT, n))
            (*bad)++;
        free(dec);
    }
    if (!enc)
        (*bad)++;
    free(enc);
    return NULL;
}

int main(void)
{
    int bad[THREADS] = {0};
    test_threads_race(THREADS, decode_many, bad, sizeof bad[0]);
    for (int i = 0; i < THREADS; i++)
        CHECKF(bad[i] == 0, "thread %d: %d bad round trips", i, bad[i]);

    TfError err = {{0}};
    size_t n;
    unsigned char *d = tf_base64_decode("Zm9vYg", 6, &n, &err); /* "foob", padding left out */
    CHECK(d && n == 4 && !memcmp(d, "foob", 4));
    free(d);
    CHECK(tf_base64_decode("Zm9v!A", 6, &n, &err) == NULL && strstr(err.msg, "bad character"));
    CHECK(tf_base64_decode("Zm9vY", 5, &n, &err) == NULL && strstr(err.msg, "bad length"));
    return test_main_end("test_encode_threads");
}
