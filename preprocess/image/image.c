/* image.c: the image cropper's driver. Sniffs the format, hands the bytes to
 * the matching decoder, then does what is common to all formats: alpha onto
 * white, EXIF orientation, and the resize + centre crop. Holds the per-thread
 * scratch buffers (grow-only) that make steady-state cropping allocation-free
 * on our side.
 */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "image_internal.h"

static const char *const STATUS_NAMES[IMAGE_STATUS_COUNT] = {
    "ok", "truncated", "corrupt", "unsupported", "too_small", "too_large", "bad_aspect", "not_image", "no_memory",
};

const char *image_status_name(ImageStatus status)
{
    if ((unsigned)status >= IMAGE_STATUS_COUNT)
        return "invalid";
    return STATUS_NAMES[status];
}

const char *image_format_name(ImageFormat format)
{
    switch (format) {
    case IMAGE_FORMAT_JPEG: return "jpeg";
    case IMAGE_FORMAT_PNG: return "png";
    case IMAGE_FORMAT_WEBP: return "webp";
    case IMAGE_FORMAT_OTHER: return "other";
    default: return "unknown";
    }
}

static const char *const FILTER_NAMES[] = {"lanczos", "bicubic", "bilinear", "box"};

int image_filter_parse(const char *name, ImageFilter *out)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, FILTER_NAMES[i])) {
            *out = (ImageFilter)i;
            return 0;
        }
    return -1;
}

const char *image_filter_name(ImageFilter filter)
{
    return (unsigned)filter < 4 ? FILTER_NAMES[filter] : "invalid";
}

ImageFormat image_format_sniff(const void *data, size_t len)
{
    const uint8_t *b = data;
    if (len >= 2 && b[0] == 0xFF && b[1] == 0xD8)
        return IMAGE_FORMAT_JPEG;
    if (len >= 4 && !memcmp(b, "\x89PNG", 4))
        return IMAGE_FORMAT_PNG;
    if (len >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4))
        return IMAGE_FORMAT_WEBP;
    if ((len >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6))) ||
        (len >= 4 && (!memcmp(b, "II*\0", 4) || !memcmp(b, "MM\0*", 4))) ||
        (len >= 14 && b[0] == 'B' && b[1] == 'M') ||
        (len >= 12 && !memcmp(b + 4, "ftyp", 4) &&
         (!memcmp(b + 8, "avif", 4) || !memcmp(b + 8, "heic", 4) || !memcmp(b + 8, "heix", 4) ||
          !memcmp(b + 8, "mif1", 4))) ||
        (len >= 4 && !memcmp(b, "\0\0\1\0", 4)) || (len >= 12 && !memcmp(b, "\xFF\x0A", 2)) ||
        (len >= 4 && !memcmp(b, "8BPS", 4)))
        return IMAGE_FORMAT_OTHER;
    return IMAGE_FORMAT_UNKNOWN;
}

void image_crop_options_init(ImageCropOptions *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->size = 256;
    opt->min_side = 0;
    opt->upscale = 1;
    opt->max_aspect = 0;
    opt->max_pixels = 100000000u;
    opt->filter = IMAGE_FILTER_LANCZOS3;
    opt->dct_scaling = 1;
    opt->prune_scans = 1;
}

int image_buf_reserve(ImageBuf *buf, size_t n)
{
    if (n <= buf->cap)
        return 0;
    size_t cap = buf->cap ? buf->cap : 4096;
    while (cap < n)
        cap = cap > SIZE_MAX / 2 ? n : cap * 2;
    /* Contents are scratch: free + malloc avoids realloc's copy. */
    free(buf->p);
    buf->p = malloc(cap);
    if (!buf->p) {
        buf->cap = 0;
        return -1;
    }
    buf->cap = cap;
    return 0;
}

static void buf_free(ImageBuf *buf)
{
    free(buf->p);
    buf->p = NULL;
    buf->cap = 0;
}

