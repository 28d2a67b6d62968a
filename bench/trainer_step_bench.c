/* trainer_step_bench.c: times one training step of the LlamaFusion model
 * (trainer/, CPU kernels): fusion_zero_grad + fusion_forward_backward +
 * train_optim_step (AdamW with the global-norm clip), on a packed batch of
 * B rows of T positions built the way the data would pack it, and reports
 * the sgemm peak measured in the same process with the same threads and
 * the model's memory (fusion_memory). bench/trainer_vs_torch.py drives it
 * and runs the PyTorch twin on the files it writes (the batch and the
 * trainable weights before the first step).
 *
 *   trainer_step_bench --llama DIR --out DIR [--adapter unet|linear]
 *       [--batch 2] [--seq 1024] [--steps 3] [--threads 2]
 *     prints one JSON line: step seconds (each timed step), their split
 *     into forward+backward and optimizer, the losses, the batch's
 *     composition, the peak and the memory;
 *   trainer_step_bench --memory-table [--seq 4096]
 *     prints the per-GPU memory table of the 1b and 8b layouts (weights,
 *     gradients, AdamW state, activations with and without activation
 *     checkpointing) from llama_config_layout and fusion_count.
 *
 * Batch rows (T = 1024): [BOS caption63 BOI img256 EOI] [BOS BOI img256 EOI
 * caption63] [BOS caption63 BOI img256 EOI] [padding]: documents of 322
 * positions (caption-first, image-first, caption-first), 4x32x32 latents
 * at patch 2. Other T: as many such documents as fit, then padding. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "kernels.h"
#include "train_internal.h"
#include "trainer.h"
#include "trainer_internal.h"

#define BOS 128000
#define PAD 128001
#define CAPTION 63
#define MAX_STEPS 64

static uint64_t rng = 0x9e3779b97f4a7c15ull;

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

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int put_text(FusionBatch *b, int r, int at, int n, int tok)
{
    for (int i = 0; i < n; i++) {
        b->tokens[r * b->T + at + i] = tok >= 0 ? tok : (int32_t)(next_u32() % 128000);
        b->modality[r * b->T + at + i] = FUSION_TEXT;
    }
    return at + n;
}

static int put_image(FusionBatch *b, const FusionConfig *fc, int r, int at, int tmax)
{
    const int P = fusion_config_patches(fc);
    at = put_text(b, r, at, 1, fc->boi_id);
    int k = b->n_images++;
    b->images[k] = (FusionImageSlot){r, at};
    b->timestep[k] = (float)(next_u32() % (unsigned)tmax);
    for (size_t j = 0; j < b->latent_numel; j++) {
        b->eps[k * b->latent_numel + j] = next_normal();
        b->x_t[k * b->latent_numel + j] = next_normal();
    }
    for (int i = 0; i < P; i++) {
        b->tokens[r * b->T + at + i] = -1;
        b->modality[r * b->T + at + i] = FUSION_IMAGE;
    }
    return put_text(b, r, at + P, 1, fc->eoi_id);
}

/* The packed batch described at the top; NULL when out of memory or T
 * holds no document. */
static FusionBatch *make_batch(const FusionConfig *fc, int B, int T)
{
    const int P = fusion_config_patches(fc), doc = 1 + CAPTION + P + 2;
    const int per_row = T / doc;
    if (per_row < 1)
        return NULL;
    FusionBatch *b = fusion_batch_new(B, T, B * per_row, (size_t)fc->latent_c * fc->latent_h * fc->latent_w);
    if (!b)
        return NULL;
    for (int r = 0; r < B; r++) {
        int at = 0;
        for (int d = 0; d < per_row; d++) {
            const int start = at;
            at = put_text(b, r, at, 1, BOS);
            if (d % 3 == 1) { /* image-first: t <= 500 */
                at = put_image(b, fc, r, at, 500);
                at = put_text(b, r, at, CAPTION, -1);
            } else {
                at = put_text(b, r, at, CAPTION, -1);
                at = put_image(b, fc, r, at, 1000);
            }
            for (int i = start; i < at; i++)
                b->lo[r * T + i] = start;
        }
        const int pad = at;
        put_text(b, r, at, T - at, PAD);
        for (int i = pad; i < T; i++)
            b->lo[r * T + i] = pad;
    }
    fusion_batch_fill_hi(b);
    for (int n = 0; n < B * T; n++) {
        const int i = n % T;
        b->targets[n] = -1;
        if (b->modality[n] != FUSION_TEXT || i + 1 >= T || b->lo[n + 1] != b->lo[n] ||
            b->modality[n + 1] != FUSION_TEXT || b->tokens[n] == PAD)
            continue;
        const int32_t t = b->tokens[n + 1];
        if (t != fc->boi_id && t != fc->eoi_id)
            b->targets[n] = t;
    }
    return b;
}

