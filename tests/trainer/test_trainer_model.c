/* test_trainer_model: the LlamaFusion model on a tiny random checkpoint.
 *
 *   test_trainer_model check LLAMA_DIR
 *       the mask (by perturbing inputs), text-only logits bit-identical
 *       after any change of the image weights, save/load of the trainable
 *       tensors, forward == forward_backward losses, batch refusals;
 *   test_trainer_model dump LLAMA_DIR unet|linear OUT_DIR [train_text]
 *       writes OUT_DIR/{trainable,batch,result}.safetensors for the PyTorch
 *       twin (test_trainer_twin.py): perturbed trainable weights, a batch
 *       of two rows (two documents, padding, three images, one image
 *       first), the losses and every trainable gradient;
 *   test_trainer_model steps LLAMA_DIR unet|linear OUT_DIR N
 *       the same weights and batch, then N AdamW steps on that batch
 *       (train_optim_step: warmup 2, cosine from 1e-3 to 1e-4 at step N,
 *       weight decay 0.1, clip 1.0): OUT_DIR/steps.safetensors holds the
 *       losses before each step (hi + lo floats) and the grad norms, and
 *       OUT_DIR/final.safetensors the trainable weights after step N
 *       (test_trainer_twin.py runs the same steps in the twin).
 */
#include "test.h"
#include "train_internal.h"
#include "trainer.h"

#include <math.h>
#include <stdint.h>

#define T_LEN 48
#define BOS 128000
#define PAD 128001

static uint64_t rng = 88172645463325252ull;