ImageCropper *image_cropper_new(const ImageCropOptions *opt, TfError *err)
{
    ImageCropOptions o;
    if (opt)
        o = *opt;
    else
        image_crop_options_init(&o);
    if (o.size < 1 || o.size > 16384) {
        tf_fail(err, "image size %d out of range 1..16384", o.size);
        return NULL;
    }
    if (o.min_side < 0 || o.max_aspect < 0 || (unsigned)o.filter > IMAGE_FILTER_BOX) {
        tf_fail(err, "invalid image crop options");
        return NULL;
    }
    if (o.max_pixels == 0)
        o.max_pixels = UINT64_MAX;
    ImageCropper *c = calloc(1, sizeof *c);
    if (!c) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    c->opt = o;
    return c;
}

void image_cropper_free(ImageCropper *c)
{
    if (!c)
        return;
    if (c->jpeg_ready)
        jpeg_destroy_decompress(&c->jpeg);
    buf_free(&c->raster);
    buf_free(&c->rotated);
    buf_free(&c->rows);
    buf_free(&c->stream);
    buf_free(&c->coef_x);
    buf_free(&c->coef_y);
    buf_free(&c->bounds);
    buf_free(&c->tmp);
    free(c);
}

const ImageCropOptions *image_cropper_options(const ImageCropper *c)
{
    return &c->opt;
}

ImageStatus image_geometry_check(const ImageCropper *c, uint64_t w, uint64_t h, TfError *err)
{
    const ImageCropOptions *o = &c->opt;
    if (w == 0 || h == 0) {
        tf_fail(err, "image has no pixels (%llux%llu)", (unsigned long long)w, (unsigned long long)h);
        return IMAGE_CORRUPT;
    }
    if (w > UINT32_MAX || h > UINT32_MAX || w * h > o->max_pixels) {
        tf_fail(err, "%llux%llu is more than %llu pixels", (unsigned long long)w, (unsigned long long)h,
                (unsigned long long)o->max_pixels);
        return IMAGE_TOO_LARGE;
    }
    /* Beyond int range the resampler's arithmetic is not meant to go. */
    if (w > 1000000 || h > 1000000) {
        tf_fail(err, "%llux%llu has a side above 1000000", (unsigned long long)w, (unsigned long long)h);
        return IMAGE_TOO_LARGE;
    }
    uint64_t s = w < h ? w : h, l = w < h ? h : w;
    if (s < (uint64_t)o->min_side || (!o->upscale && s < (uint64_t)o->size)) {
        tf_fail(err, "short side %llu below %d", (unsigned long long)s,
                o->upscale ? o->min_side : (o->min_side > o->size ? o->min_side : o->size));
        return IMAGE_TOO_SMALL;
    }
    if (o->max_aspect > 0 && (double)l > o->max_aspect * (double)s) {
        tf_fail(err, "aspect ratio %.2f above %.2f", (double)l / (double)s, o->max_aspect);
        return IMAGE_BAD_ASPECT;
    }
    return IMAGE_OK;
}

int image_jpeg_pick_denom(const ImageCropper *c, int w, int h)
{
    if (!c->opt.dct_scaling)
        return 1;
    int s = w < h ? w : h;
    /* As Pillow's draft mode: the scaled short side (floor) must still
     * cover the target, so the final filter only ever shrinks. */
    for (int d = 8; d > 1; d /= 2)
        if (s / d >= c->opt.size)
            return d;
    return 1;
}

/* Alpha onto white, RGBA -> RGB in place (the write index never passes the
 * read index). */
static void raster_flatten(ImageRaster *r)
{
    for (int y = 0; y < r->h; y++) {
        uint8_t *row = r->px + (size_t)y * r->stride;
        const uint8_t *s = row;
        uint8_t *d = row;
        for (int x = 0; x < r->w; x++, s += 4, d += 3) {
            unsigned a = s[3], na = 255 - a;
            d[0] = (uint8_t)((s[0] * a + 255 * na + 127) / 255);
            d[1] = (uint8_t)((s[1] * a + 255 * na + 127) / 255);
            d[2] = (uint8_t)((s[2] * a + 255 * na + 127) / 255);
        }
    }
    r->channels = 3;
}