static double gib(double bytes)
{
    return bytes / (1024.0 * 1024.0 * 1024.0);
}

/* Floats per position per layer the CPU model keeps from the forward for
 * the backward (trainer/model_run.c layer_forward: shared q, k, v, att,
 * lse, xm, o, the layer output; per modality the gathered rows, the norms,
 * the projections' outputs, the SwiGLU's g, u, h), and the gradient
 * buffers one layer's backward takes (layer_backward). */
static double layer_saved(const LlamaConfig *c)
{
    const double D = c->hidden, Q = (double)c->heads * c->head_dim, KV = (double)c->kv_heads * c->head_dim,
                 I = c->intermediate;
    return 9 * D + 4 * Q + 4 * KV + 3 * I + c->heads + 2;
}

static double layer_backward_ws(const LlamaConfig *c)
{
    const double D = c->hidden, Q = (double)c->heads * c->head_dim, KV = (double)c->kv_heads * c->head_dim,
                 I = c->intermediate;
    return 9 * D + 4 * Q + 4 * KV + 3 * I;
}

static int memory_table(int seq)
{
    static const char *const layouts[] = {"1b", "8b"};
    TfError err = {{0}};
    FusionConfig fc;
    fusion_config_default(&fc);
    const int P = fusion_config_patches(&fc), doc = 1 + CAPTION + P + 2;
    const double images = (double)(seq / doc);
    printf("Per GPU, micro-batch 1 of seq %d (%d documents of caption %d + one %dx%dx%d latent at patch %d = %d "
           "positions), %s adapter at unet_ch %d,%d.\n\n",
           seq, seq / doc, CAPTION, fc.latent_c, fc.latent_h, fc.latent_w, fc.patch, P,
           fusion_adapter_name(fc.adapter), fc.unet_ch[0], fc.unet_ch[1]);
    printf("| | %s | %s |\n|---|---|---|\n", "1B (Llama-3.2-1B)", "8B (Llama-3-8B)");
    double rows[2][12], per_layer[2];
    for (int li = 0; li < 2; li++) {
        LlamaConfig c;
        FusionCounts n;
        if (llama_config_layout(layouts[li], &c, &err) || fusion_count(&c, &fc, &n, &err)) {
            fprintf(stderr, "trainer_step_bench: %s\n", err.msg);
            return 1;
        }
        const double text = (double)llama_param_count(&c), tr = (double)n.trainable, N = seq, D = c.hidden;
        double *r = rows[li];
        per_layer[li] = layer_saved(&c);
        r[0] = text;
        r[1] = tr;
        r[2] = text * 2;          /* frozen text weights, bf16 */
        r[3] = tr * 4;            /* trainable fp32 */
        r[4] = tr * 4;            /* gradients fp32 */
        r[5] = tr * 8;            /* AdamW m, v fp32 */
        /* activations, fp32 as the CPU model keeps them: every layer's saved
         * set + one layer's backward buffers + the stream, final norms and
         * the head's input gradient (5 N D) + U-Net maps (about 40 maps of
         * c0 x H x W per image, counted from adapter.c, rounded up). */
        const double extra = 5 * N * D + images * 40.0 * fc.unet_ch[0] * fc.latent_h * fc.latent_w;
        r[6] = 4 * (N * c.layers * layer_saved(&c) + N * layer_backward_ws(&c) + extra);
        /* activation checkpointing per layer: the layer inputs (N D each),
         * one layer recomputed (its saved set) and its backward buffers */
        r[7] = 4 * (N * c.layers * D + N * layer_saved(&c) + N * layer_backward_ws(&c) + extra);
        r[8] = r[6] / 2, r[9] = r[7] / 2; /* the same in bf16 */
        r[10] = r[2] + r[3] + r[4] + r[5] + r[6];
        r[11] = r[2] + r[3] + r[4] + r[5] + r[9];
    }
    printf("| text parameters (frozen) | %.3f G | %.3f G |\n", rows[0][0] / 1e9, rows[1][0] / 1e9);
    printf("| trainable parameters (image layers, adapters, BOI/EOI rows) | %.3f G | %.3f G |\n", rows[0][1] / 1e9,
           rows[1][1] / 1e9);
    static const char *const what[] = {
        NULL, NULL, "frozen text weights, bf16", "trainable weights, fp32", "gradients, fp32",
        "AdamW m and v, fp32", "activations, fp32, all saved (as the CPU model)",
        "activations, fp32, checkpointing every layer", "activations, bf16, all saved",
        "activations, bf16, checkpointing every layer", "total, fp32 activations all saved",
        "total, bf16 activations with checkpointing"};
    for (int i = 2; i < 12; i++)
        printf("| %s | %.2f GiB | %.2f GiB |\n", what[i], gib(rows[0][i]), gib(rows[1][i]));
    printf("\nfloats kept per position per layer: %.0f (1b), %.0f (8b) all saved; D = 2048, 4096 checkpointed\n",
           per_layer[0], per_layer[1]);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: trainer_step_bench --llama DIR --out DIR [--adapter unet|linear] [--batch 2] [--seq 1024]\n"
               "                          [--steps 3] [--threads 2]\n"
               "       trainer_step_bench --memory-table [--seq 4096]\n"
               "Times zero_grad + forward/backward + AdamW on a packed batch (prints one JSON line) and writes\n"
               "OUT/batch.safetensors and OUT/trainable.safetensors (the weights before the first step) for\n"
               "bench/trainer_vs_torch.py; --memory-table prints the 1b/8b per-GPU memory table.\n");
}

