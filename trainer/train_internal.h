/* train_internal.h: the run side of the trainer (data, optimizer and
 * schedules, checkpoints), private to trainer/ and its tests. Built on
 * trainer.h's model API and the record source (shards.h). */
#ifndef TRANSFUSE_TRAIN_INTERNAL_H
#define TRANSFUSE_TRAIN_INTERNAL_H

#include <stddef.h>

#include "kernels.h"
#include "shards.h"
#include "trainer.h"

/* Learning-rate schedule: linear warmup from 0 to `peak` over `warmup`
 * steps, then cosine decay to `floor` at step `total` (and `floor` after). */
typedef struct TrainSchedule {
    double peak, floor;
    long warmup, total;
} TrainSchedule;

/* The learning rate of optimizer step `step` (1 = the first update). */
double train_lr_at(const TrainSchedule *s, long step);

/* Cosine DDPM schedule (Nichol & Dhariwal, s = 0.008, beta clipped at
 * 0.999, as diffusers' "squaredcos_cap_v2"): alpha_bar of timestep t in
 * [0, T), the cumulative product of (1 - beta_i) for i <= t. Returns -1
 * for t out of range. */
double train_ddpm_alpha_bar(int t, int T);

/* The same for every t in [0, T) at once into ab[0..T): equal to the bit
 * to train_ddpm_alpha_bar(t, T) (the same product in the same order). */
void train_ddpm_alpha_bars(double *ab, int T);

#define TRAIN_DDPM_STEPS 1000      /* T of the DDPM schedule */
#define TRAIN_IMAGE_FIRST_MAX_T 500 /* image-first (captioning) samples: t <= 500 */

/* One parameter range the optimizer updates: a view into the model's
 * parameter and gradient allocations. */
typedef struct TrainParam {
    float *param, *grad;
    size_t numel, offset; /* offset: floats into the optimizer's m and v */
    int decay;            /* weight decay applies */
    int text;             /* text learning-rate group */
} TrainParam;

/* AdamW over the one gradient allocation: owns m and v (n floats each,
 * kernel buffers), the step count and the hyper-parameters. */
typedef struct TrainOptim {
    TfKernels *k;
    float *m, *v;   /* (n) */
    size_t n;
    long step;      /* updates done */
    double beta1, beta2, eps, weight_decay, clip;
    TrainSchedule image, text; /* text.peak 0: the text group is frozen */
} TrainOptim;

/* Allocates zeroed m and v for n floats; defaults 0.9, 0.95, 1e-8,
 * weight decay 0.1, clip 1.0. Returns 0, or -1 with err filled. */
int train_optim_init(TrainOptim *o, TfKernels *k, size_t n, TfError *err);
void train_optim_deinit(TrainOptim *o);

/* One update: the global gradient norm over `grads` (n floats, the one
 * allocation) into *grad_norm, the clipping factor, then AdamW per range
 * with its group's learning rate (returned in *lr_image) and weight decay
 * only where decay is set. A range in a group whose rate is 0 is left
 * untouched (m and v too). Returns 0, or -1 with err filled. */
int train_optim_step(TrainOptim *o, const TrainParam *params, size_t n_params, const float *grads,
                     double *grad_norm, double *lr_image, TfError *err);

/* The ranges of a model's trainable tensors (malloc'd, *n set), or NULL
 * with err filled. */
TrainParam *train_params_of(FusionModel *m, size_t *n, TfError *err);

/* ---- data: records to batches (data.c) -----------------------------------------
 *
 * Per record one document (docs/TRAINER.md "Data"):
 *   caption first (generation): BOS caption BOI [P image positions] EOI EOS
 *   image first (captioning):   BOS BOI [P] EOI caption EOS
 *   caption dropped (a fraction of the caption-first ones): BOS BOI [P] EOI EOS
 * (BOS/EOS only where the Llama config has them; a leading BOS in the
 * record's tokens is not repeated). Captions too long for a row of T are
 * cut. Documents are packed in order: one that does not fit the rest of a
 * row starts the next row (the rest is padding, a document of its own),
 * and one that does not fit the batch starts the next batch. The draws of
 * a sample (image first, caption dropped, timestep; the posterior noise and
 * eps through tf_randn) depend only on (seed, rank, the sample's ordinal),
 * so a run resumed from train_data_state_json makes the same batches. */

