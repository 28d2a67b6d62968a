/* loss_cpu.c: the training losses on the CPU: cross-entropy fused with
 * the LM head, and the per-item mean squared error.
 *
 * Cross-entropy never holds more than a (64 rows x 1024 words) block of
 * logits per thread. The targeted rows are gathered into a compact block
 * (image positions carry no LM loss, and are most of a Transfusion
 * sequence). The vocabulary is walked once, a tile at a time (a bf16 head
 * is converted per tile); for each row chunk the tile's logits update an
 * online logsumexp (running max m, sum s) and, when gradients are wanted,
 * an accumulator A = sum_v exp(logit_v - m) w_v rescaled as m grows, as
 * FlashAttention does with its output. At the end dh = grad_scale (A / s -
 * w[target]): the softmax-weighted head rows minus the target's row, so
 * the forward and the backward share one pass over the head (two matrix
 * products, the least there can be). Each row belongs to one chunk and
 * tiles go in order, so results do not depend on the thread count. */
#include "cpu.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { RC = 64, VT = 1024 }; /* rows per chunk, vocabulary words per tile */

static int cpu_cross_entropy_lm_head(TfKernels *k, float *losses, double *mean_loss, float *dh, float *dw,
                                     const int32_t *w_rows, int R, const float *h, TfBuf w, const int32_t *targets,
                                     int N, int D, int V, float grad_scale, TfError *err)
{
    int nt_rows = 0;
    for (int n = 0; n < N; n++) {
        if (targets[n] >= V)
            return tf_fail(err, "cross_entropy_lm_head: target %d at row %d outside the vocabulary of %d",
                           targets[n], n, V);
        nt_rows += targets[n] >= 0;
    }
    for (int r = 0; r < R; r++) {
        if (w_rows[r] < 0 || w_rows[r] >= V)
            return tf_fail(err, "cross_entropy_lm_head: dw row %d (%d) outside the vocabulary of %d", r, w_rows[r],
                           V);
        for (int q = 0; q < r; q++)
            if (w_rows[q] == w_rows[r])
                return tf_fail(err, "cross_entropy_lm_head: dw row %d listed twice", w_rows[r]);
    }
    if (losses)
        memset(losses, 0, (size_t)N * sizeof *losses);
    if (dh)
        memset(dh, 0, (size_t)N * D * sizeof *dh);
    if (mean_loss)
        *mean_loss = 0.0;
    if (!nt_rows)
        return 0;

    const int M = nt_rows, nt = k->threads;
    const size_t MD = (size_t)M * D;
    /* Main slot: s, lse (M) doubles first (so they are aligned), then m,
     * tl (M), hc (M,D) the targeted rows, acc (M,D) when dh is wanted, and
     * the per-thread logit blocks (RC,VT). */
    const size_t nfloat = 6 * (size_t)M + MD * (dh ? 2 : 1) + (size_t)nt * RC * VT;
    float *mem = cpu_scratch(k, CPU_SCRATCH_MAIN, nfloat, err);
    int32_t *row_of = malloc((size_t)M * sizeof *row_of);
    if (!mem || !row_of) {
        free(row_of);
        return mem ? tf_fail(err, "cross_entropy_lm_head: out of memory") : -1;
    }
    double *s = (double *)mem, *lse = s + M;
    float *m = (float *)(lse + M), *tl = m + M, *hc = tl + M;
    float *acc = dh ? hc + MD : NULL, *logit_mem = hc + MD * (dh ? 2 : 1);
    for (int n = 0, i = 0; n < N; n++)
        if (targets[n] >= 0)
            row_of[i++] = n;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int i = 0; i < M; i++) {
        memcpy(hc + (size_t)i * D, h + (size_t)row_of[i] * D, (size_t)D * sizeof *hc);
        m[i] = -INFINITY;
        s[i] = 0.0;
        tl[i] = 0.0f;
    }
    if (acc)
        memset(acc, 0, MD * sizeof *acc);

    const int chunks = (M + RC - 1) / RC;
    float *wt = NULL;
    if (w.dtype != TF_DTYPE_F32 && !(wt = cpu_scratch(k, CPU_SCRATCH_CONVERT, (size_t)VT * D, err))) {
        free(row_of);
        return -1;
    }
    for (int v0 = 0; v0 < V; v0 += VT) {
        const int nv = V - v0 < VT ? V - v0 : VT;
        const float *wv;
        if (wt) {
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int r = 0; r < nv; r++)
                cpu_to_f32(wt + (size_t)r * D, w, (size_t)(v0 + r) * D, (size_t)D);
            wv = wt;
        } else {
            wv = (const float *)w.data + (size_t)v0 * D;
        }
