/* test_crc32c_threads.c: CRC-32C from many threads at once, starting
 * together on the first call into each path (hardware, portable, combine),
 * so a lazily built table without a once-guard is a data race that
 * ThreadSanitizer reports (this test carries the `tsan` label). The values
 * are checked against the known answer too. */
#include "shards.h"
#include "test.h"

#define THREADS 8

static void *crc_many(void *arg)
{
    int *bad = arg;
    uint8_t buf[3 * 4096 * 2 + 17];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 31 + 7);
    for (int i = 0; i < 50; i++) {
        uint32_t hw = shard_crc32c(0, buf, sizeof buf), sw = shard_crc32c_portable(0, buf, sizeof buf);
        uint32_t a = shard_crc32c(0, buf, 100), b = shard_crc32c(0, buf + 100, sizeof buf - 100);
        if (hw != sw || shard_crc32c_combine(a, b, sizeof buf - 100) != hw ||
            shard_crc32c(0, "123456789", 9) != 0xE3069283u)
            (*bad)++;
    }
    return NULL;
}

int main(void)
{
    int bad[THREADS] = {0};
    test_threads_race(THREADS, crc_many, bad, sizeof bad[0]);
    for (int i = 0; i < THREADS; i++)
        CHECKF(bad[i] == 0, "thread %d: %d wrong checksums", i, bad[i]);
    return test_main_end("test_crc32c_threads");
}
