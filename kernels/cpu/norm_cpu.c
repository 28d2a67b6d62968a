/* norm_cpu.c: RMSNorm, LayerNorm and GroupNorm on the CPU, forward and
 * backward.
 *
 * Statistics are computed in double (two passes: mean, then centred
 * squares), stored fp32. Weight gradients sum over rows: each of a fixed
 * number of row chunks (cpu_chunk_size: depends on N only) writes its
 * partial sums, which are then added in chunk order, so the result is the
 * same on any thread count. */
#include "cpu.h"

#include <string.h>

#define PAR _Pragma("omp parallel for num_threads(k->threads) schedule(static)")

/* The weight as fp32: w itself, or converted into the conversion slot. */
static const float *weights_f32(TfKernels *k, TfBuf w, int D, TfError *err)
{
    if (w.dtype == TF_DTYPE_F32)
        return w.data;
    float *f = cpu_scratch(k, CPU_SCRATCH_CONVERT, (size_t)D, err);
    if (f)
        cpu_to_f32(f, w, 0, (size_t)D);
    return f;
}

/* Row chunks for a reduction over N rows. */
typedef struct Chunks {
    int size, count;
} Chunks;

static Chunks row_chunks(int N)
{
    Chunks c;
    c.size = (int)cpu_chunk_size((size_t)N, 8);
    c.count = (N + c.size - 1) / c.size;
    return c;
}

/* dst[j] += sum over chunks of part[c][j], in chunk order.
 *   part (count, D) */
static void reduce_chunks(TfKernels *k, float *dst, const float *part, int count, int D)
{
    PAR for (int j = 0; j < D; j++)
    {
        double acc = 0.0;
        for (int c = 0; c < count; c++)
            acc += part[(size_t)c * D + j];
        dst[j] += (float)acc;
    }
}

/* ---- RMSNorm ---- */

static int cpu_rms_norm(TfKernels *k, float *y, float *rstd, const float *x, TfBuf w, int N, int D, float eps,
                        TfError *err)
{
    const float *wf = weights_f32(k, w, D, err);
    if (!wf)
        return -1;
    PAR for (int n = 0; n < N; n++)
    {
        const float *xr = x + (size_t)n * D;
        float *yr = y + (size_t)n * D;
        double ss = 0.0;
        for (int j = 0; j < D; j++)
            ss += (double)xr[j] * xr[j];
        const float r = (float)(1.0 / sqrt(ss / D + eps));
        if (rstd)
            rstd[n] = r;
        for (int j = 0; j < D; j++)
            yr[j] = wf[j] * (xr[j] * r);
    }
    return 0;
}

/* y = w (x r), r = (mean x^2 + eps)^-1/2:
 * dx = r (w dy) - x r^3 / D sum_j (w dy x)_j;  dw += sum_n dy x r. */
static int cpu_rms_norm_backward(TfKernels *k, float *dx, float *dw, const float *dy, const float *x,
                                 const float *rstd, TfBuf w, int N, int D, TfError *err)
{
    const float *wf = weights_f32(k, w, D, err);
    if (!wf)
        return -1;
    const Chunks ch = row_chunks(N);
    float *part = NULL;
    if (dw && !(part = cpu_scratch(k, CPU_SCRATCH_MAIN, (size_t)ch.count * D, err)))
        return -1;
    PAR for (int c = 0; c < ch.count; c++)
    {
        float *pc = part ? part + (size_t)c * D : NULL;
        if (pc)
            memset(pc, 0, (size_t)D * sizeof *pc);
        const int n1 = (c + 1) * ch.size < N ? (c + 1) * ch.size : N;
        for (int n = c * ch.size; n < n1; n++) {
            const float *xr = x + (size_t)n * D, *gr = dy + (size_t)n * D;
            const float r = rstd[n];
            if (pc)
                for (int j = 0; j < D; j++)
                    pc[j] += gr[j] * xr[j] * r;
            if (!dx)
                continue;
            double dot = 0.0;
            for (int j = 0; j < D; j++)
                dot += (double)wf[j] * gr[j] * xr[j];
            const float coef = (float)(dot * r * r * r / D);
            float *dr = dx + (size_t)n * D;
            for (int j = 0; j < D; j++)
                dr[j] = r * (wf[j] * gr[j]) - xr[j] * coef;
        }
    }
    if (dw)
        reduce_chunks(k, dw, part, ch.count, D);
    return 0;
}

