/* optim.c: AdamW with clipping and warmup + cosine schedules, over the
 * model's one gradient allocation, through the kernels (tf_adamw,
 * tf_sum_squares); the DDPM cosine noise schedule. */
#include <math.h>
#include <stdlib.h>

#include "train_internal.h"

double train_lr_at(const TrainSchedule *s, long step)
{
    if (s->peak == 0)
        return 0;
    if (s->warmup > 0 && step <= s->warmup)
        return s->peak * (double)step / (double)s->warmup;
    if (step >= s->total)
        return s->floor;
    const double span = (double)(s->total - s->warmup);
    const double x = span > 0 ? (double)(step - s->warmup) / span : 1.0;
    return s->floor + 0.5 * (s->peak - s->floor) * (1.0 + cos(M_PI * x));
}

static double cosine_f(double x)
{
    const double c = cos((x + 0.008) / 1.008 * M_PI / 2);
    return c * c;
}

double train_ddpm_alpha_bar(int t, int T)
{
    if (T <= 0 || t < 0 || t >= T)
        return -1;
    double ab = 1.0;
    for (int i = 0; i <= t; i++) {
        double beta = 1.0 - cosine_f((double)(i + 1) / T) / cosine_f((double)i / T);
        if (beta > 0.999)
            beta = 0.999;
        ab *= 1.0 - beta;
    }
    return ab;
}

void train_ddpm_alpha_bars(double *ab, int T)
{
    double prod = 1.0;
    for (int i = 0; i < T; i++) {
        double beta = 1.0 - cosine_f((double)(i + 1) / T) / cosine_f((double)i / T);
        if (beta > 0.999)
            beta = 0.999;
        prod *= 1.0 - beta;
        ab[i] = prod;
    }
}

int train_optim_init(TrainOptim *o, TfKernels *k, size_t n, TfError *err)
{
    *o = (TrainOptim){.k = k, .n = n, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .clip = 1.0};
    o->m = tf_kernels_alloc(k, n ? n : 1, err);
    o->v = tf_kernels_alloc(k, n ? n : 1, err);
    if (!o->m || !o->v || tf_fill(k, o->m, 0, n, err) || tf_fill(k, o->v, 0, n, err)) {
        train_optim_deinit(o);
        return -1;
    }
    return 0;
}

void train_optim_deinit(TrainOptim *o)
{
    if (o->k) {
        tf_kernels_release(o->k, o->m);
        tf_kernels_release(o->k, o->v);
    }
    o->m = o->v = NULL;
}

int train_optim_step(TrainOptim *o, const TrainParam *params, size_t n_params, const float *grads,
                     double *grad_norm, double *lr_image, TfError *err)
{
    double ss = 0;
    if (tf_sum_squares(o->k, &ss, grads, o->n, err))
        return -1;
    const double norm = sqrt(ss);
    const float scale = o->clip > 0 ? tf_clip_grad_scale(norm, o->clip) : 1.0f;
    const long step = o->step + 1;
    const double lr_img = train_lr_at(&o->image, step), lr_txt = train_lr_at(&o->text, step);
    for (size_t i = 0; i < n_params; i++) {
        const TrainParam *p = &params[i];
        const double lr = p->text ? lr_txt : lr_img;
        if (lr == 0 || p->offset + p->numel > o->n)
            continue;
        TfAdamW h = {.lr = lr, .beta1 = o->beta1, .beta2 = o->beta2, .eps = o->eps,
                     .weight_decay = p->decay ? o->weight_decay : 0, .step = step};
        if (tf_adamw(o->k, p->param, p->grad, o->m + p->offset, o->v + p->offset, p->numel, &h, scale, err))
            return tf_fail_context(err, "AdamW on range %zu", i);
    }
    o->step = step;
    if (grad_norm)
        *grad_norm = norm;
    if (lr_image)
        *lr_image = lr_img;
    return 0;
}

TrainParam *train_params_of(FusionModel *m, size_t *n, TfError *err)
{
    const size_t count = fusion_tensor_count(m);
    TrainParam *p = calloc(count ? count : 1, sizeof *p);
    if (!p) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < count; i++) {
        const FusionTensor *t = fusion_tensor_at(m, i);
        p[i] = (TrainParam){t->param, t->grad, t->numel, t->offset, t->decay, t->text};
    }
    *n = count;
    return p;
}
