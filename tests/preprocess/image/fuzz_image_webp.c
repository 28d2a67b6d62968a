/* libFuzzer target: the WebP decoder path (still, alpha, animation). The
 * RIFF size field (bytes 4-7) is left to the fuzzer. */
#include "fuzz_image_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= 12) {
        uint8_t *b = malloc(size);
        if (!b)
            return 0;
        memcpy(b, data, size);
        memcpy(b, "RIFF", 4);
        memcpy(b + 8, "WEBP", 4);
        int rc = fuzz_image_run(b, size, (const uint8_t *)"RIFF", 4);
        free(b);
        return rc;
    }
    return fuzz_image_run(data, size, (const uint8_t *)"RIFF", 4);
}
