/* attention_cpu.c: softmax attention on the CPU: grouped-query attention
 * with the Transfusion mask (forward and backward), and the VAE's
 * single-head channel-major attention.
 *
 * GQA is tiled as FlashAttention is: a task owns a (sequence, head, query
 * tile) and walks the key tiles its rows can see with an online softmax
 * (running max and sum per row, fp32 exponentials), so no (T,T) score
 * matrix exists. The mask is per row, key j visible to query i iff
 * lo[i] <= j < hi[i]; a key tile no row of the query tile sees is skipped,
 * one every row sees fully is used without masking. The backward
 * recomputes the probabilities from the saved logsumexp: one pass with a
 * task per (sequence, kv head, key tile) accumulates dK and dV over every
 * query head of the group and every query tile, a second with a task per
 * (sequence, head, query tile) accumulates dQ. Every output element is
 * owned by one task that adds in a fixed order: no atomics, and the same
 * result on any thread count. */
#include "cpu.h"

#include <omp.h>
#include <string.h>

enum { TQ = 64, TK = 128 }; /* query rows and keys per tile */

/* Checks the mask bounds of every sequence: 0 <= lo < hi <= T, hi
 * non-decreasing. */
static int mask_check(const int32_t *lo, const int32_t *hi, int B, int T, const char *kernel, TfError *err)
{
    if (!lo)
        return 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++) {
            const size_t r = (size_t)b * T + i;
            if (lo[r] < 0 || lo[r] >= hi[r] || hi[r] > T)
                return tf_fail(err, "%s: sequence %d row %d: mask [%d,%d) is not a non-empty part of [0,%d)", kernel,
                               b, i, lo[r], hi[r], T);
            if (i && hi[r] < hi[r - 1])
                return tf_fail(err, "%s: sequence %d row %d: hi %d < %d of the row before (hi must not decrease)",
                               kernel, b, i, hi[r], hi[r - 1]);
        }
    return 0;
}

enum { TILE_NONE = 0, TILE_PART = 1, TILE_FULL = 2 };

/* How query rows [i0,i1) see keys [j0,j1). lo, hi: this sequence's. */
static int tile_class(const int32_t *lo, const int32_t *hi, int i0, int i1, int j0, int j1)
{
    if (!lo)
        return TILE_FULL;
    int any = 0, all = 1;
    for (int i = i0; i < i1; i++) {
        if (lo[i] < j1 && hi[i] > j0)
            any = 1;
        if (lo[i] > j0 || hi[i] < j1)
            all = 0;
    }
    return !any ? TILE_NONE : all ? TILE_FULL : TILE_PART;
}

/* The keys rows [i0,i1) may see: [min lo, max hi). */
static void key_range(const int32_t *lo, const int32_t *hi, int T, int i0, int i1, int *k0, int *k1)
{
    if (!lo) {
        *k0 = 0;
        *k1 = T;
        return;
    }
    int a = T, b = 0;
    for (int i = i0; i < i1; i++) {
        a = lo[i] < a ? lo[i] : a;
        b = hi[i] > b ? hi[i] : b;
    }
    *k0 = a;
    *k1 = b;
}

/* The key tiles query rows [i0,i1) of one sequence see, in order. */
typedef struct KeyTiles {
    const int32_t *lo, *hi;
    int i0, i1, j, end;
} KeyTiles;

static KeyTiles key_tiles(const int32_t *lo, const int32_t *hi, int T, int i0, int i1)
{
    KeyTiles it = {lo, hi, i0, i1, 0, 0};
    key_range(lo, hi, T, i0, i1, &it.j, &it.end);
    return it;
}

/* The next tile some row sees: 1 with [*j0, *j0 + *nk) and its class, 0
 * after the last. */
static int key_tiles_next(KeyTiles *it, int *j0, int *nk, int *cls)
{
    while (it->j < it->end) {
        const int j = it->j, n = it->end - j < TK ? it->end - j : TK;
        it->j += TK;
        const int c = tile_class(it->lo, it->hi, it->i0, it->i1, j, j + n);
        if (c != TILE_NONE) {
            *j0 = j;
            *nk = n;
            *cls = c;
            return 1;
        }
    }
    return 0;
}

/* s (nq,nk) = scale q k^T for query rows [i0,..) of head h and keys [j0,..)
 * of kv head g, masked to -inf outside each row's bounds when cls is
 * TILE_PART. */
