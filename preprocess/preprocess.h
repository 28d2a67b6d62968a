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

/* ==== tokenizer ============================================================= */

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
 * Host buffers; runs one image at a time on kernels k. */
int vae_encode(Vae *vae, TfKernels *k, const float *image, int B, int H, int W, float *mean, float *logvar,
               TfError *err);

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
