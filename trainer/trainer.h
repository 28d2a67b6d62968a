/* trainer: LlamaFusion (LMFusion) with the Transfusion objective, on the
 * tensor kernels (kernels/kernels.h; nothing here does tensor arithmetic
 * itself). The one public header of trainer/.
 *
 * Parts:
 *   - Llama checkpoints in Hugging Face layout: config.json facts
 *     (LlamaConfig), random-initialised checkpoints for tests and demos
 *     (llama_init_checkpoint, `transfuse llama init|info`);
 *   - the model (FusionModel): frozen text weights loaded from a Llama
 *     checkpoint, an image copy of every layer initialised from the text
 *     copy, image input/output adapters (U-Net or linear patchify),
 *     trainable BOI/EOI embedding rows; forward and backward of
 *     L = L_LM + 5 L_diffusion over a FusionBatch;
 *   - `transfuse eval text`: per-line mean next-token loss of the text path;
 *   - data, optimizer, checkpoints and `transfuse train` (trainer/data.c,
 *     optim.c, checkpoint.c, train.c) build on the model API below.
 *
 * docs/TRAINER.md has the long form: tensor names, adapters, the mask,
 * and the choices where ../shared/reference/MODEL.md leaves one open.
 *
 * Ownership: x_new/x_free pairs; functions return 0 or -1 with err filled
 * (err may be NULL); no exit() anywhere.
 */
#ifndef TRANSFUSE_TRAINER_H
#define TRANSFUSE_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "kernels.h"

/* ==== Llama checkpoints ======================================================= */

/* The facts of a Hugging Face Llama config.json the model needs. */
typedef struct LlamaConfig {
    int hidden;          /* hidden_size D */
    int layers;          /* num_hidden_layers */
    int heads;           /* num_attention_heads NH */
    int kv_heads;        /* num_key_value_heads NKV (NH % NKV == 0) */
    int head_dim;        /* head_dim HD (hidden / heads when absent) */
    int intermediate;    /* intermediate_size I */
    int vocab;           /* vocab_size V */
    int max_position;    /* max_position_embeddings */
    double rope_theta;
    /* rope_scaling with rope_type "llama3"; factor 1 (or absent) = none */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_position;
    float rms_eps;       /* rms_norm_eps */
    int tie_word_embeddings; /* 1: no lm_head.weight, the head is the embedding */
    int bos_id, eos_id;  /* bos_token_id, eos_token_id (first of a list); -1 absent */
    char torch_dtype[16]; /* "bfloat16", "float32", ... ("" when absent) */
} LlamaConfig;

/* Reads DIR/config.json. Returns 0, or -1 with err naming the file and
 * the missing or invalid field. */
int llama_config_load(const char *dir, LlamaConfig *cfg, TfError *err);

/* The config of a named layout: "tiny" (D 64, 2 layers, 4/2 heads of 16,
 * FFN 192, the full Llama-3 vocabulary 128256, llama3 rope scaling, tied
 * embeddings: about 8.3M parameters, nearly all embedding), "50m" (D 384,
 * 4 layers, 6/2 heads of 64, FFN 1024, tied: 55.5M, the benchmark's
 * middle size), "1b"
 * (Llama-3.2-1B) or "8b" (Llama-3-8B). -1 with err for another name. */
int llama_config_layout(const char *layout, LlamaConfig *cfg, TfError *err);

/* Parameter count of a Llama config (embedding, head when untied). */
size_t llama_param_count(const LlamaConfig *cfg);

/* What llama_init_checkpoint writes. Zero-initialise, then set. */
typedef struct LlamaInitOptions {
    const char *layout;     /* "tiny", "50m", "1b", "8b" */
    uint64_t seed;
    int weights;            /* 1 write weights, 0 config only, -1 (or 0-init + layout tiny) default:
                               weights for tiny and 50m, config only for 1b and 8b */
    TfDtype dtype;          /* F32, BF16 or F16; TF_DTYPE_COUNT = default (tiny, 50m F32, else BF16) */
    uint64_t shard_bytes;   /* shard past this many bytes of tensor data; 0 = 5 GB (HF's default) */
    int untied;             /* 1: force untied embeddings (writes lm_head.weight) */
    double std;             /* weights' standard deviation; 0 = 0.02 (HF's initializer_range) */
} LlamaInitOptions;

