/* vae_bench.c: times the VAE encoder (preprocess/vae.c on the CPU kernels)
 * on random [-1,1] images and reports images/s, the direct-convolution
 * GFLOP/s that rate implies, and OpenBLAS's sgemm peak measured in the same
 * process with the same threads. Driven by vae_encode_vs_torch.py, which
 * runs the PyTorch twin beside it; prints one JSON line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "kernels.h"
#include "preprocess.h"

/* Multiply-adds of one encoder pass at HxW, counted as a direct
 * convolution would do them (Winograd does fewer; the figure is what the
 * work is worth, the usual convention). */
static double encoder_flops(const VaeConfig *c, int H, int W)
{
    double f = 0;
    const int *boc = c->block_out_channels, nb = c->nblocks;
    double hw = (double)H * W;
#define CONV(cin, cout, r, area) (f += 2.0 * (cin) * (cout) * (r) * (r) * (area))
    CONV(3, boc[0], 3, hw);
    int out = boc[0];
    for (int i = 0; i < nb; i++) {
        int in = out;
        out = boc[i];
        for (int j = 0; j < c->layers_per_block; j++) {
            int ci = j == 0 ? in : out;
            CONV(ci, out, 3, hw);
            CONV(out, out, 3, hw);
            if (ci != out)
                CONV(ci, out, 1, hw);
        }
        if (i != nb - 1) {
            hw /= 4;
            CONV(out, out, 3, hw);
        }
    }
    int C = boc[nb - 1];
    CONV(C, C, 3, hw); /* mid resnets */
    CONV(C, C, 3, hw);
    CONV(C, C, 3, hw);
    CONV(C, C, 3, hw);
    if (c->mid_block_add_attention) {
        CONV(C, C, 1, hw);
        CONV(C, C, 1, hw);
        CONV(C, C, 1, hw);
        CONV(C, C, 1, hw);
        f += 2.0 * 2.0 * hw * hw * C; /* q^T k and p v */
    }
    CONV(C, 2 * c->latent_channels, 3, hw);
    if (c->use_quant_conv)
        CONV(2 * c->latent_channels, 2 * c->latent_channels, 1, hw);
#undef CONV
    return f;
}

/* CPU seconds (user + system) this process has used: under load from
 * other processes, wall time stretches but CPU time much less. */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int batch = 8, threads = 2, reps = 1, size = 256, wino = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--vae") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-winograd")) wino = 0;
        else {
            fprintf(stderr, "usage: vae_bench --vae DIR [--batch 8] [--threads 2] [--reps 1] [--size 256] "
                            "[--no-winograd]\n");
            return 2;
        }
    }
    if (!dir || batch < 1 || threads < 1 || reps < 1 || size < 8) {
        fprintf(stderr, "vae_bench: --vae DIR is required; numbers must be positive\n");
        return 2;
    }
    TfError err = {{0}};
    Vae *vae = vae_load(dir, VAE_LOAD_ENCODER, &err);
    TfKernels *k = vae ? tf_kernels_new(TF_BACKEND_CPU, threads, &err) : NULL;
    if (!vae || !k) {
        fprintf(stderr, "vae_bench: %s\n", err.msg);
        return 1;
    }
    tf_kernels_set_winograd(k, wino);
    const VaeConfig *cfg = vae_config(vae);
    const int f = vae_downsample_factor(cfg);
    size_t nimg = (size_t)batch * 3 * size * size, nlat = (size_t)batch * cfg->latent_channels * (size / f) * (size / f);
    float *img = malloc(nimg * sizeof *img), *mean = malloc(nlat * sizeof *mean), *lv = malloc(nlat * sizeof *lv);
    uint64_t s = 1;
    for (size_t i = 0; i < nimg; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        img[i] = (float)((s >> 40) & 0xffff) / 32767.5f - 1.0f;
    }
    double peak = tf_kernels_sgemm_peak(k, 2048, 3);
    if (vae_encode(vae, k, img, 1, size, size, mean, lv, NULL, &err)) { /* warm-up */
        fprintf(stderr, "vae_bench: %s\n", err.msg);
        return 1;
    }
    double best = 1e30, best_cpu = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = tf_now(), c0 = cpu_seconds();
        if (vae_encode(vae, k, img, batch, size, size, mean, lv, NULL, &err)) {
            fprintf(stderr, "vae_bench: %s\n", err.msg);
            return 1;
        }
        t = tf_now() - t;
        double c = cpu_seconds() - c0;
        best = t < best ? t : best;
        best_cpu = c < best_cpu ? c : best_cpu;
    }
    double flops = encoder_flops(cfg, size, size);
    printf("{\"images_per_s\": %.4f, \"images_per_cpu_s\": %.4f, \"seconds\": %.3f, \"batch\": %d, \"threads\": %d, \"winograd\": %d, "
           "\"gflop_per_image\": %.2f, \"gflops\": %.1f, \"sgemm_peak_gflops\": %.1f, \"mean0\": %.6f}\n",
           batch / best, batch / best_cpu, best, batch, threads, wino, flops / 1e9, flops * batch / best / 1e9, peak, mean[0]);
    free(img);
    free(mean);
    free(lv);
    tf_kernels_free(k);
    vae_free(vae);
    return 0;
}
