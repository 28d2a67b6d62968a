/* fuzz_image_common.h: the body shared by the per-decoder image fuzzers.
 * Each target stamps its format's signature over the first bytes so that
 * every input reaches its decoder, then crops at a size picked from the
 * input's last byte (small sizes make JPEGs take the 1/8 DCT scale and the
 * progressive AC-scan pruning path). Limits keep memory within libFuzzer's
 * RSS cap. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "preprocess.h"

static int fuzz_image_run(const uint8_t *data, size_t size, const uint8_t *magic, size_t magic_len)
{
    static const int sizes[4] = {4, 16, 64, 256};
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    memcpy(buf, magic, size < magic_len ? size : magic_len);
    ImageCropOptions opt;
    image_crop_options_init(&opt);
    opt.size = size ? sizes[data[size - 1] & 3] : 16;
    opt.filter = size > 1 ? (ImageFilter)(data[size - 2] & 3) : IMAGE_FILTER_LANCZOS3;
    opt.max_pixels = 4u << 20;
    ImageCropper *c = image_cropper_new(&opt, NULL);
    uint8_t *rgb = malloc((size_t)opt.size * opt.size * 3);
    if (c && rgb) {
        TfError err;
        ImageCropInfo info;
        ImageStatus st = image_cropper_run(c, buf, size, rgb, &info, &err);
        if ((unsigned)st >= IMAGE_STATUS_COUNT)
            abort();
        if (st == IMAGE_OK) { /* the output must be fully written */
            unsigned sum = 0;
            for (size_t i = 0; i < (size_t)opt.size * opt.size * 3; i++)
                sum += rgb[i];
            if (sum == 0xFFFFFFFFu)
                abort();
        }
    }
    free(rgb);
    image_cropper_free(c);
    free(buf);
    return 0;
}