/* Writes a random-initialised checkpoint into out_dir (created): config.json,
 * generation_config.json and, with weights, model.safetensors, or
 * model-0000k-of-0000n.safetensors + model.safetensors.index.json when the
 * data passes shard_bytes. Weights N(0, std) drawn with tf_randn (seed,
 * one stream per tensor), norms 1. Uses `k` to draw. Returns 0 or -1. */
int llama_init_checkpoint(TfKernels *k, const LlamaInitOptions *opt, const char *out_dir, TfError *err);

/* `transfuse llama init|info`. */
int llama_main(int argc, char **argv);

/* ==== the LlamaFusion model ======================================================= */

typedef enum { FUSION_ADAPTER_UNET = 0, FUSION_ADAPTER_LINEAR = 1 } FusionAdapter;

/* Model configuration beyond the Llama checkpoint. fusion_config_default
 * fills the defaults noted here. */
typedef struct FusionConfig {
    FusionAdapter adapter;   /* default UNET */
    int latent_c, latent_h, latent_w; /* latent shape (C,H,W): default 4,32,32 (from the data's manifest) */
    int patch;               /* p: p x p latent pixels per position (default 2); H, W multiples of p */
    /* U-Net adapter: two down blocks of widths unet_ch[0], unet_ch[1]
     * (default 64, 128), GroupNorm with unet_groups groups (default 1:
     * LayerNorm over the whole map, MODEL.md's "regular LayerNorm"). */
    int unet_ch[2];
    int unet_groups;
    int boi_id, eoi_id;      /* default 128002, 128003 (Llama-3 reserved special tokens 0 and 1) */
    uint64_t seed;           /* adapter initialisation (default 0) */
    /* 1: the text copy of every layer and model.norm are trainable too
     * (fp32 tensors under their Llama names, FusionTensor.text = 1), so a
     * non-zero text learning rate can move them; the text path is then no
     * longer frozen. The embedding and the LM head stay frozen. Default 0. */
    int train_text;
} FusionConfig;

void fusion_config_default(FusionConfig *cfg);
/* Positions per image: (H/p) * (W/p). */
int fusion_config_patches(const FusionConfig *cfg);
/* "unet"|"linear" -> adapter; -1 with err otherwise. */
int fusion_adapter_parse(const char *name, FusionAdapter *out, TfError *err);
const char *fusion_adapter_name(FusionAdapter a);

/* The config as JSON (new reference) and back: what the trainable-weights
 * file carries in its metadata under "transfuse.fusion_config". */
json_t *fusion_config_to_json(const FusionConfig *cfg);
int fusion_config_from_json(const json_t *j, FusionConfig *cfg, TfError *err);

typedef struct FusionModel FusionModel;

/* Loads the text weights of the Llama checkpoint in llama_dir (config.json
 * + model.safetensors or the sharded index; bf16 text weights stay bf16,
 * f16 and f32 become f32), builds the image copy of every layer from the
 * text copy and initialises the adapters from cfg->seed. The model keeps
 * `k` (not owned) for all its kernels. Returns NULL with err filled. */
FusionModel *fusion_model_new(TfKernels *k, const char *llama_dir, const FusionConfig *cfg, TfError *err);
void fusion_model_free(FusionModel *m);

const LlamaConfig *fusion_llama_config(const FusionModel *m);
const FusionConfig *fusion_config(const FusionModel *m);

