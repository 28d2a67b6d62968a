/* preprocess: from downloaded bytes to model inputs.
 *
 * Three parts, each reentrant so callers can run them on a thread pool:
 *   - image: decode JPEG/WebP/PNG, apply EXIF orientation, resize the short
 *     side with an antialiasing filter and center-crop to a square;
 *   - tokenizer: Llama-3 byte-level BPE from tokenizer.json (or Meta's
 *     tokenizer.model), encode and decode;
 *   - vae: diffusers AutoencoderKL checkpoints, encode images to latents and
 *     decode latents to images, on the shared tensor kernels.
 * Nothing here knows about Kafka or record files.
 */
#ifndef TRANSFUSE_PREPROCESS_H
#define TRANSFUSE_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

/* ==== image ================================================================ */

/* Why an image was refused. Every failure of image_cropper_run is exactly one
 * of these (IMAGE_OK aside), with a short message in the caller's TfError. */
typedef enum ImageStatus {
    IMAGE_OK = 0,
    IMAGE_TRUNCATED,   /* the bytes end before the image does */
    IMAGE_CORRUPT,     /* the bytes contradict the format */
    IMAGE_UNSUPPORTED, /* a valid image in a format or variant we do not decode */
    IMAGE_TOO_SMALL,   /* short side below the minimum (or below size without upscaling) */
    IMAGE_TOO_LARGE,   /* width*height above max_pixels, from the header alone */
    IMAGE_BAD_ASPECT,  /* long side / short side above max_aspect */
    IMAGE_NOT_IMAGE,   /* no image signature: HTML, text, empty */
    IMAGE_NO_MEMORY,
    IMAGE_STATUS_COUNT
} ImageStatus;

/* A stable lower-case name for a status ("ok", "truncated", "corrupt",
 * "unsupported", "too_small", "too_large", "bad_aspect", "not_image",
 * "no_memory"), as printed by the CLI and exported as a metric label. */
const char *image_status_name(ImageStatus status);

typedef enum ImageFormat {
    IMAGE_FORMAT_UNKNOWN = 0,
    IMAGE_FORMAT_JPEG,
    IMAGE_FORMAT_PNG,
    IMAGE_FORMAT_WEBP,
    IMAGE_FORMAT_OTHER, /* a recognised image signature we do not decode (GIF, BMP, TIFF, AVIF...) */
} ImageFormat;

/* "unknown", "jpeg", "png", "webp", "other". */
const char *image_format_name(ImageFormat format);

/* The format named by the first bytes (no decoding). */
ImageFormat image_format_sniff(const void *data, size_t len);

/* Resampling filters; Lanczos-3 (what Pillow's LANCZOS is) is the default. */
typedef enum ImageFilter {
    IMAGE_FILTER_LANCZOS3 = 0,
    IMAGE_FILTER_BICUBIC,  /* Keys a = -0.5, as Pillow's BICUBIC */
    IMAGE_FILTER_BILINEAR, /* triangle */
    IMAGE_FILTER_BOX,      /* area average */
} ImageFilter;

/* Parses "lanczos", "bicubic", "bilinear" or "box". Returns 0 or -1. */
int image_filter_parse(const char *name, ImageFilter *out);
const char *image_filter_name(ImageFilter filter);

typedef struct ImageCropOptions {
    int size;            /* output side in pixels (default 256) */
    int min_side;        /* refuse (too_small) a short side below this; 0 = no minimum */
    int upscale;         /* 1 (default): images smaller than size are enlarged;
                            0: they are too_small */
    double max_aspect;   /* refuse (bad_aspect) long/short above this; 0 = no limit */
    uint64_t max_pixels; /* refuse (too_large) width*height above this, read from the
                            header before anything is allocated (default 100M) */
    ImageFilter filter;
    int dct_scaling;     /* 1 (default): JPEGs decode at 1/2, 1/4 or 1/8 when the short
                            side still covers size; 0: always full size */
    int prune_scans;     /* 1 (default): at 1/8 scale, progressive JPEGs skip their AC
                            scans before decoding (bit-identical output, faster) */
} ImageCropOptions;

/* Fills the defaults listed above. */
void image_crop_options_init(ImageCropOptions *opt);

/* Facts about one cropped image, for provenance and for the CLI. */
typedef struct ImageCropInfo {
    ImageFormat format;
    int width, height;       /* source size after EXIF orientation */
    int scale_denom;         /* the JPEG was decoded at 1/scale_denom (1 otherwise) */
    int orientation;         /* EXIF orientation tag (1..8; 1 when absent) */
    int orientation_applied; /* 1 when a non-identity orientation was applied */
    int had_alpha;           /* alpha was composited onto white */
    int scans_pruned;        /* number of progressive AC scans skipped */
    int warnings;            /* recoverable decoder warnings (e.g. extraneous bytes) */
    int crop_x, crop_y;      /* the crop box in source pixels (after orientation), */
    int crop_w, crop_h;      /* rounded to whole pixels */
} ImageCropInfo;

/* One thread's decoder state and scratch buffers. Buffers only grow, so a
 * cropper that has seen the largest image of a stream allocates nothing more
 * of its own (libjpeg/libpng keep small per-image pools). Not thread-safe:
 * give each thread its own. */
typedef struct ImageCropper ImageCropper;

/* Returns a new cropper with a copy of *opt (NULL: defaults), or NULL with
 * err filled when the options are invalid or memory is short. */
ImageCropper *image_cropper_new(const ImageCropOptions *opt, TfError *err);
void image_cropper_free(ImageCropper *c);

/* The options the cropper was made with. */
const ImageCropOptions *image_cropper_options(const ImageCropper *c);

/* Decodes `data` (JPEG, PNG or WebP), applies EXIF orientation (JPEG),
 * composites alpha onto white, resizes the short side to opt.size with the
 * chosen filter and writes the centre square to rgb, which holds
 * size*size*3 bytes (HWC, RGB). Returns IMAGE_OK and fills *info (may be
 * NULL), or a failure class with a short message in err; rgb is then
 * unspecified. Never crashes on any input. */
ImageStatus image_cropper_run(ImageCropper *c, const void *data, size_t len, uint8_t *rgb,
                              ImageCropInfo *info, TfError *err);

/* libjpeg allocates a progressive JPEG's whole-image coefficient buffer
 * (tens of MB) per image and frees it afterwards. Above glibc's mmap
 * threshold that means a fresh mmap, page faults and kernel zeroing every
 * image, which costs more than decoding the pruned scans (3-8x slower on
 * large progressive files). This raises glibc's mmap and trim thresholds so
 * such blocks stay on the heap and are reused. Process-wide: call it once
 * from a program's entry point (the crop/bench/ingest commands do), never
 * from library code. */
void image_tune_process_malloc(void);

/* The `transfuse preprocess` subcommand (crop, bench, and the other parts'
 * subcommands). Returns the process status. */
int preprocess_main(int argc, char **argv);

/* ==== tokenizer ============================================================= */

/* ==== vae =================================================================== */

#endif