static void scores(float *s, const float *q, const float *kk, const TfAttnShape *sh, int b, int h, int g, int i0,
                   int nq, int j0, int nk, const int32_t *lo, const int32_t *hi, int cls)
{
    const int ldq = sh->NH * sh->HD, ldk = sh->NKV * sh->HD;
    const float *qi = q + ((size_t)b * sh->T + i0) * ldq + (size_t)h * sh->HD;
    const float *kj = kk + ((size_t)b * sh->T + j0) * ldk + (size_t)g * sh->HD;
    cpu_gemm1(0, 1, nq, nk, sh->HD, sh->scale, qi, ldq, kj, ldk, 0.0f, s, nk);
    if (cls != TILE_PART)
        return;
    for (int i = 0; i < nq; i++) {
        const int a = lo[i0 + i] - j0, e = hi[i0 + i] - j0;
        float *row = s + (size_t)i * nk;
        for (int j = 0; j < nk; j++)
            if (j < a || j >= e)
                row[j] = -INFINITY;
    }
}

static int cpu_attention_gqa(TfKernels *k, float *y, float *lse, const float *q, const float *kk, const float *v,
                             const int32_t *lo, const int32_t *hi, const TfAttnShape *sh, TfError *err)
{
    const int B = sh->B, T = sh->T, NH = sh->NH, HD = sh->HD, rep = sh->NH / sh->NKV;
    if (mask_check(lo, hi, B, T, "attention_gqa", err))
        return -1;
    const size_t per = (size_t)TQ * TK + (size_t)TQ * HD;
    const int nt = k->threads;
    float *scratch = cpu_scratch(k, CPU_SCRATCH_MAIN, per * (size_t)nt, err);
    if (!scratch)
        return -1;
    const int qtiles = (T + TQ - 1) / TQ;
    const long long tasks = (long long)B * NH * qtiles;
    const int ldq = NH * HD, ldk = sh->NKV * HD;
#pragma omp parallel num_threads(nt)
    {
        float *s = scratch + per * (size_t)omp_get_thread_num(), *o = s + (size_t)TQ * TK;
#pragma omp for schedule(dynamic, 1)
        for (long long t = 0; t < tasks; t++) {
            const int b = (int)(t / ((long long)NH * qtiles)), r = (int)(t % ((long long)NH * qtiles));
            const int h = r / qtiles, i0 = (r % qtiles) * TQ, g = h / rep;
            const int nq = T - i0 < TQ ? T - i0 : TQ;
            const int32_t *lob = lo ? lo + (size_t)b * T : NULL, *hib = hi ? hi + (size_t)b * T : NULL;
            float m[TQ];
            double l[TQ];
            for (int i = 0; i < nq; i++) {
                m[i] = -INFINITY;
                l[i] = 0.0;
            }
            memset(o, 0, (size_t)nq * HD * sizeof *o);
            KeyTiles it = key_tiles(lob, hib, T, i0, i0 + nq);
            int j0, nk, cls;
            while (key_tiles_next(&it, &j0, &nk, &cls)) {
                scores(s, q, kk, sh, b, h, g, i0, nq, j0, nk, lob, hib, cls);
                for (int i = 0; i < nq; i++) {
                    float *row = s + (size_t)i * nk;
                    const float mx = cpu_row_max(row, nk, m[i]);
                    if (mx == -INFINITY) { /* nothing visible yet in this row */
                        memset(row, 0, (size_t)nk * sizeof *row);
                        continue;
                    }
                    const float alpha = expf(m[i] - mx); /* 0 when m was -inf */
                    l[i] = l[i] * alpha + cpu_exp_sum(row, nk, mx);
                    m[i] = mx;
                    if (alpha != 1.0f) {
                        float *orow = o + (size_t)i * HD;
                        for (int d = 0; d < HD; d++)
                            orow[d] *= alpha;
                    }
                }
                const float *vj = v + ((size_t)b * T + j0) * ldk + (size_t)g * HD;
                cpu_gemm1(0, 0, nq, HD, nk, 1.0f, s, nk, vj, ldk, 1.0f, o, HD);
            }
            for (int i = 0; i < nq; i++) {
                float *yr = y + ((size_t)b * T + i0 + i) * ldq + (size_t)h * HD;
                const float inv = (float)(1.0 / l[i]);
                for (int d = 0; d < HD; d++)
                    yr[d] = o[(size_t)i * HD + d] * inv;
                if (lse)
                    lse[((size_t)b * NH + h) * T + i0 + i] = m[i] + (float)log(l[i]);
            }
        }
    }
    return 0;
}

/* p = exp(s - lse) in place (masked entries are -inf: 0), then
 * ds = p (dp - D) in dp. Rows of query tile i0 of head h. */
static void probs_and_dscores(float *p, float *dp, int nq, int nk, const float *lse_i, const float *D_i)
{
    for (int i = 0; i < nq; i++) {
        float *pr = p + (size_t)i * nk, *dr = dp + (size_t)i * nk;
        const float di = D_i[i];
        cpu_exp_sum(pr, nk, lse_i[i]);
        for (int j = 0; j < nk; j++)
            dr[j] = pr[j] * (dr[j] - di);
    }
}