int main(int argc, char **argv)
{
    static const struct option LONG[] = {
        {"llama", required_argument, 0, 'l'}, {"out", required_argument, 0, 'o'},
        {"adapter", required_argument, 0, 'a'}, {"batch", required_argument, 0, 'b'},
        {"seq", required_argument, 0, 's'},   {"steps", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'}, {"memory-table", no_argument, 0, 'm'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    const char *llama = NULL, *out = NULL;
    long B = 2, T = -1, steps = 3, threads = 2;
    int table = 0;
    TfError err = {{0}};
    FusionConfig fc;
    fusion_config_default(&fc);
    TfOpts o = {.prog = "trainer_step_bench", .argc = argc, .argv = argv, .shortopts = "h", .longopts = LONG};
    int c;
    while ((c = tf_opts_next(&o)) != -1) {
        int bad = 0;
        switch (c) {
        case 'l': llama = o.arg; break;
        case 'o': out = o.arg; break;
        case 'a': bad = fusion_adapter_parse(o.arg, &fc.adapter, &err); break;
        case 'b': bad = tf_parse_long("--batch", o.arg, 1, 64, &B, &err); break;
        case 's': bad = tf_parse_long("--seq", o.arg, 16, 1 << 20, &T, &err); break;
        case 'n': bad = tf_parse_long("--steps", o.arg, 1, MAX_STEPS, &steps, &err); break;
        case 't': bad = tf_parse_long("--threads", o.arg, 0, 1024, &threads, &err); break;
        case 'm': table = 1; break;
        case 'h': usage(stdout); return TF_EXIT_OK;
        default: usage(stderr); return TF_EXIT_USAGE;
        }
        if (bad) {
            fprintf(stderr, "trainer_step_bench: %s\n", err.msg);
            return TF_EXIT_USAGE;
        }
    }
    if (table)
        return memory_table(T > 0 ? (int)T : 4096);
    if (!llama || !out || o.first_operand != argc) {
        usage(stderr);
        return TF_EXIT_USAGE;
    }
    if (T < 0)
        T = 1024;
    int rc = TF_EXIT_FAIL;
    TfKernels *k = tf_kernels_new(TF_BACKEND_CPU, (int)threads, &err);
    FusionModel *m = k ? fusion_model_new(k, llama, &fc, &err) : NULL;
    FusionBatch *b = m ? make_batch(&fc, (int)B, (int)T) : NULL;
    TrainParam *params = NULL;
    size_t np = 0;
    TrainOptim opt = {0};
    char path[4096];
    if (!m)
        goto fail;
    if (!b) {
        tf_fail(&err, "out of memory, or --seq %ld holds no document", T);
        goto fail;
    }
    if (tf_mkdir_p(out, &err) ||
        (snprintf(path, sizeof path, "%s/batch.safetensors", out), fusion_batch_save(b, path, &err)) ||
        (snprintf(path, sizeof path, "%s/trainable.safetensors", out), fusion_save_trainable(m, path, &err)) ||
        !(params = train_params_of(m, &np, &err)) || train_optim_init(&opt, k, fusion_param_count(m), &err))
        goto fail;
    /* constant rate (no warmup): every step moves the weights the same way */
    opt.image = (TrainSchedule){.peak = 1e-4, .floor = 1e-4, .warmup = 0, .total = 1};
    const double peak = tf_kernels_sgemm_peak(k, 2048, 3);
    double step_s[MAX_STEPS + 1], fb_s[MAX_STEPS + 1], opt_s[MAX_STEPS + 1], cpu_s[MAX_STEPS + 1];
    FusionLosses l0 = {0}, l;
    double gnorm = 0;
    for (long s = 0; s <= steps; s++) { /* step 0 warms up */
        const double t0 = tf_now(), c0 = cpu_seconds();
        if (fusion_zero_grad(m, &err) || fusion_forward_backward(m, b, 1.0f, &l, &err) || tf_kernels_sync(k, &err))
            goto fail;
        const double t1 = tf_now();
        if (train_optim_step(&opt, params, np, fusion_grads(m), &gnorm, NULL, &err) || tf_kernels_sync(k, &err))
            goto fail;
        const double t2 = tf_now();
        step_s[s] = t2 - t0, fb_s[s] = t1 - t0, opt_s[s] = t2 - t1, cpu_s[s] = cpu_seconds() - c0;
        if (s == 0)
            l0 = l;
    }
    FusionMemory mem;
    fusion_memory(m, &mem);
    long text_pos = 0;
    for (long n = 0; n < B * T; n++)
        text_pos += b->modality[n] == FUSION_TEXT;
    printf("{\"adapter\": \"%s\", \"B\": %ld, \"T\": %ld, \"threads\": %d, \"images\": %d, \"text_positions\": %ld, "
           "\"lm_tokens\": %ld, \"trainable\": %zu, \"frozen\": %zu, \"sgemm_peak_gflops\": %.1f, "
           "\"loss_lm\": %.9g, \"loss_diffusion\": %.9g, \"grad_norm_last\": %.6g, "
           "\"memory\": {\"frozen\": %zu, \"params\": %zu, \"grads\": %zu, \"adamw\": %zu, \"activations\": %zu}, "
           "\"step_s\": [",
           fusion_adapter_name(fc.adapter), B, T, tf_kernels_threads(k), b->n_images, text_pos, l0.lm_tokens,
           fusion_param_count(m), fusion_frozen_count(m), peak, l0.lm, l0.diffusion, gnorm, mem.frozen, mem.params,
           mem.grads, 2 * fusion_param_count(m) * sizeof(float), mem.activations);
#define LIST(a)                                              \
    for (long s = 1; s <= steps; s++)                        \
        printf("%s%.5f", s > 1 ? ", " : "", a[s]);
    LIST(step_s)
    printf("], \"fwd_bwd_s\": [");
    LIST(fb_s)
    printf("], \"optim_s\": [");
    LIST(opt_s)
    printf("], \"cpu_s\": [");
    LIST(cpu_s)
#undef LIST
    printf("]}\n");
    rc = TF_EXIT_OK;
    goto done;
fail:
    fprintf(stderr, "trainer_step_bench: %s\n", err.msg);
done:
    train_optim_deinit(&opt);
    free(params);
    fusion_batch_free(b);
    fusion_model_free(m);
    tf_kernels_free(k);
    return rc;
}
