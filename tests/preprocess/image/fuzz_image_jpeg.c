/* libFuzzer target: the JPEG decoder path (libjpeg, EXIF, scan pruning). */
#include "fuzz_image_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_image_run(data, size, (const uint8_t *)"\xFF\xD8", 2);
}
