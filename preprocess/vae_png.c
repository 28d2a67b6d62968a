/* vae_png.c: PNG in and out for `transfuse vae` through libpng's simplified
 * API, with a plain center crop and an antialiased resize. This is a
 * stopgap so `vae encode` works on its own; once the preprocess image API
 * (JPEG/WebP/PNG, EXIF orientation, the pipeline's crop) is on main,
 * `vae encode` should take its pixels from there instead. */
#include "vae_internal.h"

#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>

/* Weights of a triangle filter resampling n_in samples to n_out (PIL's
 * antialiased bilinear): for output i, taps [first[i], first[i]+count[i]). */
typedef struct Taps {
    int *first, *count;
    float *w; /* (n_out, maxw) */
    int maxw;
} Taps;

static void taps_free(Taps *t)
{
    free(t->first);
    free(t->count);
    free(t->w);
}

static int taps_make(Taps *t, int n_in, int n_out)
{
    double scale = (double)n_in / n_out, support = scale > 1.0 ? scale : 1.0;
    t->maxw = (int)ceil(support) * 2 + 1;
    t->first = malloc((size_t)n_out * sizeof *t->first);
    t->count = malloc((size_t)n_out * sizeof *t->count);
    t->w = calloc((size_t)n_out * (size_t)t->maxw, sizeof *t->w);
    if (!t->first || !t->count || !t->w)
        return -1;
    for (int i = 0; i < n_out; i++) {
        double center = (i + 0.5) * scale;
        int lo = (int)floor(center - support), hi = (int)ceil(center + support);
        lo = lo < 0 ? 0 : lo;
        hi = hi > n_in ? n_in : hi;
        if (hi - lo > t->maxw)
            hi = lo + t->maxw;
        double sum = 0.0;
        float *w = t->w + (size_t)i * t->maxw;
        for (int x = lo; x < hi; x++) {
            double d = fabs((x + 0.5 - center) / support);
            w[x - lo] = (float)(d < 1.0 ? 1.0 - d : 0.0);
            sum += w[x - lo];
        }
        for (int x = lo; x < hi && sum > 0; x++)
            w[x - lo] = (float)(w[x - lo] / sum);
        t->first[i] = lo;
        t->count[i] = hi - lo;
    }
    return 0;
}

int vae_png_load_crop(const char *path, int size, float *out, TfError *err)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    unsigned char *px = NULL;
    float *rows = NULL;
    Taps th = {0}, tv = {0};
    int rc = -1;
    if (!png_image_begin_read_from_file(&img, path))
        return tf_fail(err, "%s: not a readable PNG (%s)", path, img.message);
    if ((uint64_t)img.width * img.height > VAE_PNG_MAX_PIXELS || img.width == 0 || img.height == 0) {
        tf_fail(err, "%s: %ux%u pixels is outside the limit of %u", path, img.width, img.height, VAE_PNG_MAX_PIXELS);
        png_image_free(&img);
        return -1;
    }
    img.format = PNG_FORMAT_RGB;
    size_t stride = (size_t)img.width * 3;
    px = malloc(stride * img.height);
    if (!px) {
        tf_fail(err, "%s: out of memory", path);
        png_image_free(&img);
        return -1;
    }
    png_color white = {255, 255, 255}; /* transparency over white, as most viewers show it */
    if (!png_image_finish_read(&img, &white, px, (png_int_32)stride, NULL)) {
        tf_fail(err, "%s: corrupt PNG (%s)", path, img.message);
        goto done;
    }
    int w = (int)img.width, h = (int)img.height, side = w < h ? w : h;
    int x0 = (w - side) / 2, y0 = (h - side) / 2;
    if (taps_make(&th, side, size) || taps_make(&tv, side, size)) {
        tf_fail(err, "out of memory");
        goto done;
    }
    rows = malloc((size_t)side * size * 3 * sizeof *rows); /* (side rows, size cols, 3) */
    if (!rows) {
        tf_fail(err, "out of memory");
        goto done;
    }
    for (int y = 0; y < side; y++) {
        const unsigned char *src = px + (size_t)(y0 + y) * stride + (size_t)x0 * 3;
        for (int i = 0; i < size; i++) {
            float acc[3] = {0, 0, 0};
            const float *wt = th.w + (size_t)i * th.maxw;
            for (int t = 0; t < th.count[i]; t++) {
                const unsigned char *p = src + (size_t)(th.first[i] + t) * 3;
                for (int c = 0; c < 3; c++)
                    acc[c] += wt[t] * p[c];
            }
            for (int c = 0; c < 3; c++)
                rows[((size_t)y * size + i) * 3 + c] = acc[c];
        }
    }
    for (int j = 0; j < size; j++) {
        const float *wt = tv.w + (size_t)j * tv.maxw;
        for (int i = 0; i < size; i++) {
            float acc[3] = {0, 0, 0};
            for (int t = 0; t < tv.count[j]; t++) {
                const float *p = rows + ((size_t)(tv.first[j] + t) * size + i) * 3;
                for (int c = 0; c < 3; c++)
                    acc[c] += wt[t] * p[c];
            }
            for (int c = 0; c < 3; c++) {
                /* Round to 8 bits as a decoded-and-resized image would be. */
                float v = roundf(acc[c]);
                v = v < 0 ? 0 : v > 255 ? 255 : v;
                out[((size_t)c * size + j) * size + i] = v / 127.5f - 1.0f;
            }
        }
    }
    rc = 0;
done:
    png_image_free(&img);
    free(px);
    free(rows);
    taps_free(&th);
    taps_free(&tv);
    return rc;
}

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
