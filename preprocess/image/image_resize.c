/* image_resize.c: the antialiased resize of the short side plus centre crop,
 * computed only where the crop needs it.
 *
 * The geometry is Pillow's: the whole source would be resized to (nw, nh)
 * with the short side equal to size, then the centre square cut out. We
 * compute just that square: for each output column and row, the filter
 * centre in source pixels, its support widened by the downscale factor,
 * taps clipped at the edges and renormalised (as Pillow's ImagingResample),
 * with the coefficients precomputed into tables once per image. When the
 * decoder already shrank the image (JPEG DCT scaling by 1/denom), centres and
 * supports are expressed in decoded pixels, so the result approximates the
 * full-resolution resize. Two separable float passes: horizontal over only
 * the rows and columns the vertical pass reads, then vertical.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "image_internal.h"

static double sinc(double x)
{
    if (x == 0.0)
        return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

static double filter_eval(ImageFilter f, double x)
{
    switch (f) {
    case IMAGE_FILTER_LANCZOS3:
        if (x > -3.0 && x < 3.0)
            return sinc(x) * sinc(x / 3.0);
        return 0.0;
    case IMAGE_FILTER_BICUBIC: {
        const double a = -0.5;
        if (x < 0)
            x = -x;
        if (x < 1.0)
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        if (x < 2.0)
            return (((x - 5) * x + 8) * x - 4) * a;
        return 0.0;
    }
    case IMAGE_FILTER_BILINEAR:
        if (x < 0)
            x = -x;
        return x < 1.0 ? 1.0 - x : 0.0;
    default: /* box */
        return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
    }
}

static double filter_support(ImageFilter f)
{
    switch (f) {
    case IMAGE_FILTER_LANCZOS3: return 3.0;
    case IMAGE_FILTER_BICUBIC: return 2.0;
    case IMAGE_FILTER_BILINEAR: return 1.0;
    default: return 0.5;
    }
}

/* Coefficients for `n` outputs starting at output index `first` of a resize
 * from `in_size` decoded pixels, where one output pixel spans `scale`
 * decoded pixels. bounds[2*i] = first tap, bounds[2*i+1] = tap count;
 * coef[i*kmax + k] = normalised weights. Returns kmax, or -1 on no memory. */
static int coef_compute(ImageBuf *coefbuf, ImageBuf *boundsbuf, size_t bounds_off, ImageFilter f,
                        int in_size, double scale, int first, int n)
{
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filter_support(f) * filterscale;
    int kmax = (int)ceil(support) * 2 + 1;
    if (image_buf_reserve(coefbuf, (size_t)n * (size_t)kmax * sizeof(float)))
        return -1;
    float *coef = (float *)coefbuf->p;
    int *bounds = (int *)boundsbuf->p + bounds_off;
    double ss = 1.0 / filterscale;
    for (int i = 0; i < n; i++) {
        double center = (first + i + 0.5) * scale;
        double lo = floor(center - support + 0.5), hi = floor(center + support + 0.5);
        int xmin = lo < 0 ? 0 : (int)lo;
        int xmax = hi > in_size ? in_size : (int)hi;
        if (xmax <= xmin) { /* centre outside the decoded area: nearest edge */
            xmin = center < 0 ? 0 : in_size - 1;
            xmax = xmin + 1;
        }
        int cnt = xmax - xmin;
        if (cnt > kmax)
            cnt = kmax;
        float *k = coef + (size_t)i * kmax;
        double sum = 0;
        for (int x = 0; x < cnt; x++) {
            double w = filter_eval(f, (x + xmin - center + 0.5) * ss);
            k[x] = (float)w;
            sum += w;
        }
        if (sum == 0) { /* cannot happen for these filters, but never divide by 0 */
            k[0] = 1;
            sum = 1;
            cnt = 1;
        }
        for (int x = 0; x < kmax; x++)
            k[x] = x < cnt ? (float)(k[x] / sum) : 0.0f;
        bounds[2 * i] = xmin;
        bounds[2 * i + 1] = cnt;
    }
    return kmax;
}

/* Four lanes (GCC/Clang vector extensions; SSE2 on x86-64, NEON on arm64). */
typedef float TfV4 __attribute__((vector_size(16)));
typedef int32_t TfV4i __attribute__((vector_size(16)));
typedef uint8_t TfV4u8 __attribute__((vector_size(4)));

/* Each lane clamped to [lo, hi] (finite inputs). */
static inline TfV4 v4_clamp(TfV4 v, float lo, float hi)
{
    TfV4i below = v < lo, above = v > hi;
    TfV4i bits = ((TfV4i)v & ~(below | above)) | ((TfV4i)(TfV4){lo, lo, lo, lo} & below) |
                 ((TfV4i)(TfV4){hi, hi, hi, hi} & above);
    return (TfV4)bits;
}

