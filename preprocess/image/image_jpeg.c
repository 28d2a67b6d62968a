/* image_jpeg.c: JPEG decoding through libjpeg-turbo's libjpeg API.
 *
 * The libjpeg API rather than TurboJPEG 2.x because it lets us turn block
 * smoothing off, which makes the progressive shortcut exact: at 1/8 scale
 * only each block's DC coefficient reaches the output, so the AC scans of a
 * progressive file are dropped before decoding (image_jpeg_prune_ac) and the
 * pixels come out bit-identical, 2-3x sooner. DCT scaling (1/2, 1/4, 1/8,
 * the SIMD-accelerated ones) shrinks the image as it decodes. Warnings that
 * mean lost pixels (truncation, resync, bad Huffman codes) end the decode
 * with a failure class rather than yielding a half-grey image. One
 * decompressor per cropper, reused across images.
 */
#include <stdlib.h>
#include <string.h>

#include <jerror.h>

#include "image_internal.h"

/* Progressive files may legally carry many scans; hostile ones carry
 * millions to burn CPU. Real encoders write at most a few dozen. */
#define IMAGE_JPEG_MAX_SCANS 1000

static void jpeg_on_error(j_common_ptr cinfo)
{
    ImageJpegErr *e = (ImageJpegErr *)cinfo->err;
    int code = e->pub.msg_code;
    if (code == JERR_INPUT_EMPTY)
        e->status = IMAGE_TRUNCATED;
    else if (code == JERR_BAD_PRECISION || code == JERR_SOF_UNSUPPORTED || code == JERR_ARITH_NOTIMPL ||
             code == JERR_CONVERSION_NOTIMPL || code == JERR_NOT_COMPILED)
        e->status = IMAGE_UNSUPPORTED;
    else if (code == JERR_IMAGE_TOO_BIG || code == JERR_WIDTH_OVERFLOW)
        e->status = IMAGE_TOO_LARGE;
    else if (code == JERR_OUT_OF_MEMORY)
        e->status = IMAGE_NO_MEMORY;
    else
        e->status = IMAGE_CORRUPT;
    e->pub.format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

static void jpeg_on_message(j_common_ptr cinfo, int level)
{
    ImageJpegErr *e = (ImageJpegErr *)cinfo->err;
    if (level >= 0)
        return; /* trace messages */
    int code = e->pub.msg_code;
    if (code == JWRN_JPEG_EOF) {
        e->status = IMAGE_TRUNCATED;
    } else if (code == JWRN_HIT_MARKER || code == JWRN_MUST_RESYNC || code == JWRN_NOT_SEQUENTIAL ||
               code == JWRN_BOGUS_PROGRESSION || code == JWRN_HUFF_BAD_CODE) {
        e->status = IMAGE_CORRUPT;
    } else {
        e->warnings++;
        return;
    }
    e->pub.format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

static void jpeg_on_progress(j_common_ptr cinfo)
{
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > IMAGE_JPEG_MAX_SCANS) {
        ImageJpegErr *e = (ImageJpegErr *)cinfo->err;
        e->status = IMAGE_CORRUPT;
        snprintf(e->msg, sizeof e->msg, "more than %d scans", IMAGE_JPEG_MAX_SCANS);
        longjmp(e->jump, 1);
    }
}

static unsigned rd16(const uint8_t *p, int le)
{
    return le ? (unsigned)p[0] | (unsigned)p[1] << 8 : (unsigned)p[0] << 8 | p[1];
}

static uint32_t rd32(const uint8_t *p, int le)
{
    return le ? (uint32_t)rd16(p, 1) | (uint32_t)rd16(p + 2, 1) << 16
              : (uint32_t)rd16(p, 0) << 16 | (uint32_t)rd16(p + 2, 0);
}

int image_exif_orientation(const uint8_t *app1, size_t len)
{
    if (len < 6 + 8 || memcmp(app1, "Exif\0\0", 6))
        return 1;
    const uint8_t *t = app1 + 6;
    size_t tl = len - 6;
    int le;
    if (t[0] == 'I' && t[1] == 'I')
        le = 1;
    else if (t[0] == 'M' && t[1] == 'M')
        le = 0;
    else
        return 1;
    if (rd16(t + 2, le) != 42)
        return 1;
    uint32_t ifd = rd32(t + 4, le);
    if (ifd > tl || tl - ifd < 2)
        return 1;
    unsigned n = rd16(t + ifd, le);
    for (unsigned k = 0; k < n; k++) {
        size_t off = (size_t)ifd + 2 + (size_t)12 * k;
        if (off > tl || tl - off < 12)
            break;
        if (rd16(t + off, le) != 0x0112)
            continue;
        unsigned type = rd16(t + off + 2, le);
        unsigned v = type == 3 ? rd16(t + off + 8, le) : type == 4 ? rd32(t + off + 8, le) : 1;
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

int image_jpeg_prune_ac(ImageCropper *c, const uint8_t *d, size_t len, const uint8_t droppable[256],
                        size_t *out_len)
{
    if (len < 4 || d[0] != 0xFF || d[1] != 0xD8)
        return -1;
    if (image_buf_reserve(&c->stream, len + 2))
        return -1;
    uint8_t *o = c->stream.p;
    size_t n = 0, i = 2;
    int dropped = 0;
    o[n++] = 0xFF;
    o[n++] = 0xD8;
    for (;;) {
        if (i >= len || d[i] != 0xFF)
            return -1;
        while (i < len && d[i] == 0xFF) /* fill bytes */
            i++;
        if (i >= len)
            return -1;
        uint8_t m = d[i++];
        if (m == 0xD9) {
            o[n++] = 0xFF;
            o[n++] = 0xD9;
            *out_len = n;
            return dropped;
        }
        if ((m >= 0xD0 && m <= 0xD7) || m == 0x01 || m == 0x00) {
            if (m == 0x00)
                return -1;
            o[n++] = 0xFF;
            o[n++] = m;
            continue;
        }
        if (len - i < 2)
            return -1;
        size_t seg = (size_t)d[i] << 8 | d[i + 1];
        if (seg < 2 || seg > len - i)
            return -1;
        size_t end = i + seg; /* end of the marker segment */
        int keep = 1;
        if (m == 0xDA) {
            if (seg < 3)
                return -1;
            size_t ns = d[i + 2];
            if (seg != 6 + 2 * ns)
                return -1;
            /* Ss = 0: a DC scan (first or refinement), always kept. AC
             * scans hold one component each; they go when that component's
             * IDCT is 1x1 (uses DC only). */
            keep = d[i + 3 + 2 * ns] == 0 || ns != 1 || !droppable[d[i + 3]];
            /* The entropy-coded data runs to the next marker that is not a
             * stuffed zero or a restart. */
            for (;;) {
                if (len - end < 2)
                    return -1;
                if (d[end] != 0xFF) {
                    end++;
                    continue;
                }
                uint8_t nx = d[end + 1];
                if (nx == 0x00 || (nx >= 0xD0 && nx <= 0xD7))
                    end += 2;
                else if (nx == 0xFF)
                    end++;
                else
                    break;
            }
            if (!keep)
                dropped++;
        }
        if (keep) {
            o[n++] = 0xFF;
            o[n++] = m;
            memcpy(o + n, d + i, end - i);
            n += end - i;
        }
        i = end;
    }
}

/* CMYK as stored by Adobe (inverted: 255 means no ink) to RGB. Files
 * without the Adobe marker are read the same way, as Pillow and browsers
 * do: nearly every CMYK JPEG in the wild comes from Adobe software, and a
 * missing marker far more often means a stripped one than plain CMYK. */
static void cmyk_row_to_rgb(const uint8_t *s, uint8_t *d, int w)
{
    for (int x = 0; x < w; x++, s += 4, d += 3) {
        unsigned k = s[3];
        d[0] = (uint8_t)((s[0] * k + 127) / 255);
        d[1] = (uint8_t)((s[1] * k + 127) / 255);
        d[2] = (uint8_t)((s[2] * k + 127) / 255);
    }
}

ImageStatus image_jpeg_decode(ImageCropper *c, const uint8_t *data, size_t len, ImageRaster *out,
                              int *orientation, ImageCropInfo *info, TfError *err)
{
    ImageJpegErr *e = &c->jpeg_err;
    j_decompress_ptr j = &c->jpeg;
    if (!c->jpeg_ready) {
        memset(j, 0, sizeof *j);
        j->err = jpeg_std_error(&e->pub);
        e->pub.error_exit = jpeg_on_error;
        e->pub.emit_message = jpeg_on_message;
    }
    e->status = IMAGE_CORRUPT;
    e->warnings = 0;
    e->msg[0] = 0;
    if (setjmp(e->jump)) {
        if (c->jpeg_ready)
            jpeg_abort_decompress(j);
        tf_fail(err, "jpeg: %s", e->msg);
        return e->status;
    }
    if (!c->jpeg_ready) {
        jpeg_create_decompress(j);
        c->jpeg_ready = 1;
    }
    jpeg_mem_src(j, data, (unsigned long)len);
    jpeg_save_markers(j, JPEG_APP0 + 1, 0xFFFF);
    if (jpeg_read_header(j, TRUE) != JPEG_HEADER_OK) {
        jpeg_abort_decompress(j);
        tf_fail(err, "jpeg: tables only, no image");
        return IMAGE_CORRUPT;
    }
    ImageStatus st = image_geometry_check(c, j->image_width, j->image_height, err);
    if (st != IMAGE_OK) {
        jpeg_abort_decompress(j);
        return st;
    }
    info->width = (int)j->image_width;
    info->height = (int)j->image_height;
    *orientation = 1;
    for (jpeg_saved_marker_ptr m = j->marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && !memcmp(m->data, "Exif\0\0", 6)) {
            *orientation = image_exif_orientation(m->data, m->data_length);
            break;
        }
    int denom = image_jpeg_pick_denom(c, info->width, info->height);
    info->scale_denom = denom;
    if (denom == 8 && j->progressive_mode && !j->arith_code && c->opt.prune_scans) {
        /* Which components end up with a 1x1 IDCT: with chroma
         * subsampling libjpeg scales chroma by a larger IDCT instead of
         * upsampling, and that IDCT reads AC coefficients. */
        uint8_t droppable[256] = {0};
        j->scale_num = 1;
        j->scale_denom = 8;
        jpeg_calc_output_dimensions(j);
        for (int ci = 0; ci < j->num_components; ci++)
            if (j->comp_info[ci].DCT_scaled_size == 1)
                droppable[j->comp_info[ci].component_id & 0xFF] = 1;
        size_t plen = 0;
        int dropped = image_jpeg_prune_ac(c, data, len, droppable, &plen);
        if (dropped > 0) {
            jpeg_abort_decompress(j);
            jpeg_mem_src(j, c->stream.p, (unsigned long)plen);
            jpeg_save_markers(j, JPEG_APP0 + 1, 0);
            if (jpeg_read_header(j, TRUE) != JPEG_HEADER_OK) {
                jpeg_abort_decompress(j);
                tf_fail(err, "jpeg: tables only, no image");
                return IMAGE_CORRUPT;
            }
            info->scans_pruned = dropped;
        }
    }
    int cmyk = j->jpeg_color_space == JCS_CMYK || j->jpeg_color_space == JCS_YCCK;
    j->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    j->scale_num = 1;
    j->scale_denom = (unsigned)denom;
    j->do_block_smoothing = FALSE;
    j->dct_method = JDCT_ISLOW;
    memset(&e->progress, 0, sizeof e->progress);
    e->progress.progress_monitor = jpeg_on_progress;
    j->progress = &e->progress;
    jpeg_start_decompress(j);
    int w = (int)j->output_width, h = (int)j->output_height;
    size_t stride = (size_t)w * 3;
    size_t rowbytes = (size_t)h * sizeof(JSAMPROW) + (cmyk ? (size_t)w * 4 : 0);
    if (image_buf_reserve(&c->raster, stride * (size_t)h) || image_buf_reserve(&c->rows, rowbytes)) {
        jpeg_abort_decompress(j);
        tf_fail(err, "jpeg: out of memory for %dx%d", w, h);
        return IMAGE_NO_MEMORY;
    }
    JSAMPROW *rows = (JSAMPROW *)c->rows.p;
    if (cmyk) {
        uint8_t *tmp = c->rows.p + (size_t)h * sizeof(JSAMPROW);
        while (j->output_scanline < j->output_height) {
            unsigned y = j->output_scanline;
            JSAMPROW r = tmp;
            jpeg_read_scanlines(j, &r, 1);
            cmyk_row_to_rgb(tmp, c->raster.p + (size_t)y * stride, w);
        }
    } else {
        for (int y = 0; y < h; y++)
            rows[y] = c->raster.p + (size_t)y * stride;
        while (j->output_scanline < j->output_height)
            jpeg_read_scanlines(j, rows + j->output_scanline, j->output_height - j->output_scanline);
    }
    info->warnings = e->warnings;
    /* Not jpeg_finish_decompress: whatever follows the last scanline
     * (trailing markers, EOI) cannot change the pixels. */
    jpeg_abort_decompress(j);
    out->px = c->raster.p;
    out->w = w;
    out->h = h;
    out->channels = 3;
    out->stride = stride;
    return IMAGE_OK;
}