static int cpu_attention_gqa_backward(TfKernels *k, float *dq, float *dk, float *dv, const float *dy, const float *y,
                                      const float *lse, const float *q, const float *kk, const float *v,
                                      const int32_t *lo, const int32_t *hi, const TfAttnShape *sh, TfError *err)
{
    const int B = sh->B, T = sh->T, NH = sh->NH, NKV = sh->NKV, HD = sh->HD, rep = NH / NKV;
    if (mask_check(lo, hi, B, T, "attention_gqa_backward", err))
        return -1;
    const int nt = k->threads;
    const size_t nD = (size_t)B * NH * T;
    const size_t per = (size_t)2 * TQ * TK + (size_t)2 * TK * HD;
    float *scratch = cpu_scratch(k, CPU_SCRATCH_MAIN, nD + per * (size_t)nt, err);
    if (!scratch)
        return -1;
    float *Dv = scratch, *thread_mem = scratch + nD;
    const int ldq = NH * HD, ldk = NKV * HD;
    /* D[b,h,i] = dy . y over the head's dims (the softmax backward's row term). */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long long r = 0; r < (long long)B * T; r++) {
        const int b = (int)(r / T), i = (int)(r % T);
        for (int h = 0; h < NH; h++) {
            const float *a = dy + (size_t)r * ldq + (size_t)h * HD, *c = y + (size_t)r * ldq + (size_t)h * HD;
            double acc = 0.0;
            for (int d = 0; d < HD; d++)
                acc += (double)a[d] * c[d];
            Dv[((size_t)b * NH + h) * T + i] = (float)acc;
        }
    }
    const int qtiles = (T + TQ - 1) / TQ, ktiles = (T + TK - 1) / TK;
    if (dk || dv) {
        const long long tasks = (long long)B * NKV * ktiles;
#pragma omp parallel num_threads(nt)
        {
            float *p = thread_mem + per * (size_t)omp_get_thread_num(), *dp = p + (size_t)TQ * TK;
            float *dka = dp + (size_t)TQ * TK, *dva = dka + (size_t)TK * HD;
#pragma omp for schedule(dynamic, 1)
            for (long long t = 0; t < tasks; t++) {
                const int b = (int)(t / ((long long)NKV * ktiles)), r = (int)(t % ((long long)NKV * ktiles));
                const int g = r / ktiles, j0 = (r % ktiles) * TK, nk = T - j0 < TK ? T - j0 : TK;
                const int32_t *lob = lo ? lo + (size_t)b * T : NULL, *hib = hi ? hi + (size_t)b * T : NULL;
                memset(dka, 0, (size_t)2 * TK * HD * sizeof *dka);
                const float *vj = v + ((size_t)b * T + j0) * ldk + (size_t)g * HD;
                for (int h = g * rep; h < (g + 1) * rep; h++) {
                    const float *lse_h = lse + ((size_t)b * NH + h) * T, *D_h = Dv + ((size_t)b * NH + h) * T;
                    for (int i0 = 0; i0 < T; i0 += TQ) {
                        const int nq = T - i0 < TQ ? T - i0 : TQ;
                        const int cls = tile_class(lob, hib, i0, i0 + nq, j0, j0 + nk);
                        if (cls == TILE_NONE)
                            continue;
                        const float *qi = q + ((size_t)b * T + i0) * ldq + (size_t)h * HD;
                        const float *gi = dy + ((size_t)b * T + i0) * ldq + (size_t)h * HD;
                        scores(p, q, kk, sh, b, h, g, i0, nq, j0, nk, lob, hib, cls);
                        cpu_gemm1(0, 1, nq, nk, HD, 1.0f, gi, ldq, vj, ldk, 0.0f, dp, nk); /* dP = dO V^T */
                        probs_and_dscores(p, dp, nq, nk, lse_h + i0, D_h + i0);
                        cpu_gemm1(1, 0, nk, HD, nq, 1.0f, p, nk, gi, ldq, 1.0f, dva, HD);        /* dV += P^T dO */
                        cpu_gemm1(1, 0, nk, HD, nq, sh->scale, dp, nk, qi, ldq, 1.0f, dka, HD);  /* dK += s dS^T Q */
                    }
                }
                for (int j = 0; j < nk; j++) {
                    const size_t row = ((size_t)b * T + j0 + j) * ldk + (size_t)g * HD;
                    if (dk)
                        memcpy(dk + row, dka + (size_t)j * HD, (size_t)HD * sizeof *dk);
                    if (dv)
                        memcpy(dv + row, dva + (size_t)j * HD, (size_t)HD * sizeof *dv);
                }
            }
        }
    }
    if (dq) {
        const long long tasks = (long long)B * NH * qtiles;
#pragma omp parallel num_threads(nt)
        {
            float *p = thread_mem + per * (size_t)omp_get_thread_num(), *dp = p + (size_t)TQ * TK;
            float *dqa = dp + (size_t)TQ * TK;
#pragma omp for schedule(dynamic, 1)
            for (long long t = 0; t < tasks; t++) {
                const int b = (int)(t / ((long long)NH * qtiles)), r = (int)(t % ((long long)NH * qtiles));
                const int h = r / qtiles, i0 = (r % qtiles) * TQ, g = h / rep;
                const int nq = T - i0 < TQ ? T - i0 : TQ;
                const int32_t *lob = lo ? lo + (size_t)b * T : NULL, *hib = hi ? hi + (size_t)b * T : NULL;
                const float *lse_h = lse + ((size_t)b * NH + h) * T, *D_h = Dv + ((size_t)b * NH + h) * T;
                const float *gi = dy + ((size_t)b * T + i0) * ldq + (size_t)h * HD;
                memset(dqa, 0, (size_t)TQ * HD * sizeof *dqa);
                KeyTiles it = key_tiles(lob, hib, T, i0, i0 + nq);
                int j0, nk, cls;
                while (key_tiles_next(&it, &j0, &nk, &cls)) {
                    const float *kj = kk + ((size_t)b * T + j0) * ldk + (size_t)g * HD;
                    const float *vj = v + ((size_t)b * T + j0) * ldk + (size_t)g * HD;
                    scores(p, q, kk, sh, b, h, g, i0, nq, j0, nk, lob, hib, cls);
                    cpu_gemm1(0, 1, nq, nk, HD, 1.0f, gi, ldq, vj, ldk, 0.0f, dp, nk);
                    probs_and_dscores(p, dp, nq, nk, lse_h + i0, D_h + i0);
                    cpu_gemm1(0, 0, nq, HD, nk, sh->scale, dp, nk, kj, ldk, 1.0f, dqa, HD); /* dQ += s dS K */
                }
                for (int i = 0; i < nq; i++)
                    memcpy(dq + ((size_t)b * T + i0 + i) * ldq + (size_t)h * HD, dqa + (size_t)i * HD,
                           (size_t)HD * sizeof *dq);
            }
        }
    }
    return 0;
}

