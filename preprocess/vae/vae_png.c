/* vae_png.c: PNG output for `transfuse vae decode`, through libpng's
 * simplified API. (Input goes through the preprocess image API.) */
#include "vae_internal.h"

#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>

int vae_png_write(const char *path, const float *img, int H, int W, TfError *err)
{
    size_t n = (size_t)H * W;
    unsigned char *px = malloc(n * 3);
    if (!px)
        return tf_fail(err, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++) {
            float v = (img[(size_t)c * n + i] + 1.0f) * 127.5f;
            v = v < 0 ? 0 : v > 255 ? 255 : v;
            px[i * 3 + c] = (unsigned char)lrintf(v);
        }
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    pi.width = (png_uint_32)W;
    pi.height = (png_uint_32)H;
    pi.format = PNG_FORMAT_RGB;
    int ok = png_image_write_to_file(&pi, path, 0, px, W * 3, NULL);
    free(px);
    if (!ok)
        return tf_fail(err, "%s: cannot write PNG (%s)", path, pi.message);
    return 0;
}