/* ---- trainable tensors -------------------------------------------------------
 *
 * Every trainable tensor is a view into ONE parameter allocation and ONE
 * gradient allocation (fp32 kernel buffers of fusion_param_count floats,
 * same offsets). Text weights are frozen: they have no gradient buffer and
 * are not listed here. Names (Hugging Face style; docs/TRAINER.md):
 *   model.layers.N.input_layernorm_image.weight            (D)
 *   model.layers.N.self_attn.{q,k,v,o}_proj_image.weight   ([out, in])
 *   model.layers.N.post_attention_layernorm_image.weight   (D)
 *   model.layers.N.mlp.{gate,up,down}_proj_image.weight    ([out, in])
 *   model.norm_image.weight                                (D)
 *   model.embed_tokens_special.weight   (2, D): the rows of BOI, EOI
 *   time_embed.linear_{1,2}.{weight,bias}
 *   image_in.*, image_out.*             the adapters (TRAINER.md lists them)
 * and with train_text the text copy under the Llama names:
 *   model.layers.N.{input_layernorm,post_attention_layernorm}.weight,
 *   model.layers.N.self_attn.{q,k,v,o}_proj.weight,
 *   model.layers.N.mlp.{gate,up,down}_proj.weight, model.norm.weight
 */
typedef struct FusionTensor {
    const char *name;
    int ndim;
    int64_t shape[4];
    size_t numel;
    size_t offset;      /* floats from the start of the allocation */
    float *param;       /* = params + offset */
    float *grad;        /* = grads + offset */
    int decay;          /* 1: weight decay applies (matrices, conv kernels); 0: norms, biases, special rows */
    int text;           /* 1: a text-path tensor (only with train_text; the text learning-rate group) */
} FusionTensor;

size_t fusion_param_count(const FusionModel *m);     /* trainable floats */
size_t fusion_frozen_count(const FusionModel *m);    /* frozen text parameters */
float *fusion_params(FusionModel *m);                /* (fusion_param_count) kernel buffer */
float *fusion_grads(FusionModel *m);                 /* (fusion_param_count) kernel buffer */
size_t fusion_tensor_count(const FusionModel *m);
const FusionTensor *fusion_tensor_at(const FusionModel *m, size_t i);
const FusionTensor *fusion_tensor_find(const FusionModel *m, const char *name);
/* grads = 0. */
int fusion_zero_grad(FusionModel *m, TfError *err);

/* Writes every trainable tensor (fp32, the names above) to one
 * safetensors file, atomically, with the FusionConfig as metadata
 * "transfuse.fusion_config". */
int fusion_save_trainable(FusionModel *m, const char *path, TfError *err);
/* Loads them back: every trainable tensor must be in the file with its
 * shape (a missing or misshapen one fails naming it). */
int fusion_load_trainable(FusionModel *m, const char *path, TfError *err);
/* Reads the FusionConfig stored in such a file. */
int fusion_config_read(const char *path, FusionConfig *cfg, TfError *err);

/* The file name of the trainable weights inside a checkpoint folder. */
#define FUSION_CHECKPOINT_WEIGHTS "model.safetensors"

/* ---- batches -------------------------------------------------------------------
 *
 * B rows of T positions, all arrays in HOST memory, row-major (b*T + i).
 * A row packs one or more documents; padding is a document of its own
 * (text, targets -1). A document is text tokens and images; an image is
 * BOI, P = fusion_config_patches() image positions in raster order, EOI:
 *   tokens[n]    text token id at text positions (BOI/EOI included); any
 *                value at image positions (ignored; -1 by convention)
 *   modality[n]  FUSION_TEXT or FUSION_IMAGE
 *   lo[n], hi[n] the mask: key j (same row) visible to query i iff
 *                lo <= j < hi. lo = start of the position's document,
 *                hi = i+1 for text, the end of the image span for image
 *                positions (fusion_batch_fill_hi computes hi). RoPE
 *                positions are i - lo (restart per document).
 *   targets[n]   next-token target of a text position (-1: no loss). The
 *                caller sets -1 where the next position is BOI or an image
 *                position (the head is frozen: BOI is not predicted).
 *   images[k]    row and first position of image k (images ordered by
 *                (row, start)); x_t (K,C,H,W) the noisy latent, eps
 *                (K,C,H,W) the noise it was made with (the target),
 *                timestep[k] t in [0, 1000).
 */
enum { FUSION_TEXT = 0, FUSION_IMAGE = 1 };

typedef struct FusionImageSlot {
    int row, start;
} FusionImageSlot;

