/* image_png.c: PNG through libpng, both ways.
 *
 * Decoding is normalised to 8-bit RGB or RGBA: palette (with tRNS), gray,
 * 16-bit and Adam7-interlaced images all come out the same way. The size
 * limit is applied from IHDR before the pixel buffer exists; libpng's own
 * user limits back it up. Errors arrive by longjmp; everything read after
 * the jump lives in the cropper.
 *
 * Encoding (the one PNG writer of the code base: crops, decoded VAE
 * images, crops inside records) goes to a growing memory buffer, with the
 * compression level chosen by the caller; files are written from it
 * atomically.
 */
#include <stdlib.h>
#include <string.h>

#include <png.h>

#include "image_internal.h"

static void png_on_read(png_structp png, png_bytep out, size_t n)
{
    ImagePngIo *x = png_get_io_ptr(png);
    if (n > x->len - x->pos) {
        x->ran_out = 1;
        png_error(png, "unexpected end of data");
    }
    memcpy(out, x->data + x->pos, n);
    x->pos += n;
}

static void png_on_error(png_structp png, png_const_charp msg)
{
    ImagePngIo *x = png_get_error_ptr(png);
    snprintf(x->msg, sizeof x->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

ImageStatus image_png_decode(ImageCropper *c, const uint8_t *data, size_t len, ImageRaster *out,
                             TfError *err)
{
    ImagePngIo *io = &c->png_io;
    png_structp png = NULL;
    png_infop pinfo = NULL;
    /* Written after setjmp and read after a longjmp: volatile. */
    volatile ImageStatus st = IMAGE_CORRUPT;

    if (len < 8 || png_sig_cmp(data, 0, 8)) {
        tf_fail(err, "png: %s", len < 8 ? "shorter than its signature" : "bad signature");
        return len < 8 ? IMAGE_TRUNCATED : IMAGE_CORRUPT;
    }
    io->data = data;
    io->len = len;
    io->pos = 0;
    io->ran_out = 0;
    io->msg[0] = 0;
    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, io, png_on_error, png_on_warning);
    if (png)
        pinfo = png_create_info_struct(png);
    if (!png || !pinfo) {
        png_destroy_read_struct(&png, &pinfo, NULL);
        tf_fail(err, "png: out of memory");
        return IMAGE_NO_MEMORY;
    }
    if (setjmp(png_jmpbuf(png))) {
        if (io->ran_out)
            st = IMAGE_TRUNCATED;
        else if (st == IMAGE_OK)
            st = IMAGE_CORRUPT;
        tf_fail(err, "png: %s", io->msg);
        goto done;
    }
    png_set_read_fn(png, io, png_on_read);
    /* libpng refuses larger sides itself, before allocating; the product
     * is checked below against max_pixels. */
    png_set_user_limits(png, 1000000, 1000000);
    png_set_chunk_malloc_max(png, 8u << 20);
    png_read_info(png, pinfo);
    png_uint_32 w = png_get_image_width(png, pinfo), h = png_get_image_height(png, pinfo);
    st = image_geometry_check(c, w, h, err);
    if (st != IMAGE_OK)
        goto done;
    st = IMAGE_CORRUPT;
    int type = png_get_color_type(png, pinfo);
    png_set_expand(png); /* palette -> RGB, gray < 8 bit -> 8, tRNS -> alpha */
    png_set_scale_16(png);
    if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, pinfo);
    int channels = png_get_channels(png, pinfo);
    if (channels != 3 && channels != 4) {
        png_error(png, "unexpected channel count after expansion");
    }
    size_t stride = (size_t)w * (size_t)channels;
    if (image_buf_reserve(&c->raster, stride * h) || image_buf_reserve(&c->rows, (size_t)h * sizeof(png_bytep))) {
        st = IMAGE_NO_MEMORY;
        tf_fail(err, "png: out of memory for %ux%u", (unsigned)w, (unsigned)h);
        goto done;
    }
    png_bytep *rows = (png_bytep *)c->rows.p;
    for (png_uint_32 y = 0; y < h; y++)
        rows[y] = c->raster.p + (size_t)y * stride;
    png_read_image(png, rows);
    /* Not png_read_end: chunks after the image data cannot change it. */
    out->px = c->raster.p;
    out->w = (int)w;
    out->h = (int)h;
    out->channels = channels;
    out->stride = stride;
    st = IMAGE_OK;
done:
    png_destroy_read_struct(&png, &pinfo, NULL);
    return st;
}

/* ---- encoding ---- */

typedef struct PngOut {
    uint8_t *p;
    size_t len, cap;
    int oom;
    char msg[200];
} PngOut;

static void png_on_write(png_structp png, png_bytep data, size_t n)
{
    PngOut *o = png_get_io_ptr(png);
    if (n > o->cap - o->len) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap - o->len < n) {
            if (cap > SIZE_MAX / 2) {
                o->oom = 1;
                png_error(png, "out of memory");
            }
            cap *= 2;
        }
        uint8_t *g = realloc(o->p, cap);
        if (!g) {
            o->oom = 1;
            png_error(png, "out of memory");
        }
        o->p = g;
        o->cap = cap;
    }
    memcpy(o->p + o->len, data, n);
    o->len += n;
}

static void png_on_flush(png_structp png)
{
    (void)png;
}

static void png_on_write_error(png_structp png, png_const_charp msg)
{
    PngOut *o = png_get_error_ptr(png);
    snprintf(o->msg, sizeof o->msg, "%s", msg);
    png_longjmp(png, 1);
}

uint8_t *image_png_encode(const uint8_t *rgb, int width, int height, int level, size_t *len, TfError *err)
{
    if (width <= 0 || height <= 0 || width > (1 << 24) || height > (1 << 24)) {
        tf_fail(err, "png: cannot encode a %dx%d image", width, height);
        return NULL;
    }
    if (level < -1 || level > 9) {
        tf_fail(err, "png: compression level %d is not in 0..9 (or -1)", level);
        return NULL;
    }
    /* Read after a longjmp: kept outside automatic storage of the jump scope. */
    PngOut *out = calloc(1, sizeof *out);
    png_bytep *rows = malloc((size_t)height * sizeof *rows);
    png_structp png = NULL;
    png_infop info = NULL;
    uint8_t *result = NULL;
    if (!out || !rows) {
        tf_fail(err, "png: out of memory");
        goto done;
    }
    for (int y = 0; y < height; y++)
        rows[y] = (png_bytep)(rgb + (size_t)y * (size_t)width * 3);
    png = png_create_write_struct(PNG_LIBPNG_VER_STRING, out, png_on_write_error, png_on_warning);
    if (png)
        info = png_create_info_struct(png);
    if (!png || !info) {
        tf_fail(err, "png: out of memory");
        goto done;
    }
    if (setjmp(png_jmpbuf(png))) {
        tf_fail(err, "png: %s", out->oom ? "out of memory" : out->msg);
        goto done;
    }
    png_set_write_fn(png, out, png_on_write, png_on_flush);
    if (level >= 0)
        png_set_compression_level(png, level);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    result = out->p;
    *len = out->len;
    out->p = NULL;
done:
    png_destroy_write_struct(&png, &info);
    if (out)
        free(out->p);
    free(out);
    free(rows);
    return result;
}

int image_png_write(const char *path, const uint8_t *rgb, int width, int height, TfError *err)
{
    size_t len = 0;
    uint8_t *png = image_png_encode(rgb, width, height, -1, &len, err);
    if (!png)
        return tf_fail_context(err, "%s", path);
    int rc = tf_write_file_atomic(path, png, len, err);
    free(png);
    return rc;
}
