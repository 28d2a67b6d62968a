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
#include "kernels.h"

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

/* The one PNG writer. Encodes width x height 8-bit RGB pixels (HWC, rows
 * packed: width*3 bytes each) as a PNG with libpng at zlib `level` (0-9;
 * -1: zlib's default, 6). Returns a malloc'd buffer (caller frees) and its
 * length in *len, or NULL with err filled. Thread-safe. */
uint8_t *image_png_encode(const uint8_t *rgb, int width, int height, int level, size_t *len, TfError *err);

/* Encodes at the default level and writes the PNG to `path` atomically (a
 * temporary name in the same folder, fsync, rename), so a reader never
 * sees half a file. Returns 0, or -1 with err naming the path. */
int image_png_write(const char *path, const uint8_t *rgb, int width, int height, TfError *err);

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

/* A byte-level BPE tokenizer of the kind Llama-3 uses, loaded from a
 * Hugging Face tokenizer.json or from Meta's tokenizer.model (tiktoken's
 * base64 rank format, with Llama-3's split pattern and special tokens).
 * Ids are identical to those of the transformers.js port of Hugging Face's
 * tokenizers, or with TOKENIZER_REGEX_RUST to Hugging Face's Rust library
 * and tiktoken (each checked line by line on a 20,000-line corpus; see
 * docs/TOKENIZER.md).
 *
 * A Tokenizer is immutable once loaded and may be shared by threads; each
 * thread encodes through its own TokenizerSession (scratch buffers, regex
 * match data and a cache of piece -> ids).
 *
 * Text is UTF-8. Invalid UTF-8 is not an error: every maximal invalid
 * subpart is replaced by U+FFFD before tokenizing (the WHATWG/Unicode rule
 * that node's TextDecoder and Python's errors="replace" apply), so the ids
 * are those the reference gives for the same bytes. */

typedef struct Tokenizer Tokenizer;
typedef struct TokenizerSession TokenizerSession;

/* A growable array of token ids; zero-initialise, free with
 * token_ids_deinit. Encoding appends to it. */
typedef struct TokenIds {
    int32_t *ids;
    size_t len, cap;
} TokenIds;

void token_ids_deinit(TokenIds *ids);

/* Encode flags. */
enum {
    /* Add the special tokens of the post-processor template around the
     * text (Llama-3: <|begin_of_text|> in front). When the file has no
     * template, the BOS token of tokenizer_config.json beside it, or
     * <|begin_of_text|> if the vocabulary has it. */
    TOKENIZER_ADD_BOS = 1u << 0,
    /* Treat the text of special tokens (e.g. "<|eot_id|>") as ordinary
     * text instead of mapping it to the special id (Meta's tiktoken
     * default; the Hugging Face default maps it). */
    TOKENIZER_SPECIALS_AS_TEXT = 1u << 1,
};

/* Which meaning the split pattern's \s and (?i) get. The engines that run
 * Llama-3's pattern disagree on a few characters (U+FEFF, U+0085, and
 * case folding of "'ſ"): */
typedef enum TokenizerRegex {
    /* JavaScript's, as transformers.js runs it (the reference of the tests;
     * the default) */
    TOKENIZER_REGEX_JS = 0,
    /* Unicode's, as Hugging Face tokenizers (Rust, the library behind
     * Python's transformers) and tiktoken (Meta's tokenizer.py) run it */
    TOKENIZER_REGEX_RUST = 1,
} TokenizerRegex;

/* Loads a tokenizer.json or a tiktoken tokenizer.model (told apart by
 * content) with the default TOKENIZER_REGEX_JS. Returns a new Tokenizer,
 * or NULL with err filled. */
Tokenizer *tokenizer_load(const char *path, TfError *err);

/* The same with a choice of pattern semantics. The identity differs
 * between the two when they can give different ids. */
Tokenizer *tokenizer_load_regex(const char *path, TokenizerRegex regex, TfError *err);
void tokenizer_free(Tokenizer *tok);

/* Number of ids (vocabulary plus added tokens; one past the largest id). */
size_t tokenizer_vocab_size(const Tokenizer *tok);
/* The id BOS maps to, or -1 when the tokenizer has none. */
int32_t tokenizer_bos_id(const Tokenizer *tok);
/* Id of a token given by its text (vocabulary tokens in their byte-level
 * form, added tokens as written), or -1. */
int32_t tokenizer_token_id(const Tokenizer *tok, const char *text);

/* Lowercase hex SHA-256 (64 characters + NUL) over the token bytes, merge
 * ranks, split pattern, added tokens and BOS: stable across runs and
 * machines, and equal for a tokenizer.json and a tokenizer.model that
 * describe the same tokenizer. The shard manifest records it. Owned by tok. */
const char *tokenizer_identity(const Tokenizer *tok);

/* A per-thread encoder. Returns NULL with err filled on failure. */
TokenizerSession *tokenizer_session_new(const Tokenizer *tok, TfError *err);
void tokenizer_session_free(TokenizerSession *s);

/* Appends the ids of `len` bytes of text to out. Returns 0, or -1 with err
 * filled (out of memory, or text longer than 1 GiB); out keeps what it
 * held before the call on failure. */