typedef struct FusionBatch {
    int B, T;
    int32_t *tokens;      /* (B*T) */
    uint8_t *modality;    /* (B*T) */
    int32_t *lo, *hi;     /* (B*T) */
    int32_t *targets;     /* (B*T) */
    int n_images, max_images;
    FusionImageSlot *images; /* (max_images) */
    float *x_t;           /* (max_images, C, H, W) */
    float *eps;           /* (max_images, C, H, W) */
    float *timestep;      /* (max_images) */
    size_t latent_numel;  /* C*H*W */
} FusionBatch;

/* Allocates a batch for B x T positions and up to max_images images of
 * latent_numel floats, all text, tokens 0, targets -1, one document per
 * row (lo 0, hi i+1). Returns NULL when out of memory. */
FusionBatch *fusion_batch_new(int B, int T, int max_images, size_t latent_numel);
void fusion_batch_free(FusionBatch *b);
/* Sets hi from modality: i+1 for text, the end of the run of image
 * positions for image positions (lo must be set). */
void fusion_batch_fill_hi(FusionBatch *b);
/* Writes a batch to a safetensors file (every array as F32 tensors:
 * tokens, modality, lo, hi, targets (B,T); images (K,3) = row, start,
 * timestep; x_t, eps (K, latent_numel)), for the PyTorch twin and to
 * reproduce a step; fusion_batch_load reads one back (new batch). */
int fusion_batch_save(const FusionBatch *b, const char *path, TfError *err);
FusionBatch *fusion_batch_load(const char *path, TfError *err);

/* Checks a batch against a model: shapes, ids < V, the image spans
 * agreeing with modality and images[], targets only at text positions,
 * 0 <= lo <= i, and exactly the Transfusion mask's hi (i+1 for text, the
 * end of its image's span for an image position). The forward calls it. */
int fusion_batch_check(const FusionModel *m, const FusionBatch *b, TfError *err);

/* ---- forward and backward ------------------------------------------------------- */

typedef struct FusionLosses {
    double lm;          /* mean cross-entropy over targeted text positions (0 when none) */
    double diffusion;   /* mean over images of the per-image epsilon MSE (0 when none) */
    double total;       /* lm + FUSION_DIFFUSION_WEIGHT * diffusion */
    long lm_tokens;     /* targeted text positions */
    int images;
} FusionLosses;

#define FUSION_DIFFUSION_WEIGHT 5.0

/* The losses of a batch (no gradients). */
int fusion_forward(FusionModel *m, const FusionBatch *b, FusionLosses *out, TfError *err);
/* The losses, and grads += grad_scale * d(total)/d(trainable) (grad_scale
 * 1/k for the mean of k accumulated micro-batches). Frozen text weights
 * get no gradient; gradients flow through text activations. */
int fusion_forward_backward(FusionModel *m, const FusionBatch *b, float grad_scale, FusionLosses *out, TfError *err);

/* The predicted noise of the last fusion_forward(_backward) call, (n_images,
 * C, H, W), copied to host memory (nothing when it had no images). Valid
 * until the next call on the model. */
int fusion_prediction(FusionModel *m, float *host, size_t n, TfError *err);

/* Text path only, one sequence of n text tokens (causal, positions 0..n-1):
 * logits (n, V) to host memory (fusion_text_logits), or the mean
 * next-token loss over the n-1 targets (fusion_text_loss; *loss = 0 when
 * n < 2). The image weights take no part: the result is bit-identical
 * for any image weights. */
int fusion_text_logits(FusionModel *m, const int32_t *tokens, int n, float *logits, TfError *err);
int fusion_text_loss(FusionModel *m, const int32_t *tokens, int n, double *loss, TfError *err);

/* Memory of the model's kernel buffers in bytes: frozen weights,
 * trainable parameters, gradients, and activations for the largest batch
 * run so far. */
typedef struct FusionMemory {
    size_t frozen, params, grads, activations;
} FusionMemory;
void fusion_memory(const FusionModel *m, FusionMemory *out);

/* `transfuse eval text`. */
int eval_main(int argc, char **argv);

/* `transfuse train` (train.c; docs/TRAINER.md "transfuse train"). */
int train_main(int argc, char **argv);

#endif