/* Applies EXIF orientation o (2..8) to an RGB raster, into c->rotated. */
static ImageStatus raster_orient(ImageCropper *c, ImageRaster *r, int o, TfError *err)
{
    int swap = o >= 5;
    int nw = swap ? r->h : r->w, nh = swap ? r->w : r->h;
    size_t stride = (size_t)nw * 3;
    if (image_buf_reserve(&c->rotated, stride * (size_t)nh)) {
        tf_fail(err, "out of memory orienting %dx%d", nw, nh);
        return IMAGE_NO_MEMORY;
    }
    uint8_t *dst = c->rotated.p;
    for (int y = 0; y < nh; y++) {
        uint8_t *d = dst + (size_t)y * stride;
        for (int x = 0; x < nw; x++, d += 3) {
            int sx, sy; /* source pixel of destination (x, y) */
            switch (o) {
            case 2: sx = r->w - 1 - x; sy = y; break;
            case 3: sx = r->w - 1 - x; sy = r->h - 1 - y; break;
            case 4: sx = x; sy = r->h - 1 - y; break;
            case 5: sx = y; sy = x; break;
            case 6: sx = y; sy = r->h - 1 - x; break;
            case 7: sx = r->w - 1 - y; sy = r->h - 1 - x; break;
            default: sx = r->w - 1 - y; sy = x; break; /* 8 */
            }
            const uint8_t *s = r->px + (size_t)sy * r->stride + (size_t)sx * 3;
            d[0] = s[0];
            d[1] = s[1];
            d[2] = s[2];
        }
    }
    r->px = dst;
    r->w = nw;
    r->h = nh;
    r->stride = stride;
    return IMAGE_OK;
}

ImageStatus image_cropper_run(ImageCropper *c, const void *data, size_t len, uint8_t *rgb,
                              ImageCropInfo *info, TfError *err)
{
    ImageCropInfo local;
    if (!info)
        info = &local;
    memset(info, 0, sizeof *info);
    info->scale_denom = 1;
    info->orientation = 1;
    if (!data || len == 0) {
        tf_fail(err, "empty input");
        return IMAGE_NOT_IMAGE;
    }
    ImageFormat fmt = image_format_sniff(data, len);
    info->format = fmt;
    ImageRaster r;
    int orientation = 1;
    ImageStatus st;
    switch (fmt) {
    case IMAGE_FORMAT_JPEG: st = image_jpeg_decode(c, data, len, &r, &orientation, info, err); break;
    case IMAGE_FORMAT_PNG: st = image_png_decode(c, data, len, &r, err); break;
    case IMAGE_FORMAT_WEBP: st = image_webp_decode(c, data, len, &r, err); break;
    case IMAGE_FORMAT_OTHER:
        tf_fail(err, "image format not supported (only JPEG, PNG, WebP)");
        return IMAGE_UNSUPPORTED;
    default: {
        const uint8_t *b = data;
        size_t i = 0;
        while (i < len && i < 64 && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n'))
            i++;
        if (len - i >= 5 && (!strncasecmp((const char *)b + i, "<!doc", 5) ||
                             !strncasecmp((const char *)b + i, "<html", 5)))
            tf_fail(err, "HTML, not an image");
        else
            tf_fail(err, "no image signature");
        return IMAGE_NOT_IMAGE;
    }
    }
    if (st != IMAGE_OK)
        return st;
    if (fmt != IMAGE_FORMAT_JPEG) {
        info->width = r.w;
        info->height = r.h;
    }
    if (r.channels == 4) {
        raster_flatten(&r);
        info->had_alpha = 1;
    }
    /* Source size after orientation, in full-resolution pixels. */
    int sw = info->width, sh = info->height;
    info->orientation = orientation;
    if (orientation >= 2 && orientation <= 8) {
        st = raster_orient(c, &r, orientation, err);
        if (st != IMAGE_OK)
            return st;
        info->orientation_applied = 1;
        if (orientation >= 5) {
            int t = sw;
            sw = sh;
            sh = t;
        }
    }
    info->width = sw;
    info->height = sh;
    return image_resize_crop(c, &r, sw, sh, info->scale_denom, rgb, info, err);
}

void image_tune_process_malloc(void)
{
    mallopt(M_MMAP_THRESHOLD, 512 << 20);
    mallopt(M_TRIM_THRESHOLD, 1024 << 20);
}
