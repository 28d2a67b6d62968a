/* image_internal.h: what the image decoders, the resampler and the driver in
 * image.c share. Not part of the public interface (see preprocess.h).
 *
 * A decoder reads the header, asks image_geometry_check whether the source
 * is acceptable (before any pixel buffer is allocated), picks a scale and
 * decodes into the cropper's grow-only raster buffer as 8-bit RGB or RGBA.
 */
#ifndef TRANSFUSE_IMAGE_INTERNAL_H
#define TRANSFUSE_IMAGE_INTERNAL_H

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>

#include <jpeglib.h>

#include "preprocess.h"

/* A grow-only byte buffer: the per-thread scratch. */
typedef struct ImageBuf {
    uint8_t *p;
    size_t cap;
} ImageBuf;

/* Makes buf hold at least n bytes (contents not kept). 0 or -1. */
int image_buf_reserve(ImageBuf *buf, size_t n);

/* libjpeg error state: longjmp target plus what the warnings said. */
typedef struct ImageJpegErr {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    struct jpeg_progress_mgr progress; /* scan counter (libjpeg writes into it) */
    ImageStatus status; /* the class of the failure that jumped */
    int warnings;       /* harmless warnings seen (extraneous bytes, unknown JFIF...) */
    char msg[JMSG_LENGTH_MAX];
} ImageJpegErr;

/* Decoded pixels: 8-bit, 3 (RGB) or 4 (RGBA) channels, rows `stride` apart. */
typedef struct ImageRaster {
    uint8_t *px;
    int w, h, channels;
    size_t stride;
} ImageRaster;

/* libpng read state; lives in the cropper so that it is valid after a
 * longjmp (automatic variables changed after setjmp would not be). */
typedef struct ImagePngIo {
    const uint8_t *data;
    size_t len, pos;
    int ran_out; /* the read callback was asked for bytes past the end */
    char msg[200];
} ImagePngIo;

struct ImageCropper {
    ImageCropOptions opt;
    ImageBuf raster;  /* decoded pixels */
    ImageBuf rotated; /* EXIF-oriented copy */
    ImageBuf rows;    /* per-row scratch (CMYK rows, row pointers) */
    ImageBuf stream;  /* pruned progressive JPEG */
    ImageBuf coef_x, coef_y, bounds; /* filter tables */
    ImageBuf tmp;     /* horizontal pass output (float) */
    struct jpeg_decompress_struct jpeg;
    ImageJpegErr jpeg_err;
    int jpeg_ready;
    ImagePngIo png_io;
};

/* Checks a source size (any orientation) against the options. Returns
 * IMAGE_OK or the failure class with err filled. */
ImageStatus image_geometry_check(const ImageCropper *c, uint64_t w, uint64_t h, TfError *err);

/* The largest JPEG DCT scale denominator (1, 2, 4, 8) whose scaled short
 * side still covers opt.size. */
int image_jpeg_pick_denom(const ImageCropper *c, int w, int h);

/* Decoders. On IMAGE_OK *out points into c->raster. For JPEG, *orientation
 * gets the EXIF tag (1 when absent) and info->scale_denom/scans_pruned/
 * warnings are set; the raster is the stored (unrotated) image. */
ImageStatus image_jpeg_decode(ImageCropper *c, const uint8_t *data, size_t len, ImageRaster *out,
                              int *orientation, ImageCropInfo *info, TfError *err);
ImageStatus image_png_decode(ImageCropper *c, const uint8_t *data, size_t len, ImageRaster *out,
                             TfError *err);
ImageStatus image_webp_decode(ImageCropper *c, const uint8_t *data, size_t len, ImageRaster *out,
                              TfError *err);

/* EXIF orientation (1..8) from a JPEG APP1 payload ("Exif\0\0" + TIFF);
 * 1 when absent or unreadable. Bounded by len; never reads past it. */
int image_exif_orientation(const uint8_t *app1, size_t len);

/* Writes the progressive JPEG `data` without the AC scans (Ss > 0) of the
 * components whose id is flagged in `droppable` into c->stream. Returns the number of scans dropped (>= 0), or -1 when the
 * marker structure is truncated or malformed (the caller then decodes the
 * original so that libjpeg reports the problem). */
int image_jpeg_prune_ac(ImageCropper *c, const uint8_t *data, size_t len, const uint8_t droppable[256],
                        size_t *out_len);

/* Resizes the source (oriented size sw x sh, decoded at 1/denom as a raster
 * of src->w x src->h RGB pixels) so the short side becomes opt.size, and
 * writes the centre square to rgb. Fills the crop box in info. */
ImageStatus image_resize_crop(ImageCropper *c, const ImageRaster *src, int sw, int sh, int denom,
                              uint8_t *rgb, ImageCropInfo *info, TfError *err);

/* `transfuse preprocess crop` and `transfuse preprocess bench` (image_cli.c);
 * argv[0] is the sub-subcommand name. Return the process status. */
int image_crop_main(int argc, char **argv);
int image_bench_main(int argc, char **argv);

#endif