typedef struct TrainDataOptions {
    const char *path;          /* dataset folder, shard file, or kafka://HOST:PORT/TOPIC */
    int rank, world;           /* data-parallel share (RECORD_SPLIT_BLOCKS for folders); 0 of 1 */
    int B, T;                  /* rows x positions */
    uint64_t seed;
    double caption_dropout;    /* fraction of caption-first samples without caption (default 0.1) */
    double image_first;        /* fraction of image-first samples (default 0.2) */
    int no_loop;               /* 1: a folder's end ends the data (default: start over, next epoch) */
    double latent_scale, latent_shift; /* for data that records no factors (a topic); data that
                                        * records others is refused. 0: the data's */
    const ShardFacts *expect;  /* configured tokenizer/VAE identity (the latent shape is added from
                                * the FusionConfig); NULL: only the shape */
    const json_t *state;       /* resume here (train_data_state_json); NULL: the start */
    const TfStopFlag *stop;    /* a topic's wait for records ends when set */
    const KafkaSourceOptions *kafka; /* topics: consumer settings (NULL: a stream) */
} TrainDataOptions;

/* Defaults: rank 0 of 1, B 1, T 1024, dropout 0.1, image first 0.2. */
void train_data_options_default(TrainDataOptions *o);

typedef struct TrainDataStats {
    uint64_t records;      /* records read */
    uint64_t skipped;      /* damaged or unusable records (last_problem says the last why) */
    uint64_t samples;      /* documents placed */
    uint64_t image_first, dropped, truncated;
    uint64_t lm_tokens;    /* targeted text positions */
    uint64_t positions;    /* non-padding positions */
    uint64_t batches;
    long epoch;            /* passes over a folder started (0 the first) */
    char last_problem[576];
} TrainDataStats;

typedef struct TrainData TrainData;

/* Opens the data for a model of configs fc and lc, drawing on kernels k
 * (kept, not owned). Refuses (NULL with err naming both) data whose
 * tokenizer, VAE or latent shape differs from the configured one.
 * Returns NULL with err filled. */
TrainData *train_data_open(TfKernels *k, const FusionConfig *fc, const LlamaConfig *lc, const TrainDataOptions *o,
                           TfError *err);
void train_data_free(TrainData *d);

/* A batch sized for this data (B x T, the most images a batch can hold). */
FusionBatch *train_data_batch_new(const TrainData *d, TfError *err);
int train_data_max_images(const TrainData *d);

#define TRAIN_DATA_END 0      /* no more data (nothing written to the batch) */
#define TRAIN_DATA_BATCH 1    /* the batch is filled */
#define TRAIN_DATA_STOPPED 2  /* the stop flag was set while waiting for a topic */

/* Fills the next batch (made by train_data_batch_new). The last batch
 * of data that ends may be partly padding. Returns TRAIN_DATA_*, or -1
 * with err filled (source errors, a record whose latent shape differs). */
int train_data_next(TrainData *d, FusionBatch *b, TfError *err);

/* The stream state after the last batch (new reference): {"epoch",
 * "samples" (ordinal of the next sample), "position" (the record source's
 * position JSON, before a document read but carried to the next batch)}. */
json_t *train_data_state_json(const TrainData *d);
const ShardFacts *train_data_facts(const TrainData *d);
void train_data_stats(const TrainData *d, TrainDataStats *out);

/* ---- checkpoints (checkpoint.c) ---------------------------------------------------
 *
 * OUT/step-NNNNNNNN/: model.safetensors (fusion_save_trainable),
 * optimizer.safetensors (m, v; metadata transfuse.optimizer_step),
 * state.json (the caller's state: "step" at least), config.json (the run's
 * config) and the marker COMPLETE, written last. Built in a temporary
 * folder, fsynced, renamed into place: a step folder without the marker
 * is ignored. */

#define TRAIN_CHECKPOINT_MARKER "COMPLETE"

/* OUT/step-NNNNNNNN into path. */
void train_checkpoint_path(const char *out, long step, char *path, size_t cap);

/* Writes the checkpoint of `step` (a complete one of that step is kept
 * as it is). state must hold "step" = o->step. Returns 0 or -1. */
int train_checkpoint_write(const char *out, long step, FusionModel *m, const TrainOptim *o, const json_t *state,
                           const json_t *config, TfError *err);

/* The newest complete checkpoint's step, -1 when there is none, -2 with
 * err filled when OUT cannot be read. */
long train_checkpoint_latest(const char *out, TfError *err);

/* Keeps the newest keep_last complete checkpoints and those whose step is
 * a multiple of keep_every (> 0), removes the others and temporary
 * folders left by other processes. Returns 0 or -1. */
int train_checkpoint_prune(const char *out, int keep_last, long keep_every, TfError *err);

/* Loads a checkpoint folder into a model built with its config and an
 * optimizer of the same size; *state gets state.json (new reference).
 * Returns 0 or -1. */
int train_checkpoint_read(const char *dir, FusionModel *m, TrainOptim *o, json_t **state, TfError *err);

/* The config.json of a checkpoint folder (new reference), or NULL. */
json_t *train_checkpoint_config(const char *dir, TfError *err);

#endif
