/* model_internal.h: the FusionModel's layout, shared by model.c (build,
 * load, save), model_run.c (forward/backward of the transformer and the
 * losses) and adapter.c (the image input/output adapters). */
#ifndef TRANSFUSE_MODEL_INTERNAL_H
#define TRANSFUSE_MODEL_INTERNAL_H

#include "trainer_internal.h"

/* The frozen text copy of one layer: views into one allocation of the
 * checkpoint's dtype (bf16 stays bf16, f16/f32 become f32). */
typedef struct TextLayer {
    TfBuf ln1, q, k, v, o, ln2, gate, up, down;
} TextLayer;

/* Indices into the trainable table: the slots of LLAMA_LAYER_TENSORS. */
enum { IL_LN1, IL_Q, IL_K, IL_V, IL_O, IL_LN2, IL_GATE, IL_UP, IL_DOWN, IL_COUNT = LLAMA_LAYER_COUNT };

typedef struct ResBlockIdx {
    int cin, cout;
    int norm1_w, norm1_b, conv1_w, conv1_b, temb_w, temb_b, norm2_w, norm2_b, conv2_w, conv2_b;
    int short_w, short_b; /* -1 when cin == cout (identity skip) */
} ResBlockIdx;

typedef struct AdapterIdx {
    int freq_dim, temb_dim;      /* sinusoid width F, embedding width TD */
    int t1_w, t1_b, t2_w, t2_b;  /* time_embed.linear_1, linear_2 */
    /* linear */
    int in_w, in_b, out_w, out_b;
    /* U-Net */
    int conv_in_w, conv_in_b;
    ResBlockIdx down[2], up[2];
    int down_conv_w[2], down_conv_b[2]; /* -1: no downsampler in that block */
    int up_conv_w[2], up_conv_b[2];     /* up block j mirrors down block 1-j */
    int proj_in_w, proj_in_b;           /* image_in.proj: c1 -> D */
    int proj_out_w, proj_out_b;         /* image_out.proj: D -> c1 */
    int norm_out_w, norm_out_b, conv_out_w, conv_out_b;
} AdapterIdx;

/* A bump arena of kernel buffers for activations: reset before each run,
 * the same request sequence gets the same memory again. */
typedef struct ArenaChunk {
    float *base;
    size_t cap, used;
} ArenaChunk;

typedef struct Arena {
    ArenaChunk *chunks;
    int n, cur;
    size_t total;
} Arena;

typedef struct AdapterActs AdapterActs;

struct FusionModel {
    TfKernels *k;
    LlamaConfig lc;
    FusionConfig fc;
    TfRope rope;
    /* frozen text weights */
    void *frozen;
    TfDtype frozen_dtype;
    size_t frozen_numel;
    TfBuf embed, norm, head;
    TextLayer *text;
    /* trainable */
    FusionTensor *t;
    size_t nt;
    int *init;   /* per tensor: INIT_* */
    size_t tcap;
    float *params, *grads;
    size_t nparams;
    int *img; /* layers x IL_COUNT */
    int norm_image, special;
    int *txt;      /* with train_text: layers x IL_COUNT indices of the trainable text copy, else NULL */
    int norm_text; /* with train_text: model.norm.weight's index, else -1 */
    AdapterIdx ad;
    /* run state */
    float *rope_cos, *rope_sin; /* (P_rope, HD/2) */
    int rope_positions;
    Arena arena;
    const float *last_pred; /* the last run's prediction (arena), last_pred_n floats */
    size_t last_pred_n;
    AdapterActs *aacts; /* adapter.c's saved state, reused across runs */
};

#define TP(m, i) ((m)->t[(i)].param)
#define TG(m, i) ((m)->t[(i)].grad)


/* Activation buffer of n floats from the model's arena (NULL with err
 * filled when out of memory). */
float *arena_get(FusionModel *m, size_t n, TfError *err);
void arena_reset(FusionModel *m);
void arena_free(FusionModel *m);

/* ---- adapters (adapter.c) ------------------------------------------------------------ */

/* Adapter state saved between forward and backward for K images lives in
 * m->aacts (adapter.c); adapter_free releases it. */
void adapter_free(FusionModel *m);

/* Adds the adapter's trainable tensors to the model's table (model.c's
 * table builder calls it). */
int adapter_layout(FusionModel *m, TfError *err);

/* Forward of the input side: x_t (K,C,H,W) and timesteps (K, kernel
 * buffer) -> rows (K*P, D). Fills *acts (arena memory). */
int adapter_in_forward(FusionModel *m, AdapterActs **acts, const float *x_t, const float *timestep, int K,
                       float *rows, TfError *err);
/* Forward of the output side: normed image rows (K*P, D) -> pred (K,C,H,W). */
int adapter_out_forward(FusionModel *m, AdapterActs *acts, const float *rows, float *pred, TfError *err);
/* Backward of the output side: dpred -> drows (K*P, D, overwritten);
 * weight grads accumulate. */
int adapter_out_backward(FusionModel *m, AdapterActs *acts, const float *dpred, float *drows, TfError *err);
/* Backward of the input side from drows (K*P, D); finishes the time
 * embedding's gradient. */
int adapter_in_backward(FusionModel *m, AdapterActs *acts, const float *drows, TfError *err);

/* Table builder used by the adapter: adds a tensor; returns its index or
 * -1 (err filled). init: 0 zeros, 1 ones, 2 normal(0, 1/sqrt(fan_in)) with
 * fan_in = numel / shape[0]. */
enum { INIT_ZERO = 0, INIT_ONE = 1, INIT_FANIN = 2, INIT_COPY = 3, INIT_SPECIAL = 4 };
int model_add_tensor(FusionModel *m, const char *name, int ndim, const int64_t *shape, int decay, int init,
                     TfError *err);

#endif