static uint32_t next_u32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static float next_normal(void)
{
    double u1 = (next_u32() + 1.0) / 4294967297.0, u2 = next_u32() / 4294967296.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void small_config(FusionConfig *fc, FusionAdapter ad)
{
    fusion_config_default(fc);
    fc->adapter = ad;
    fc->latent_c = 4, fc->latent_h = 8, fc->latent_w = 8, fc->patch = 2; /* 16 positions per image */
    fc->unet_ch[0] = 8, fc->unet_ch[1] = 16, fc->unet_groups = 2;
    fc->seed = 7;
}

/* Puts `what` at positions [at, at+n) of row r: text tokens (random ids
 * when tok < 0), or an image (BOI, P patches, EOI when eoi). Returns the
 * next position. */
static int put_text(FusionBatch *b, int r, int at, int n, int tok)
{
    for (int i = 0; i < n; i++) {
        b->tokens[r * b->T + at + i] = tok >= 0 ? tok : (int32_t)(next_u32() % 128000);
        b->modality[r * b->T + at + i] = FUSION_TEXT;
    }
    return at + n;
}

static int put_image(FusionBatch *b, int r, int at, int P, int eoi, const FusionConfig *fc, float t)
{
    at = put_text(b, r, at, 1, fc->boi_id);
    int k = b->n_images++;
    b->images[k] = (FusionImageSlot){r, at};
    b->timestep[k] = t;
    for (size_t j = 0; j < b->latent_numel; j++) {
        b->eps[k * b->latent_numel + j] = next_normal();
        b->x_t[k * b->latent_numel + j] = next_normal();
    }
    for (int i = 0; i < P; i++) {
        b->tokens[r * b->T + at + i] = -1;
        b->modality[r * b->T + at + i] = FUSION_IMAGE;
    }
    at += P;
    return eoi ? put_text(b, r, at, 1, fc->eoi_id) : at;
}

/* lo from document starts, hi from modality, targets: the next text token
 * of the same document unless it is BOI/EOI. */
static void finish(FusionBatch *b, const FusionConfig *fc, const int *doc_starts, int ndoc_per_row)
{
    for (int r = 0; r < b->B; r++) {
        const int *ds = doc_starts + r * ndoc_per_row;
        for (int i = 0; i < b->T; i++) {
            int lo = 0;
            for (int d = 0; d < ndoc_per_row; d++)
                if (ds[d] >= 0 && ds[d] <= i)
                    lo = ds[d];
            b->lo[r * b->T + i] = lo;
        }
    }
    fusion_batch_fill_hi(b);
    for (int n = 0; n < b->B * b->T; n++) {
        int i = n % b->T;
        b->targets[n] = -1;
        if (b->modality[n] != FUSION_TEXT || i + 1 >= b->T || b->lo[n + 1] != b->lo[n] ||
            b->modality[n + 1] != FUSION_TEXT)
            continue;
        int32_t t = b->tokens[n + 1];
        if (t != fc->boi_id && t != fc->eoi_id && b->tokens[n] != PAD)
            b->targets[n] = t;
    }
}

/* Row 0: [BOS text5 BOI img EOI text5][BOS text6][pad x12]; row 1: [BOS BOI
 * img EOI text12 BOI img] (image first, an image ending the row). */
static FusionBatch *fixture(const FusionConfig *fc)
{
    const int P = fusion_config_patches(fc);
    FusionBatch *b = fusion_batch_new(2, T_LEN, 4, (size_t)fc->latent_c * fc->latent_h * fc->latent_w);
    REQUIRE(b && P == 16);
    int at = put_text(b, 0, 0, 1, BOS);
    at = put_text(b, 0, at, 5, -1);
    at = put_image(b, 0, at, P, 1, fc, 10.5f);
    at = put_text(b, 0, at, 5, -1);
    int d1 = at;
    at = put_text(b, 0, at, 1, BOS);
    at = put_text(b, 0, at, 6, -1);
    int d2 = at;
    put_text(b, 0, at, T_LEN - at, PAD);
    at = put_text(b, 1, 0, 1, BOS);
    at = put_image(b, 1, at, P, 1, fc, 500.0f);
    at = put_text(b, 1, at, 12, -1);
    at = put_image(b, 1, at, P, 0, fc, 999.0f);
    REQUIRE(at == T_LEN);
    const int starts[6] = {0, d1, d2, 0, -1, -1};
    finish(b, fc, starts, 3);
    return b;
}

static FusionModel *load(TfKernels *k, const char *dir, const FusionConfig *fc)
{
    TfError err = {{0}};
    FusionModel *m = fusion_model_new(k, dir, fc, &err);
    if (!m)
        fprintf(stderr, "fusion_model_new: %s\n", err.msg);
    REQUIRE(m);
    return m;
}

/* params += scale * N(0,1) on every trainable tensor (host side: a test). */
static void perturb(FusionModel *m, float scale)
{
    size_t n = fusion_param_count(m);
    float *h = malloc(n * sizeof *h);
    REQUIRE(h);
    TfKernels *k = NULL;
    (void)k;
    memcpy(h, fusion_params(m), n * sizeof *h); /* CPU backend: host memory */
    for (size_t i = 0; i < n; i++)
        h[i] += scale * next_normal();
    memcpy(fusion_params(m), h, n * sizeof *h);
    free(h);
}

static size_t pred_numel(const FusionBatch *b)
{
    return (size_t)b->n_images * b->latent_numel;
}

static int dump(const char *llama, const char *adapter, const char *out, int train_text)
{
    TfError err = {{0}};
    FusionConfig fc;
    FusionAdapter ad;
    REQUIRE(fusion_adapter_parse(adapter, &ad, &err) == 0);
    small_config(&fc, ad);
    fc.train_text = train_text;
    TfKernels *k = tf_kernels_new(TF_BACKEND_CPU, 2, &err);
    REQUIRE(k);
    FusionModel *m = load(k, llama, &fc);
    perturb(m, 0.05f);
    FusionBatch *b = fixture(&fc);
    char path[4096];
    REQUIRE(tf_mkdir_p(out, &err) == 0);
    snprintf(path, sizeof path, "%s/trainable.safetensors", out);
    REQUIRE(fusion_save_trainable(m, path, &err) == 0);
    snprintf(path, sizeof path, "%s/batch.safetensors", out);
    REQUIRE(fusion_batch_save(b, path, &err) == 0);
    /* the file reads back to the same batch */
    FusionBatch *rb = fusion_batch_load(path, &err);
    REQUIRE(rb && rb->B == b->B && rb->T == b->T && rb->n_images == b->n_images);
    size_t N = (size_t)b->B * b->T;
    CHECK(!memcmp(rb->tokens, b->tokens, N * 4) && !memcmp(rb->lo, b->lo, N * 4) && !memcmp(rb->hi, b->hi, N * 4) &&
          !memcmp(rb->targets, b->targets, N * 4) && !memcmp(rb->modality, b->modality, N) &&
          !memcmp(rb->x_t, b->x_t, pred_numel(b) * 4) && !memcmp(rb->eps, b->eps, pred_numel(b) * 4) &&
          !memcmp(rb->images, b->images, (size_t)b->n_images * sizeof *b->images) &&
          !memcmp(rb->timestep, b->timestep, (size_t)b->n_images * 4));
    fusion_batch_free(rb);
    FusionLosses l;
    if (fusion_forward_backward(m, b, 1.0f, &l, &err) != 0) {
        fprintf(stderr, "forward_backward: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "losses: lm %.9g (%ld tokens), diffusion %.9g (%d images), total %.9g\n", l.lm, l.lm_tokens,
            l.diffusion, l.images, l.total);
    TfSafetensorsWriter *w = tf_safetensors_writer_new();
    const int64_t one = 1;
    float lm = (float)l.lm, df = (float)l.diffusion;
    /* the losses in double as two floats (hi + lo) so 1e-5 is not limited by storage */
    float lm_lo = (float)(l.lm - lm), df_lo = (float)(l.diffusion - df);
    REQUIRE(tf_safetensors_writer_add_f32(w, "loss_lm", TF_DTYPE_F32, 1, &one, &lm, 1, &err) == 0);
    REQUIRE(tf_safetensors_writer_add_f32(w, "loss_lm_lo", TF_DTYPE_F32, 1, &one, &lm_lo, 1, &err) == 0);
    REQUIRE(tf_safetensors_writer_add_f32(w, "loss_diffusion", TF_DTYPE_F32, 1, &one, &df, 1, &err) == 0);
    REQUIRE(tf_safetensors_writer_add_f32(w, "loss_diffusion_lo", TF_DTYPE_F32, 1, &one, &df_lo, 1, &err) == 0);
    for (size_t i = 0; i < fusion_tensor_count(m); i++) {
        const FusionTensor *t = fusion_tensor_at(m, i);
        char name[256];
        snprintf(name, sizeof name, "grad.%s", t->name);
        REQUIRE(tf_safetensors_writer_add_f32(w, name, TF_DTYPE_F32, t->ndim, t->shape, t->grad, t->numel, &err) ==
                0);
    }
    snprintf(path, sizeof path, "%s/result.safetensors", out);
    REQUIRE(tf_safetensors_writer_write(w, path, &err) == 0);
    tf_safetensors_writer_free(w);
    fusion_batch_free(b);
    fusion_model_free(m);
    tf_kernels_free(k);
    return 0;
}

/* The schedule the steps mode and its twin share. */
#define STEPS_PEAK 1e-3
#define STEPS_FLOOR 1e-4
#define STEPS_WARMUP 2

static int steps(const char *llama, const char *adapter, const char *out, int n)
{
    TfError err = {{0}};
    FusionConfig fc;
    FusionAdapter ad;
    REQUIRE(fusion_adapter_parse(adapter, &ad, &err) == 0 && n >= 1 && n <= 1000);
    small_config(&fc, ad);
    TfKernels *k = tf_kernels_new(TF_BACKEND_CPU, 2, &err);
    REQUIRE(k);
    FusionModel *m = load(k, llama, &fc);
    perturb(m, 0.05f);
    FusionBatch *b = fixture(&fc);
    char path[4096];
    REQUIRE(tf_mkdir_p(out, &err) == 0);
    snprintf(path, sizeof path, "%s/trainable.safetensors", out);
    REQUIRE(fusion_save_trainable(m, path, &err) == 0);
    snprintf(path, sizeof path, "%s/batch.safetensors", out);
    REQUIRE(fusion_batch_save(b, path, &err) == 0);
    TrainOptim o;
    size_t np = 0;
    TrainParam *params = train_params_of(m, &np, &err);
    REQUIRE(params && train_optim_init(&o, k, fusion_param_count(m), &err) == 0);
    o.image = (TrainSchedule){.peak = STEPS_PEAK, .floor = STEPS_FLOOR, .warmup = STEPS_WARMUP, .total = n};
    float *lm = malloc(4 * (size_t)n * sizeof *lm);
    REQUIRE(lm);
    float *lm_lo = lm + n, *df = lm + 2 * n, *df_lo = lm + 3 * n;
    float *gn = malloc((size_t)n * sizeof *gn);
    REQUIRE(gn);
    for (int s = 0; s < n; s++) {
        FusionLosses l;
        double norm = 0, lr = 0;
        if (fusion_zero_grad(m, &err) || fusion_forward_backward(m, b, 1.0f, &l, &err) ||
            train_optim_step(&o, params, np, fusion_grads(m), &norm, &lr, &err)) {
            fprintf(stderr, "step %d: %s\n", s + 1, err.msg);
            return 1;
        }
        lm[s] = (float)l.lm, lm_lo[s] = (float)(l.lm - lm[s]);
        df[s] = (float)l.diffusion, df_lo[s] = (float)(l.diffusion - df[s]);
        gn[s] = (float)norm;
        fprintf(stderr, "step %d: lm %.9g diffusion %.9g grad norm %.6g lr %.6g\n", s + 1, l.lm, l.diffusion, norm, lr);
    }
    TfSafetensorsWriter *w = tf_safetensors_writer_new();
    const int64_t shape = n;
    REQUIRE(w && tf_safetensors_writer_add_f32(w, "loss_lm", TF_DTYPE_F32, 1, &shape, lm, n, &err) == 0 &&
            tf_safetensors_writer_add_f32(w, "loss_lm_lo", TF_DTYPE_F32, 1, &shape, lm_lo, n, &err) == 0 &&
            tf_safetensors_writer_add_f32(w, "loss_diffusion", TF_DTYPE_F32, 1, &shape, df, n, &err) == 0 &&
            tf_safetensors_writer_add_f32(w, "loss_diffusion_lo", TF_DTYPE_F32, 1, &shape, df_lo, n, &err) == 0 &&
            tf_safetensors_writer_add_f32(w, "grad_norm", TF_DTYPE_F32, 1, &shape, gn, n, &err) == 0);
    snprintf(path, sizeof path, "%s/steps.safetensors", out);
    REQUIRE(tf_safetensors_writer_write(w, path, &err) == 0);
    tf_safetensors_writer_free(w);
    snprintf(path, sizeof path, "%s/final.safetensors", out);
    REQUIRE(fusion_save_trainable(m, path, &err) == 0);
    free(lm);
    free(gn);
    free(params);
    train_optim_deinit(&o);
    fusion_batch_free(b);
    fusion_model_free(m);
    tf_kernels_free(k);
    return 0;
}

/* ---- checks ------------------------------------------------------------------------ */

static void check_mask(FusionModel *m, const FusionConfig *fc)
{
    TfError err = {{0}};
    FusionBatch *b = fixture(fc);
    const int P = fusion_config_patches(fc);
    const size_t L = b->latent_numel, np = pred_numel(b);
    float *p0 = malloc(np * sizeof *p0), *p1 = malloc(np * sizeof *p1);
    REQUIRE(p0 && p1);
    FusionLosses l0, l1;
    REQUIRE(fusion_forward(m, b, &l0, &err) == 0 && fusion_prediction(m, p0, np, &err) == 0);

    /* 1. text after image 0 (row 0, positions 24..28) changes: image 0's
     * prediction is bit-identical (it sees nothing after its span) */
    int e0 = b->images[0].start + P + 1; /* after EOI */
    int32_t saved = b->tokens[e0 + 2];
    b->tokens[e0 + 2] = (saved + 17) % 128000;
    REQUIRE(fusion_forward(m, b, &l1, &err) == 0 && fusion_prediction(m, p1, np, &err) == 0);
    CHECK(memcmp(p0, p1, L * sizeof *p0) == 0);
    CHECK(l1.lm != l0.lm); /* and the text loss does see the change */
    b->tokens[e0 + 2] = saved;

    /* 2. image 2 (end of row 1) changes: image 1 of the same row and row 0
     * are unchanged; image 2 itself changes */
    for (size_t j = 0; j < L; j++)
        b->x_t[2 * L + j] += 0.5f;
    REQUIRE(fusion_forward(m, b, &l1, &err) == 0 && fusion_prediction(m, p1, np, &err) == 0);
    CHECK(memcmp(p0, p1, 2 * L * sizeof *p0) == 0);
    CHECK(memcmp(p0 + 2 * L, p1 + 2 * L, L * sizeof *p0) != 0);
    for (size_t j = 0; j < L; j++)
        b->x_t[2 * L + j] -= 0.5f;

    /* 3. an image sees its whole span: with the linear adapter the input
     * of one patch reaches the prediction of every other patch of that
     * image only through attention, both ways (first <-> last patch) */
    if (fc->adapter == FUSION_ADAPTER_LINEAR) {
        const int p = fc->patch, W = fc->latent_w, Hh = fc->latent_h;
        REQUIRE(fusion_forward(m, b, &l0, &err) == 0 && fusion_prediction(m, p0, np, &err) == 0);
        /* perturb only the last patch of image 1 (rows/cols H-p..H-1) */
        for (int c = 0; c < fc->latent_c; c++)
            for (int y = Hh - p; y < Hh; y++)
                for (int x = W - p; x < W; x++)
                    b->x_t[L + ((size_t)c * Hh + y) * W + x] += 1.0f;
        REQUIRE(fusion_forward(m, b, &l1, &err) == 0 && fusion_prediction(m, p1, np, &err) == 0);
        int first_changed = 0;
        for (int c = 0; c < fc->latent_c; c++)
            for (int y = 0; y < p; y++)
                for (int x = 0; x < p; x++) {
                    size_t o = L + ((size_t)c * Hh + y) * W + x;
                    first_changed |= p0[o] != p1[o];
                }
        CHECK(first_changed);
        CHECK(memcmp(p0, p1, L * sizeof *p0) == 0); /* the other row's image is untouched */
    }

    /* 4. text never sees later positions: a batch whose only targets are
     * in row 0 before image 0; changing the image, the later text and the
     * other documents leaves the loss bit-identical */
    FusionBatch *c = fixture(fc);
    for (int n = 0; n < 2 * T_LEN; n++)
        if (n >= b->images[0].start - 1)
            c->targets[n] = -1;
    FusionLosses a0, a1;
    REQUIRE(fusion_forward(m, c, &a0, &err) == 0);
    CHECK(a0.lm_tokens == 5);
    for (size_t j = 0; j < pred_numel(c); j++)
        c->x_t[j] += 1.0f;
    for (int n = c->images[0].start + P + 2; n < T_LEN; n++)
        if (c->modality[n] == FUSION_TEXT)
            c->tokens[n] = (c->tokens[n] + 5) % 128000;
    for (int i = 0; i < c->n_images; i++)
        c->timestep[i] = 123.0f;
    REQUIRE(fusion_forward(m, c, &a1, &err) == 0);
    CHECK(a0.lm == a1.lm);
    CHECK(a0.diffusion != a1.diffusion);

    /* 5. text after an image sees it: targets only after image 1 in row 1 */
    FusionBatch *d = fixture(fc);
    for (int n = 0; n < 2 * T_LEN; n++)
        if (n < T_LEN || n < T_LEN + d->images[1].start + P)
            d->targets[n] = -1;
    REQUIRE(fusion_forward(m, d, &a0, &err) == 0);
    CHECK(a0.lm_tokens > 0);
    for (size_t j = 0; j < L; j++)
        d->x_t[L + j] += 1.0f;
    REQUIRE(fusion_forward(m, d, &a1, &err) == 0);
    CHECK(a0.lm != a1.lm);
    fusion_batch_free(d);
    fusion_batch_free(c);
    fusion_batch_free(b);
    free(p0);
    free(p1);
}

static void check_text_frozen(FusionModel *m, const char *tmpdir)
{
    TfError err = {{0}};
    const int n = 24, V = fusion_llama_config(m)->vocab;
    int32_t toks[24];
    for (int i = 0; i < n; i++)
        toks[i] = i == 0 ? BOS : (int32_t)(next_u32() % 128000);
    float *a = malloc((size_t)n * V * sizeof *a), *b = malloc((size_t)n * V * sizeof *b);
    REQUIRE(a && b);
    double la, lb;
    REQUIRE(fusion_text_logits(m, toks, n, a, &err) == 0 && fusion_text_loss(m, toks, n, &la, &err) == 0);
    /* train the image side a little (a plain step on the gradients) and
     * perturb everything trainable */
    FusionBatch *bt = fixture(fusion_config(m));
    FusionLosses l;
    REQUIRE(fusion_zero_grad(m, &err) == 0 && fusion_forward_backward(m, bt, 1.0f, &l, &err) == 0);
    float *p = fusion_params(m), *g = fusion_grads(m);
    for (size_t i = 0; i < fusion_param_count(m); i++)
        p[i] -= 0.1f * g[i];
    perturb(m, 0.1f);
    REQUIRE(fusion_text_logits(m, toks, n, b, &err) == 0 && fusion_text_loss(m, toks, n, &lb, &err) == 0);
    CHECK(memcmp(a, b, (size_t)n * V * sizeof *a) == 0);
    CHECK(la == lb && la > 0);
    /* the causal prefix: logits of the first 10 positions do not depend on
     * the later tokens */
    toks[15] = (toks[15] + 1) % 128000;
    REQUIRE(fusion_text_logits(m, toks, n, b, &err) == 0);
    CHECK(memcmp(a, b, (size_t)10 * V * sizeof *a) == 0);
    CHECK(memcmp(a, b, (size_t)n * V * sizeof *a) != 0);

    /* save / load of the trainable tensors round-trips bit for bit */
    char path[4096];
    snprintf(path, sizeof path, "%s/trainable_roundtrip.safetensors", tmpdir);
    size_t np = fusion_param_count(m);
    float *saved = malloc(np * sizeof *saved);
    REQUIRE(saved);
    memcpy(saved, p, np * sizeof *saved);
    REQUIRE(fusion_save_trainable(m, path, &err) == 0);
    perturb(m, 1.0f);
    CHECK(memcmp(saved, p, np * sizeof *saved) != 0);
    REQUIRE(fusion_load_trainable(m, path, &err) == 0);
    for (size_t i = 0; i < fusion_tensor_count(m); i++) { /* views only: the alignment gaps are not saved */
        const FusionTensor *t = fusion_tensor_at(m, i);
        CHECKF(memcmp(saved + t->offset, t->param, t->numel * sizeof *saved) == 0, "%s", t->name);
    }
    FusionConfig rc;
    CHECK(fusion_config_read(path, &rc, &err) == 0);
    CHECK(rc.adapter == fusion_config(m)->adapter && rc.latent_h == fusion_config(m)->latent_h &&
          rc.unet_groups == fusion_config(m)->unet_groups && rc.seed == fusion_config(m)->seed);
    free(saved);
    fusion_batch_free(bt);
    free(a);
    free(b);
}

static void check_losses_and_refusals(FusionModel *m)
{
    TfError err = {{0}};
    const FusionConfig *fc = fusion_config(m);
    FusionBatch *b = fixture(fc);
    FusionLosses a, c;
    REQUIRE(fusion_forward(m, b, &a, &err) == 0);
    REQUIRE(fusion_zero_grad(m, &err) == 0 && fusion_forward_backward(m, b, 1.0f, &c, &err) == 0);
    CHECK(a.lm == c.lm && a.diffusion == c.diffusion);
    CHECK(a.images == 3 && a.lm_tokens > 10);
    CHECK(fabs(a.total - (a.lm + 5.0 * a.diffusion)) < 1e-12);
    /* gradient accumulation: two half-scaled passes equal one full pass */
    size_t np = fusion_param_count(m);
    float *g1 = malloc(np * sizeof *g1);
    REQUIRE(g1);
    memcpy(g1, fusion_grads(m), np * sizeof *g1);
    REQUIRE(fusion_zero_grad(m, &err) == 0 && fusion_forward_backward(m, b, 0.5f, &c, &err) == 0 &&
            fusion_forward_backward(m, b, 0.5f, &c, &err) == 0);
    double worst = 0, gmax = 0;
    for (size_t i = 0; i < np; i++) {
        double d = fabs((double)g1[i] - fusion_grads(m)[i]);
        if (d > worst)
            worst = d;
        if (fabs(g1[i]) > gmax)
            gmax = fabs(g1[i]);
    }
    CHECKF(worst <= 1e-5 * gmax, "accumulated gradients differ by %g (largest %g)", worst, gmax);
    free(g1);
    /* every trainable tensor gets a gradient from this batch */
    for (size_t i = 0; i < fusion_tensor_count(m); i++) {
        const FusionTensor *t = fusion_tensor_at(m, i);
        double s = 0;
        for (size_t j = 0; j < t->numel; j++)
            s += fabs(t->grad[j]);
        CHECKF(s > 0, "%s has no gradient", t->name);
    }
    /* refusals */
    int32_t keep = b->tokens[3];
    b->tokens[3] = 200000;
    CHECK(fusion_forward(m, b, &a, &err) != 0 && strstr(err.msg, "vocabulary"));
    b->tokens[3] = keep;
    b->modality[b->images[0].start + 3] = FUSION_TEXT;
    CHECK(fusion_forward(m, b, &a, &err) != 0 && strstr(err.msg, "image"));
    b->modality[b->images[0].start + 3] = FUSION_IMAGE;
    int32_t hk = b->hi[5];
    b->hi[5] = 40;
    CHECK(fusion_forward(m, b, &a, &err) != 0 && strstr(err.msg, "mask"));
    b->hi[5] = hk;
    int ip = b->images[0].start + 2; /* an image position seeing past its span */
    b->hi[ip] += 1;
    CHECK(fusion_forward(m, b, &a, &err) != 0 && strstr(err.msg, "end of its span"));
    b->hi[ip] -= 1;
    b->lo[10] = 11; /* lo after the position */
    CHECK(fusion_forward(m, b, &a, &err) != 0 && strstr(err.msg, "mask"));
    b->lo[10] = 0;
    b->images[1].start -= 1; /* a slot that does not match the image run */
    CHECK(fusion_forward(m, b, &a, &err) != 0 && strstr(err.msg, "image"));
    b->images[1].start += 1;
    b->targets[b->images[0].start] = 5; /* a target at an image position */
    CHECK(fusion_forward(m, b, &a, &err) != 0 && strstr(err.msg, "target"));
    b->targets[b->images[0].start] = -1;
    b->timestep[0] = 1000.0f;
    CHECK(fusion_forward(m, b, &a, &err) != 0 && strstr(err.msg, "timestep"));
    b->timestep[0] = 1.0f;
    CHECK(fusion_forward(m, b, &a, &err) == 0);
    fusion_batch_free(b);
}

static void check_configs(const char *llama)
{
    TfError err = {{0}};
    LlamaConfig lc;
    REQUIRE(llama_config_load(llama, &lc, &err) == 0);
    CHECK(lc.hidden == 64 && lc.layers == 2 && lc.heads == 4 && lc.kv_heads == 2 && lc.head_dim == 16);
    CHECK(lc.vocab == 128256 && lc.rope_factor == 32 && lc.rope_original_max_position == 8192);
    FusionConfig fc;
    small_config(&fc, FUSION_ADAPTER_UNET);
    fc.patch = 3;
    TfKernels *k = tf_kernels_new(TF_BACKEND_CPU, 1, &err);
    REQUIRE(k);
    CHECK(fusion_model_new(k, llama, &fc, &err) == NULL && strstr(err.msg, "patch"));
    small_config(&fc, FUSION_ADAPTER_UNET);
    fc.unet_groups = 3;
    CHECK(fusion_model_new(k, llama, &fc, &err) == NULL && strstr(err.msg, "groups"));
    small_config(&fc, FUSION_ADAPTER_LINEAR);
    fc.boi_id = 200000;
    CHECK(fusion_model_new(k, llama, &fc, &err) == NULL && strstr(err.msg, "BOI"));
    CHECK(fusion_model_new(k, "/nonexistent", &fc, &err) == NULL && strstr(err.msg, "config.json"));
    CHECK(llama_config_layout("7b", &lc, &err) != 0);
    tf_kernels_free(k);
}

int main(int argc, char **argv)
{
    if ((argc == 5 || (argc == 6 && !strcmp(argv[5], "train_text"))) && !strcmp(argv[1], "dump"))
        return dump(argv[2], argv[3], argv[4], argc == 6) || test_main_end("test_trainer_model dump");
    if (argc == 6 && !strcmp(argv[1], "steps"))
        return steps(argv[2], argv[3], argv[4], atoi(argv[5])) || test_main_end("test_trainer_model steps");
    if (argc != 4 || strcmp(argv[1], "check")) {
        fprintf(stderr, "usage: test_trainer_model check LLAMA_DIR TMPDIR | dump LLAMA_DIR unet|linear OUT_DIR "
                        "[train_text] | steps LLAMA_DIR unet|linear OUT_DIR N\n");
        return 2;
    }
    TfError err = {{0}};
    check_configs(argv[2]);
    TfKernels *k = tf_kernels_new(TF_BACKEND_CPU, 2, &err);
    REQUIRE(k);
    for (int ad = 0; ad < 2; ad++) {
        FusionConfig fc;
        small_config(&fc, ad ? FUSION_ADAPTER_LINEAR : FUSION_ADAPTER_UNET);
        FusionModel *m = load(k, argv[2], &fc);
        perturb(m, 0.05f);
        check_losses_and_refusals(m);
        check_mask(m, &fc);
        check_text_frozen(m, argv[3]);
        fusion_model_free(m);
    }
    /* train_text: the text copy is trainable (and so no longer frozen) */
    FusionConfig fc;
    small_config(&fc, FUSION_ADAPTER_LINEAR);
    FusionModel *m0 = load(k, argv[2], &fc);
    fc.train_text = 1;
    FusionModel *m1 = load(k, argv[2], &fc);
    size_t ntext = 0;
    for (size_t i = 0; i < fusion_tensor_count(m0); i++)
        CHECK(!fusion_tensor_at(m0, i)->text);
    for (size_t i = 0; i < fusion_tensor_count(m1); i++)
        ntext += fusion_tensor_at(m1, i)->text;
    CHECK(ntext == 2 * 9 + 1 && fusion_tensor_find(m1, "model.layers.1.mlp.down_proj.weight")->text);
    const int V = fusion_llama_config(m0)->vocab;
    int32_t toks[6] = {BOS, 5, 77, 1000, 3, 9};
    float *a = malloc(6 * (size_t)V * sizeof *a), *b = malloc(6 * (size_t)V * sizeof *b);
    REQUIRE(a && b);
    REQUIRE(fusion_text_logits(m0, toks, 6, a, &err) == 0 && fusion_text_logits(m1, toks, 6, b, &err) == 0);
    CHECK(memcmp(a, b, 6 * (size_t)V * sizeof *a) == 0); /* the same start */
    perturb(m1, 0.05f);
    REQUIRE(fusion_text_logits(m1, toks, 6, b, &err) == 0);
    CHECK(memcmp(a, b, 6 * (size_t)V * sizeof *a) != 0); /* and then it moves */
    free(a);
    free(b);
    fusion_model_free(m0);
    fusion_model_free(m1);
    tf_kernels_free(k);
    return test_main_end("test_trainer_model");
}
