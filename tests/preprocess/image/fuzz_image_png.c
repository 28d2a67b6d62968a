/* libFuzzer target: the PNG decoder path (libpng, expansions, Adam7). */
#include "fuzz_image_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_image_run(data, size, (const uint8_t *)"\x89PNG\r\n\x1a\n", 8);
}