/* ---- LayerNorm ---- */

static int cpu_layer_norm(TfKernels *k, float *y, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int N, int D, float eps, TfError *err)
{
    (void)err;
    PAR for (int n = 0; n < N; n++)
    {
        const float *xr = x + (size_t)n * D;
        float *yr = y + (size_t)n * D;
        double s = 0.0;
        for (int j = 0; j < D; j++)
            s += xr[j];
        const double mu = s / D;
        double sq = 0.0;
        for (int j = 0; j < D; j++)
            sq += (xr[j] - mu) * (xr[j] - mu);
        const float r = (float)(1.0 / sqrt(sq / D + eps)), m = (float)mu;
        if (mean)
            mean[n] = m;
        if (rstd)
            rstd[n] = r;
        for (int j = 0; j < D; j++) {
            float v = (xr[j] - m) * r;
            yr[j] = v * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f);
        }
    }
    return 0;
}

/* xhat = (x - mean) r, g = dy w: dx = r (g - mean(g) - xhat mean(g xhat));
 * dw += sum dy xhat; db += sum dy. */
static int cpu_layer_norm_backward(TfKernels *k, float *dx, float *dw, float *db, const float *dy, const float *x,
                                   const float *mean, const float *rstd, const float *w, int N, int D, TfError *err)
{
    const Chunks ch = row_chunks(N);
    const int parts = (dw != NULL) + (db != NULL);
    float *part = NULL;
    if (parts && !(part = cpu_scratch(k, CPU_SCRATCH_MAIN, (size_t)parts * ch.count * D, err)))
        return -1;
    float *pw = dw ? part : NULL, *pb = db ? part + (dw ? (size_t)ch.count * D : 0) : NULL;
    PAR for (int c = 0; c < ch.count; c++)
    {
        float *pwc = pw ? pw + (size_t)c * D : NULL, *pbc = pb ? pb + (size_t)c * D : NULL;
        if (pwc)
            memset(pwc, 0, (size_t)D * sizeof *pwc);
        if (pbc)
            memset(pbc, 0, (size_t)D * sizeof *pbc);
        const int n1 = (c + 1) * ch.size < N ? (c + 1) * ch.size : N;
        for (int n = c * ch.size; n < n1; n++) {
            const float *xr = x + (size_t)n * D, *gr = dy + (size_t)n * D;
            const float m = mean[n], r = rstd[n];
            for (int j = 0; j < D; j++) {
                const float xh = (xr[j] - m) * r;
                if (pwc)
                    pwc[j] += gr[j] * xh;
                if (pbc)
                    pbc[j] += gr[j];
            }
            if (!dx)
                continue;
            double sg = 0.0, sgx = 0.0;
            for (int j = 0; j < D; j++) {
                const double g = (double)gr[j] * (w ? w[j] : 1.0f), xh = ((double)xr[j] - m) * r;
                sg += g;
                sgx += g * xh;
            }
            const float mg = (float)(sg / D), mgx = (float)(sgx / D);
            float *dr = dx + (size_t)n * D;
            for (int j = 0; j < D; j++) {
                const float g = gr[j] * (w ? w[j] : 1.0f), xh = (xr[j] - m) * r;
                dr[j] = r * (g - mg - xh * mgx);
            }
        }
    }
    if (dw)
        reduce_chunks(k, dw, pw, ch.count, D);
    if (db)
        reduce_chunks(k, db, pb, ch.count, D);
    return 0;
}

/* ---- GroupNorm ---- */