#pragma omp parallel num_threads(nt)
        {
            float *lg = logit_mem + (size_t)omp_get_thread_num() * RC * VT;
#pragma omp for schedule(dynamic, 1)
            for (int c = 0; c < chunks; c++) {
                const int i0 = c * RC, nr = M - i0 < RC ? M - i0 : RC;
                cpu_gemm1(0, 1, nr, nv, D, 1.0f, hc + (size_t)i0 * D, D, wv, D, 0.0f, lg, nv);
                for (int i = 0; i < nr; i++) {
                    const int row = i0 + i, t = targets[row_of[row]];
                    float *l = lg + (size_t)i * nv;
                    if (t >= v0 && t < v0 + nv)
                        tl[row] = l[t - v0];
                    const float mx = cpu_row_max(l, nv, m[row]);
                    const float alpha = expf(m[row] - mx);
                    s[row] = s[row] * alpha + cpu_exp_sum(l, nv, mx);
                    m[row] = mx;
                    if (acc && alpha != 1.0f) {
                        float *a = acc + (size_t)row * D;
                        for (int d = 0; d < D; d++)
                            a[d] *= alpha;
                    }
                }
                if (acc) /* acc += exp(logits - m) w_tile */
                    cpu_gemm1(0, 0, nr, D, nv, 1.0f, lg, nv, wv, D, 1.0f, acc + (size_t)i0 * D, D);
            }
        }
    }

    double total = 0.0;
    for (int i = 0; i < M; i++) {
        lse[i] = m[i] + log(s[i]);
        const double loss = lse[i] - tl[i];
        total += loss;
        if (losses)
            losses[row_of[i]] = (float)loss;
    }
    if (mean_loss)
        *mean_loss = total / M;
    if (dh) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int i = 0; i < M; i++) {
            float *out = dh + (size_t)row_of[i] * D;
            const float *a = acc + (size_t)i * D;
            cpu_to_f32(out, w, (size_t)targets[row_of[i]] * D, (size_t)D); /* w[target] */
            const float inv = (float)(1.0 / s[i]);
            for (int d = 0; d < D; d++)
                out[d] = grad_scale * (a[d] * inv - out[d]);
        }
    }
    int rc = 0;
    if (dw && R > 0) {
        /* g (M,R) = grad_scale (softmax at the listed words - onehot);
         * dw (R,D) += g^T hc. The listed head rows and g reuse the logit
         * memory when they fit, else the conversion slot. */
        const size_t need = (size_t)R * D + (size_t)M * R;
        float *wr = need <= (size_t)nt * RC * VT ? logit_mem : cpu_scratch(k, CPU_SCRATCH_CONVERT, need, err);
        if (!wr) {
            rc = -1;
        } else {
            float *g = wr + (size_t)R * D;
            for (int r = 0; r < R; r++)
                cpu_to_f32(wr + (size_t)r * D, w, (size_t)w_rows[r] * D, (size_t)D);
            cpu_gemm(k, 0, 1, M, R, D, 1.0f, hc, D, wr, D, 0.0f, g, R);
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int i = 0; i < M; i++)
                for (int r = 0; r < R; r++) {
                    float *gi = g + (size_t)i * R + r;
                    const float p = (float)exp(*gi - lse[i]);
                    *gi = grad_scale * (p - (targets[row_of[i]] == w_rows[r] ? 1.0f : 0.0f));
                }
            cpu_gemm(k, 1, 0, R, D, M, 1.0f, g, R, hc, D, 1.0f, dw, D);
        }
    }
    free(row_of);
    return rc;
}

static int cpu_mse(TfKernels *k, float *losses, double *mean_loss, float *dpred, const float *pred,
                   const float *target, int B, size_t n, float grad_scale, TfError *err)
{
    (void)err;
    double total = 0.0;
    for (int b = 0; b < B; b++) {
        const float *p = pred + (size_t)b * n, *t = target + (size_t)b * n;
        /* Fixed chunks, partial sums added in order. */
        const size_t chunk = cpu_chunk_size(n, 4096), nc = (n + chunk - 1) / chunk;
        double part[CPU_MAX_CHUNKS];
#pragma omp parallel for num_threads(k->threads) schedule(static)
        for (size_t c = 0; c < nc; c++) {
            const size_t i1 = (c + 1) * chunk < n ? (c + 1) * chunk : n;
            double acc = 0.0;
            for (size_t i = c * chunk; i < i1; i++) {
                const double d = (double)p[i] - t[i];
                acc += d * d;
            }
            part[c] = acc;
        }
        double sum = 0.0;
        for (size_t c = 0; c < nc; c++)
            sum += part[c];
        const double loss = sum / (double)n;
        total += loss;
        if (losses)
            losses[b] = (float)loss;
        if (dpred) {
            const float f = (float)(2.0 * grad_scale / (double)n);
            float *d = dpred + (size_t)b * n;
#pragma omp parallel for num_threads(k->threads) schedule(static)
            for (size_t i = 0; i < n; i++)
                d[i] = f * (p[i] - t[i]);
        }
    }
    if (mean_loss)
        *mean_loss = total / B;
    return 0;
}

void cpu_register_loss(TfKernelsOps *ops)
{
    ops->cross_entropy_lm_head = cpu_cross_entropy_lm_head;
    ops->mse = cpu_mse;
}
