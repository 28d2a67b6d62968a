/* image_png.c: PNG decoding through libpng, normalised to 8-bit RGB or
 * RGBA: palette (with tRNS), gray, 16-bit and Adam7-interlaced images all
 * come out the same way. The size limit is applied from IHDR before the
 * pixel buffer exists; libpng's own user limits back it up. Errors arrive
 * by longjmp; everything read after the jump lives in the cropper or in a
 * the cropper.
 */
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