static int cpu_group_norm(TfKernels *k, float *y, float *mean_out, float *rstd_out, const float *x,
                          const float *gamma, const float *beta, int B, int C, size_t HW, int groups, float eps,
                          int fuse_silu, TfError *err)
{
    (void)err;
    const int cg = C / groups;
    const size_t n = (size_t)cg * HW;
#pragma omp parallel for num_threads(k->threads) schedule(dynamic, 1)
    for (int bg = 0; bg < B * groups; bg++) {
        int b = bg / groups, g = bg % groups;
        const float *xs = x + ((size_t)b * C + (size_t)g * cg) * HW;
        float *ys = y + ((size_t)b * C + (size_t)g * cg) * HW;
        /* Two passes in double: the mean first, then the centred squares,
         * so large offsets do not cancel. */
        double sum = 0.0;
        for (size_t i = 0; i < n; i++)
            sum += xs[i];
        double mean = sum / (double)n, sq = 0.0;
        for (size_t i = 0; i < n; i++) {
            double d = xs[i] - mean;
            sq += d * d;
        }
        float rstd = (float)(1.0 / sqrt(sq / (double)n + eps)), fm = (float)mean;
        if (mean_out)
            mean_out[bg] = fm;
        if (rstd_out)
            rstd_out[bg] = rstd;
        for (int c = 0; c < cg; c++) {
            int ch = g * cg + c;
            float a = (gamma ? gamma[ch] : 1.0f) * rstd, bb = (beta ? beta[ch] : 0.0f) - fm * a;
            const float *xc = xs + (size_t)c * HW;
            float *yc = ys + (size_t)c * HW;
            if (fuse_silu)
                for (size_t i = 0; i < HW; i++)
                    yc[i] = cpu_silu1(xc[i] * a + bb);
            else
                for (size_t i = 0; i < HW; i++)
                    yc[i] = xc[i] * a + bb;
        }
    }
    return 0;
}

/* Per (image, group) of n = C/groups * HW values: xhat = (x - mean) r,
 * g = dy gamma[c]: dx = r (g - mean(g) - xhat mean(g xhat)). dgamma[c] +=
 * sum dy xhat, dbeta[c] += sum dy, over images in order, per channel. */
static int cpu_group_norm_backward(TfKernels *k, float *dx, float *dgamma, float *dbeta, const float *dy,
                                   const float *x, const float *mean, const float *rstd, const float *gamma, int B,
                                   int C, size_t HW, int groups, TfError *err)
{
    (void)err;
    const int cg = C / groups;
    const size_t n = (size_t)cg * HW;
    if (dx) {
#pragma omp parallel for num_threads(k->threads) schedule(dynamic, 1)
        for (int bg = 0; bg < B * groups; bg++) {
            const int b = bg / groups, g = bg % groups;
            const size_t off = ((size_t)b * C + (size_t)g * cg) * HW;
            const float m = mean[bg], r = rstd[bg];
            double sg = 0.0, sgx = 0.0;
            for (int c = 0; c < cg; c++) {
                const float gm = gamma ? gamma[g * cg + c] : 1.0f;
                const float *xc = x + off + (size_t)c * HW, *dc = dy + off + (size_t)c * HW;
                for (size_t i = 0; i < HW; i++) {
                    const double gv = (double)dc[i] * gm;
                    sg += gv;
                    sgx += gv * (((double)xc[i] - m) * r);
                }
            }
            const float mg = (float)(sg / (double)n), mgx = (float)(sgx / (double)n);
            for (int c = 0; c < cg; c++) {
                const float gm = gamma ? gamma[g * cg + c] : 1.0f;
                const float *xc = x + off + (size_t)c * HW, *dc = dy + off + (size_t)c * HW;
                float *oc = dx + off + (size_t)c * HW;
                for (size_t i = 0; i < HW; i++)
                    oc[i] = r * (dc[i] * gm - mg - (xc[i] - m) * r * mgx);
            }
        }
    }
    if (dgamma || dbeta) {
        PAR for (int c = 0; c < C; c++)
        {
            const int g = c / cg;
            double sw = 0.0, sb = 0.0;
            for (int b = 0; b < B; b++) {
                const size_t off = ((size_t)b * C + c) * HW;
                const float m = mean[b * groups + g], r = rstd[b * groups + g];
                for (size_t i = 0; i < HW; i++) {
                    sw += (double)dy[off + i] * ((x[off + i] - m) * r);
                    sb += dy[off + i];
                }
            }
            if (dgamma)
                dgamma[c] += (float)sw;
            if (dbeta)
                dbeta[c] += (float)sb;
        }
    }
    return 0;
}

void cpu_register_norm(TfKernelsOps *ops)
{
    ops->rms_norm = cpu_rms_norm;
    ops->rms_norm_backward = cpu_rms_norm_backward;
    ops->layer_norm = cpu_layer_norm;
    ops->layer_norm_backward = cpu_layer_norm_backward;
    ops->group_norm = cpu_group_norm;
    ops->group_norm_backward = cpu_group_norm_backward;
}
