/* train_internal.h: the run side of the trainer (optimizer and schedules),
 * private to trainer/ and its tests. Built on trainer.h's model API. */
#ifndef TRANSFUSE_TRAIN_INTERNAL_H
#define TRANSFUSE_TRAIN_INTERNAL_H

#include <stddef.h>

#include "kernels.h"
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

#endif
