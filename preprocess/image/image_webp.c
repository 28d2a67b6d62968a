/* image_webp.c: WebP decoding through libwebp: lossy, lossless and alpha
 * through the advanced decoding API straight into the cropper's raster;
 * animations through libwebpdemux's animation decoder, which renders the
 * first frame onto the canvas (its own buffers: animations are rare). The
 * size limit is applied from the headers (WebPGetFeatures) before any
 * pixel is decoded.
 */
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>

#include "image_internal.h"

static ImageStatus webp_status(VP8StatusCode code)
{
    switch (code) {
    case VP8_STATUS_OK: return IMAGE_OK;
    case VP8_STATUS_NOT_ENOUGH_DATA: return IMAGE_TRUNCATED;
    case VP8_STATUS_UNSUPPORTED_FEATURE: return IMAGE_UNSUPPORTED;
    case VP8_STATUS_OUT_OF_MEMORY: return IMAGE_NO_MEMORY;
    default: return IMAGE_CORRUPT;
    }
}

static const char *webp_status_text(VP8StatusCode code)
{
    switch (code) {
    case VP8_STATUS_NOT_ENOUGH_DATA: return "data ends early";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    default: return "unknown error";
    }
}

/* The RIFF header names the size of what follows; fewer bytes present than
 * that means the download or file was cut. libwebp may still decode a
 * still image from a cut file without complaint when the cut falls in
 * trailing chunks, so check it here. */
static int riff_truncated(const uint8_t *data, size_t len)
{
    if (len < 12)
        return 1;
    uint32_t riff = (uint32_t)data[4] | (uint32_t)data[5] << 8 | (uint32_t)data[6] << 16 | (uint32_t)data[7] << 24;
    return (uint64_t)riff + 8 > len;
}

static ImageStatus webp_decode_animation(ImageCropper *c, const uint8_t *data, size_t len, ImageRaster *out,
                                         TfError *err)
{
    WebPAnimDecoderOptions o;
    if (!WebPAnimDecoderOptionsInit(&o)) {
        tf_fail(err, "webp: library version mismatch");
        return IMAGE_UNSUPPORTED;
    }
    o.color_mode = MODE_RGBA;
    o.use_threads = 0;
    WebPData wd = {data, len};
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&wd, &o);
    if (!dec) {
        tf_fail(err, "webp: cannot parse animation");
        return riff_truncated(data, len) ? IMAGE_TRUNCATED : IMAGE_CORRUPT;
    }
    ImageStatus st = IMAGE_OK;
    WebPAnimInfo ai;
    uint8_t *frame = NULL;
    int ts = 0;
    if (!WebPAnimDecoderGetInfo(dec, &ai)) {
        st = IMAGE_CORRUPT;
        tf_fail(err, "webp: cannot read animation info");
        goto done;
    }
    st = image_geometry_check(c, ai.canvas_width, ai.canvas_height, err);
    if (st != IMAGE_OK)
        goto done;
    if (!WebPAnimDecoderGetNext(dec, &frame, &ts)) {
        st = riff_truncated(data, len) ? IMAGE_TRUNCATED : IMAGE_CORRUPT;
        tf_fail(err, "webp: cannot decode the first frame");
        goto done;
    }
    size_t stride = (size_t)ai.canvas_width * 4;
    if (image_buf_reserve(&c->raster, stride * ai.canvas_height)) {
        st = IMAGE_NO_MEMORY;
        tf_fail(err, "webp: out of memory");
        goto done;
    }
    memcpy(c->raster.p, frame, stride * ai.canvas_height);
    out->px = c->raster.p;
    out->w = (int)ai.canvas_width;
    out->h = (int)ai.canvas_height;
    out->channels = 4;
    out->stride = stride;
done:
    WebPAnimDecoderDelete(dec);
    return st;
}

ImageStatus image_webp_decode(ImageCropper *c, const uint8_t *data, size_t len, ImageRaster *out,
                              TfError *err)
{
    WebPDecoderConfig cfg;
    if (!WebPInitDecoderConfig(&cfg)) {
        tf_fail(err, "webp: library version mismatch");
        return IMAGE_UNSUPPORTED;
    }
    /* An extended file names its canvas in VP8X; check it before libwebp
     * parses further (it refuses a canvas that disagrees with the frame
     * as a bitstream error, hiding a claim that is simply too large). */
    if (len >= 30 && !memcmp(data + 12, "VP8X", 4)) {
        uint64_t cw = 1 + ((uint64_t)data[24] | (uint64_t)data[25] << 8 | (uint64_t)data[26] << 16);
        uint64_t ch = 1 + ((uint64_t)data[27] | (uint64_t)data[28] << 8 | (uint64_t)data[29] << 16);
        ImageStatus cst = image_geometry_check(c, cw, ch, err);
        if (cst != IMAGE_OK)
            return cst;
    }
    VP8StatusCode code = WebPGetFeatures(data, len, &cfg.input);
    if (code != VP8_STATUS_OK) {
        tf_fail(err, "webp: %s", webp_status_text(code));
        return webp_status(code);
    }
    ImageStatus st = image_geometry_check(c, (uint64_t)cfg.input.width, (uint64_t)cfg.input.height, err);
    if (st != IMAGE_OK)
        return st;
    if (cfg.input.has_animation)
        return webp_decode_animation(c, data, len, out, err);
    if (riff_truncated(data, len)) {
        tf_fail(err, "webp: RIFF size larger than the data");
        return IMAGE_TRUNCATED;
    }
    int channels = cfg.input.has_alpha ? 4 : 3;
    size_t stride = (size_t)cfg.input.width * channels;
    size_t size = stride * (size_t)cfg.input.height;
    if (image_buf_reserve(&c->raster, size)) {
        tf_fail(err, "webp: out of memory for %dx%d", cfg.input.width, cfg.input.height);
        return IMAGE_NO_MEMORY;
    }
    cfg.output.colorspace = channels == 4 ? MODE_RGBA : MODE_RGB;
    cfg.output.is_external_memory = 1;
    cfg.output.u.RGBA.rgba = c->raster.p;
    cfg.output.u.RGBA.stride = (int)stride;
    cfg.output.u.RGBA.size = size;
    code = WebPDecode(data, len, &cfg);
    WebPFreeDecBuffer(&cfg.output);
    if (code != VP8_STATUS_OK) {
        tf_fail(err, "webp: %s", webp_status_text(code));
        return webp_status(code);
    }
    out->px = c->raster.p;
    out->w = cfg.input.width;
    out->h = cfg.input.height;
    out->channels = channels;
    out->stride = stride;
    return IMAGE_OK;
}