/* ---- the VAE's attention ---- */

static int cpu_attention(TfKernels *k, float *y, const float *q, const float *kk, const float *v, int B, int C, int T,
                         float scale, TfError *err)
{
    /* Query rows go in blocks so the (rows, T) score block stays within
     * about 16M floats whatever T is (a 1024x1024 image decodes with
     * T = 16384 in the mid block). */
    int rows = (int)(((size_t)16 << 20) / (size_t)T);
    rows = rows < 1 ? 1 : rows > T ? T : rows;
    float *s = cpu_scratch(k, CPU_SCRATCH_MAIN, (size_t)rows * T, err); /* (rows,T) scores, then probabilities */
    if (!s)
        return -1;
    for (int b = 0; b < B; b++) {
        const size_t off = (size_t)b * C * T;
        for (int i0 = 0; i0 < T; i0 += rows) {
            const int n = T - i0 < rows ? T - i0 : rows;
            /* s(i,j) = q(:,i0+i) . k(:,j): q^T k with q, k (C,T). */
            cpu_gemm(k, 1, 0, n, T, C, 1.0f, q + off + i0, T, kk + off, T, 0.0f, s, T);
#pragma omp parallel for num_threads(k->threads) schedule(static)
            for (int i = 0; i < n; i++) {
                float *row = s + (size_t)i * T, mx = -INFINITY;
                for (int j = 0; j < T; j++)
                    mx = row[j] * scale > mx ? row[j] * scale : mx;
                double sum = 0.0;
                for (int j = 0; j < T; j++) {
                    row[j] = expf(row[j] * scale - mx);
                    sum += row[j];
                }
                float inv = (float)(1.0 / sum);
                for (int j = 0; j < T; j++)
                    row[j] *= inv;
            }
            /* y(c,i0+i) = sum_j v(c,j) p(i,j): v p^T. */
            cpu_gemm(k, 0, 1, C, n, T, 1.0f, v + off, T, s, T, 0.0f, y + off + i0, T);
        }
    }
    return 0;
}

void cpu_register_attention(TfKernelsOps *ops)
{
    ops->attention_gqa = cpu_attention_gqa;
    ops->attention_gqa_backward = cpu_attention_gqa_backward;
    ops->attention = cpu_attention;
}