/* Each lane rounded to an 8-bit level as float: v <= 0: 0, v >= 255: 255,
 * else (int)(v + 0.5); for finite v, clamping to [0, 255] first and
 * truncating v + 0.5 gives exactly that. */
static inline TfV4 v4_clamp_round(TfV4 v)
{
    return __builtin_convertvector(__builtin_convertvector(v4_clamp(v, 0.0f, 255.0f) + 0.5f, TfV4i), TfV4);
}

/* The final levels of four sums: v = sum + 0.5; v <= 0: 0, v >= 255: 255,
 * else v truncated (the same as truncating the clamped value). */
static inline void v4_store_u8(uint8_t *out, TfV4 sum)
{
    TfV4u8 b = __builtin_convertvector(__builtin_convertvector(v4_clamp(sum + 0.5f, 0.0f, 255.0f), TfV4i), TfV4u8);
    memcpy(out, &b, sizeof b);
}

/* Python's round() (half to even), which Pillow-based references use. */
static long round_half_even(double v)
{
    double r = floor(v);
    double d = v - r;
    if (d > 0.5 || (d == 0.5 && fmod(r, 2.0) != 0.0))
        r += 1.0;
    return (long)r;
}

ImageStatus image_resize_crop(ImageCropper *c, const ImageRaster *src, int sw, int sh, int denom,
                              uint8_t *rgb, ImageCropInfo *info, TfError *err)
{
    const int S = c->opt.size;
    double k = (double)S / (sw < sh ? sw : sh);
    long nw = round_half_even(sw * k), nh = round_half_even(sh * k);
    if (nw < S)
        nw = S;
    if (nh < S)
        nh = S;
    long x0 = (nw - S) / 2, y0 = (nh - S) / 2;
    /* Decoded pixels per output pixel, per axis. */
    double scale_x = (double)sw / (double)nw / denom, scale_y = (double)sh / (double)nh / denom;

    info->crop_x = (int)lround((double)x0 * sw / nw);
    info->crop_y = (int)lround((double)y0 * sh / nh);
    info->crop_w = (int)lround((double)S * sw / nw);
    info->crop_h = (int)lround((double)S * sh / nh);

    if (image_buf_reserve(&c->bounds, (size_t)4 * S * sizeof(int)))
        goto nomem;
    int kx = coef_compute(&c->coef_x, &c->bounds, 0, c->opt.filter, src->w, scale_x, (int)x0, S);
    int ky = coef_compute(&c->coef_y, &c->bounds, (size_t)2 * S, c->opt.filter, src->h, scale_y, (int)y0, S);
    if (kx < 0 || ky < 0)
        goto nomem;
    const int *bx = (const int *)c->bounds.p, *by = bx + 2 * S;
    const float *cx = (const float *)c->coef_x.p, *cy = (const float *)c->coef_y.p;

    /* Rows the vertical pass reads. */
    int ylo = by[0], yhi = by[0] + by[1];
    for (int j = 1; j < S; j++) {
        if (by[2 * j] < ylo)
            ylo = by[2 * j];
        if (by[2 * j] + by[2 * j + 1] > yhi)
            yhi = by[2 * j] + by[2 * j + 1];
    }
    /* Columns the horizontal pass reads. */
    int xlo = bx[0], xhi = bx[0] + bx[1];
    for (int i = 1; i < S; i++) {
        if (bx[2 * i] < xlo)
            xlo = bx[2 * i];
        if (bx[2 * i] + bx[2 * i + 1] > xhi)
            xhi = bx[2 * i] + bx[2 * i + 1];
    }
    size_t nrows = (size_t)(yhi - ylo), rowlen = (size_t)S * 3, ncols = (size_t)(xhi - xlo);
    /* tmp: (nrows, S, 3) horizontal pass output, then one source row as
     * floats (ncols, 3) plus one float of padding for the 4-lane loads. */
    if (image_buf_reserve(&c->tmp, (nrows * rowlen + ncols * 3 + 1) * sizeof(float)))
        goto nomem;
    float *tmp = (float *)c->tmp.p;
    float *frow = tmp + nrows * rowlen;
    frow[ncols * 3] = 0.0f;

    /* Both passes keep the scalar arithmetic exactly (each channel's sum
     * starts at 0 and adds w * x tap by tap, in tap order; no FMA), just
     * four lanes at a time: (R, G, B, next R) per tap horizontally, four
     * neighbouring values vertically. */
    for (size_t r = 0; r < nrows; r++) {
        const uint8_t *in = src->px + (size_t)(ylo + (int)r) * src->stride + (size_t)xlo * 3;
        size_t x = 0;
        for (; x + 4 <= ncols * 3; x += 4) {
            TfV4u8 b;
            memcpy(&b, in + x, sizeof b);
            TfV4 f = __builtin_convertvector(__builtin_convertvector(b, TfV4i), TfV4);
            memcpy(frow + x, &f, sizeof f);
        }
        for (; x < ncols * 3; x++)
            frow[x] = (float)in[x];
        float *o = tmp + r * rowlen;
        /* Four outputs at a time: four independent sums hide the latency
         * of the adds (one output's taps are a chain). */
        for (int i = 0; i < S; i += 4) {
            int n = S - i < 4 ? S - i : 4, common = 0;
            const float *kw = cx + (size_t)i * kx;
            TfV4 a0 = {0, 0, 0, 0}, a1 = a0, a2 = a0, a3 = a0;
            if (n == 4) {
                const float *p0 = frow + (size_t)(bx[2 * i] - xlo) * 3, *p1 = frow + (size_t)(bx[2 * i + 2] - xlo) * 3;
                const float *p2 = frow + (size_t)(bx[2 * i + 4] - xlo) * 3, *p3 = frow + (size_t)(bx[2 * i + 6] - xlo) * 3;
                common = bx[2 * i + 1];
                for (int q = 1; q < 4; q++)
                    if (bx[2 * (i + q) + 1] < common)
                        common = bx[2 * (i + q) + 1];
                for (int t = 0; t < common; t++) {
                    TfV4 v0, v1, v2, v3;
                    memcpy(&v0, p0 + 3 * t, sizeof v0);
                    memcpy(&v1, p1 + 3 * t, sizeof v1);
                    memcpy(&v2, p2 + 3 * t, sizeof v2);
                    memcpy(&v3, p3 + 3 * t, sizeof v3);
                    a0 += v0 * kw[t];
                    a1 += v1 * kw[kx + t];
                    a2 += v2 * kw[2 * kx + t];
                    a3 += v3 * kw[3 * kx + t];
                }
            }
            /* each output's remaining taps (all of them when n < 4), then its levels */
            for (int q = 0; q < n; q++) {
                TfV4 a = q == 0 ? a0 : q == 1 ? a1 : q == 2 ? a2 : a3;
                const float *w = kw + (size_t)q * kx, *p = frow + (size_t)(bx[2 * (i + q)] - xlo) * 3;
                for (int t = common, cnt = bx[2 * (i + q) + 1]; t < cnt; t++) {
                    TfV4 v;
                    memcpy(&v, p + 3 * t, sizeof v);
                    a += v * w[t];
                }
                /* Rounded to 8-bit levels between the passes, as Pillow's
                 * resampler does: it tracks the reference more closely. */
                a = v4_clamp_round(a);
                memcpy(o + 3 * (i + q), &a, 3 * sizeof(float));
            }
        }
    }

    size_t x4 = rowlen & ~(size_t)3;
    for (int j = 0; j < S; j++) {
        const float *kw = cy + (size_t)j * ky;
        int cnt = by[2 * j + 1];
        const float *base = tmp + (size_t)(by[2 * j] - ylo) * rowlen;
        uint8_t *out = rgb + (size_t)j * rowlen;
        size_t x = 0;
        for (; x + 16 <= x4; x += 16) { /* four independent sums, as above */
            TfV4 a0 = {0, 0, 0, 0}, a1 = a0, a2 = a0, a3 = a0;
            for (int t = 0; t < cnt; t++) {
                const float *row = base + (size_t)t * rowlen + x;
                TfV4 v0, v1, v2, v3;
                memcpy(&v0, row, sizeof v0);
                memcpy(&v1, row + 4, sizeof v1);
                memcpy(&v2, row + 8, sizeof v2);
                memcpy(&v3, row + 12, sizeof v3);
                a0 += v0 * kw[t];
                a1 += v1 * kw[t];
                a2 += v2 * kw[t];
                a3 += v3 * kw[t];
            }
            v4_store_u8(out + x, a0);
            v4_store_u8(out + x + 4, a1);
            v4_store_u8(out + x + 8, a2);
            v4_store_u8(out + x + 12, a3);
        }
        for (; x < x4; x += 4) {
            TfV4 a = {0, 0, 0, 0};
            for (int t = 0; t < cnt; t++) {
                TfV4 v;
                memcpy(&v, base + (size_t)t * rowlen + x, sizeof v);
                a += v * kw[t];
            }
            v4_store_u8(out + x, a);
        }
        for (; x < rowlen; x++) {
            float acc = 0.0f;
            for (int t = 0; t < cnt; t++)
                acc += kw[t] * base[(size_t)t * rowlen + x];
            float v = acc + 0.5f;
            out[x] = v <= 0.0f ? 0 : v >= 255.0f ? 255 : (uint8_t)v;
        }
    }
    return IMAGE_OK;
nomem:
    tf_fail(err, "out of memory resizing");
    return IMAGE_NO_MEMORY;
}