int tokenizer_encode(TokenizerSession *s, const char *text, size_t len, unsigned flags, TokenIds *out,
                     TfError *err);

/* Decodes ids to UTF-8 text: vocabulary tokens give back their bytes,
 * added tokens their text. Byte sequences that are not valid UTF-8 (ids
 * cut in the middle of a character) are replaced by U+FFFD as the
 * reference does, unless raw is non-zero. Writes a malloc'd NUL-terminated
 * string to *text and its length to *len. Returns -1 with err filled for
 * an id outside the vocabulary. */
int tokenizer_decode(const Tokenizer *tok, const int32_t *ids, size_t n, int raw, char **text, size_t *len,
                     TfError *err);

/* `transfuse tokenize`: stdin lines to ids (or ids to text). */
int tokenize_main(int argc, char **argv);

/* ==== vae =================================================================== */

/* A diffusers AutoencoderKL: config.json plus diffusion_pytorch_model
 * safetensors (one file or sharded through its .index.json), run on the
 * shared kernels (kernels.h). Images are (B,3,H,W) floats in [-1,1] with H
 * and W multiples of vae_downsample_factor(); latents are
 * (B,latent_channels,H/f,W/f). */

#define VAE_MAX_BLOCKS 8

typedef struct VaeConfig {
    int in_channels, out_channels;
    int latent_channels;
    int nblocks;
    int block_out_channels[VAE_MAX_BLOCKS];
    int layers_per_block;
    int norm_num_groups;
    float scaling_factor;
    float shift_factor; /* 0 when the config has none (SD, SDXL) */
    int use_quant_conv, use_post_quant_conv;
    int mid_block_add_attention;
} VaeConfig;

/* Fills cfg for a named layout: "sd" (SD 1.x/2.x), "sdxl", "flux" (16
 * latent channels, shift, no quant convs) or "tiny" (SD-shaped with small
 * channels, for tests). Returns -1 for an unknown name. */
int vae_config_layout(const char *layout, VaeConfig *cfg, TfError *err);

/* Parses a diffusers config.json object, checking every field it uses.
 * Returns 0, or -1 with err naming `label` and the field. */
int vae_config_from_json(const json_t *root, const char *label, VaeConfig *cfg, TfError *err);

/* The config as diffusers writes it (a new reference). */
json_t *vae_config_to_json(const VaeConfig *cfg);

/* Spatial downsampling of the encoder: 2^(nblocks-1), 8 for SD. */
int vae_downsample_factor(const VaeConfig *cfg);

/* Writes a random-initialised checkpoint of `cfg` into folder dir
 * (config.json + diffusion_pytorch_model.safetensors, tensors stored as
 * `dtype`), deterministic in `seed`: PyTorch's default uniform
 * initialisation for convolutions, GroupNorm weights and biases perturbed
 * around 1 and 0. For tests and demos only; it encodes nothing useful. */
int vae_init_write(const VaeConfig *cfg, uint64_t seed, TfDtype dtype, const char *dir, TfError *err);

typedef struct Vae Vae;

enum { VAE_LOAD_ENCODER = 1, VAE_LOAD_DECODER = 2 };

/* Loads the parts of the VAE in folder dir named by `parts` (weights
 * converted to f32), accepting current and older attention names, with
 * 1x1-conv-shaped attention weights. Computes the identity. Returns a new
 * Vae, or NULL with err naming the file and tensor at fault. */
Vae *vae_load(const char *dir, int parts, TfError *err);
void vae_free(Vae *vae);

const VaeConfig *vae_config(const Vae *vae);

/* The VAE identity recorded in shard manifests: lowercase hex SHA-256 of
 * config.json followed by the weight files' bytes. Owned by vae. */
const char *vae_identity(const Vae *vae);

/* Encoder: images (B,3,H,W) in [-1,1] to the posterior's mean and log
 * variance (clamped to [-30,20] as diffusers does), each (B,L,H/f,W/f).
 * Host buffers; runs groups of images through each layer on kernels k.
 * `stop` (may be NULL) is checked between layers: when it is set the call
 * returns -1 with "stopped" in err and mean/logvar hold nothing usable. */
int vae_encode(Vae *vae, TfKernels *k, const float *image, int B, int H, int W, float *mean, float *logvar,
               const TfStopFlag *stop, TfError *err);

/* Latents for the model: z = (mean + exp(logvar/2) * eps - shift) * scale
 * with eps standard normal drawn from (seed, first_index + b) for image b,
 * so a sample does not depend on batching; with eps_scale 0 the mean is
 * used. mean, logvar, latent (B,L,h,w); latent may equal mean. */
void vae_latent_sample(const VaeConfig *cfg, float *latent, const float *mean, const float *logvar, int B, size_t per,
                       uint64_t seed, uint64_t first_index, float eps_scale);

/* Decoder: scaled/shifted latents (B,L,h,w) back to images (B,3,h*f,w*f)
 * in about [-1,1] (unclamped). Host buffers. */
int vae_decode(Vae *vae, TfKernels *k, const float *latent, int B, int h, int w, float *image, TfError *err);

/* `transfuse vae`: init, encode, decode. */
int vae_main(int argc, char **argv);


#endif
