/* pointwise_cpu.c: the CPU kernels that touch each element a fixed number
 * of times: elementwise arithmetic, activations, layout changes, row
 * gathers, RoPE, embeddings, diffusion inputs, noise, AdamW and the
 * squared-sum reduction.
 *
 * Elementwise loops split over threads freely (each element is computed
 * alone); reductions (sum_rows, sum_channels, sum_squares, the embedding
 * scatter-add) give each output to one task and add in a fixed order, so
 * nothing depends on the thread count. */
#include "cpu.h"
#include "../philox.h"

#include <stdlib.h>
#include <string.h>

#define PAR _Pragma("omp parallel for num_threads(k->threads) schedule(static)")

/* ---- elementwise ---- */

static int cpu_fill(TfKernels *k, float *y, float value, size_t n, TfError *err)
{
    (void)err;
    PAR for (size_t i = 0; i < n; i++) y[i] = value;
    return 0;
}

static int cpu_copy(TfKernels *k, float *y, const float *x, size_t n, TfError *err)
{
    (void)k;
    (void)err;
    memmove(y, x, n * sizeof *y);
    return 0;
}

static int cpu_convert(TfKernels *k, void *y, TfDtype y_dtype, TfBuf x, size_t n, TfError *err)
{
    (void)err;
    if (y_dtype == x.dtype) {
        memmove(y, x.data, n * tf_dtype_size(y_dtype));
        return 0;
    }
    if (y_dtype == TF_DTYPE_F32) {
        const size_t chunk = 1 << 16;
        const size_t nc = (n + chunk - 1) / chunk;
        PAR for (size_t c = 0; c < nc; c++)
        {
            size_t i0 = c * chunk, m = n - i0 < chunk ? n - i0 : chunk;
            cpu_to_f32((float *)y + i0, x, i0, m);
        }
        return 0;
    }
    uint16_t *h = y;
    const float *f = x.data;
    PAR for (size_t i = 0; i < n; i++) h[i] = tf_f32_to_bf16(f[i]);
    return 0;
}

static int cpu_add(TfKernels *k, float *y, const float *a, const float *b, size_t n, TfError *err)
{
    (void)err;
    PAR for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
    return 0;
}

static int cpu_mul(TfKernels *k, float *y, const float *a, const float *b, size_t n, TfError *err)
{
    (void)err;
    PAR for (size_t i = 0; i < n; i++) y[i] = a[i] * b[i];
    return 0;
}

static int cpu_axpby(TfKernels *k, float *y, float alpha, const float *x, float beta, size_t n, TfError *err)
{
    (void)err;
    if (beta == 0.0f) { /* y may hold NaN or garbage: do not multiply it */
        PAR for (size_t i = 0; i < n; i++) y[i] = alpha * x[i];
    } else {
        PAR for (size_t i = 0; i < n; i++) y[i] = alpha * x[i] + beta * y[i];
    }
    return 0;
}

static int cpu_scale_shift(TfKernels *k, float *y, const float *a, float scale, float shift, size_t n, TfError *err)
{
    (void)err;
    PAR for (size_t i = 0; i < n; i++) y[i] = a[i] * scale + shift;
    return 0;
}

static int cpu_silu(TfKernels *k, float *y, const float *x, size_t n, TfError *err)
{
    (void)err;
    PAR for (size_t i = 0; i < n; i++) y[i] = cpu_silu1(x[i]);
    return 0;
}

/* d/dx x sigmoid(x) = s (1 + x (1 - s)). */
static inline float silu_grad(float x)
{
    float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
}

static int cpu_silu_backward(TfKernels *k, float *dx, const float *dy, const float *x, size_t n, TfError *err)
{
    (void)err;
    PAR for (size_t i = 0; i < n; i++) dx[i] = dy[i] * silu_grad(x[i]);
    return 0;
}

static int cpu_swiglu(TfKernels *k, float *h, const float *g, const float *u, size_t n, TfError *err)
{
    (void)err;
    PAR for (size_t i = 0; i < n; i++) h[i] = cpu_silu1(g[i]) * u[i];
    return 0;
}

static int cpu_swiglu_backward(TfKernels *k, float *dg, float *du, const float *dh, const float *g, const float *u,
                               size_t n, TfError *err)
{
    (void)err;
    PAR for (size_t i = 0; i < n; i++)
    {
        const float d = dh[i], gi = g[i];
        if (du)
            du[i] = d * cpu_silu1(gi);
        if (dg)
            dg[i] = d * u[i] * silu_grad(gi);
    }
    return 0;
}

static int cpu_add_rows(TfKernels *k, float *y, const float *b, int N, int D, TfError *err)
{
    (void)err;
    PAR for (int r = 0; r < N; r++)
    {
        float *row = y + (size_t)r * D;
        for (int j = 0; j < D; j++)
            row[j] += b[j];
    }
    return 0;
}

/* Column sums: each task owns a block of columns and adds the rows in
 * order, in double. */
#define COLS 256
static int cpu_sum_rows(TfKernels *k, float *db, const float *dy, int N, int D, TfError *err)
{
    (void)err;
    const int blocks = (D + COLS - 1) / COLS;
    PAR for (int bl = 0; bl < blocks; bl++)
    {
        const int j0 = bl * COLS, nj = D - j0 < COLS ? D - j0 : COLS;
        double acc[COLS] = {0};
        for (int r = 0; r < N; r++) {
            const float *row = dy + (size_t)r * D + j0;
            for (int j = 0; j < nj; j++)
                acc[j] += row[j];
        }
        for (int j = 0; j < nj; j++)
            db[j0 + j] += (float)acc[j];
    }
    return 0;
}

static int cpu_add_channels(TfKernels *k, float *y, const float *v, int B, int C, size_t HW, TfError *err)
{
    (void)err;
    const int BC = B * C;
    PAR for (int bc = 0; bc < BC; bc++)
    {
        float *p = y + (size_t)bc * HW, a = v[bc];
        for (size_t i = 0; i < HW; i++)
            p[i] += a;
    }
    return 0;
}

static int cpu_sum_channels(TfKernels *k, float *dv, const float *dy, int B, int C, size_t HW, TfError *err)
{
    (void)err;
    const int BC = B * C;
    PAR for (int bc = 0; bc < BC; bc++)
    {
        const float *p = dy + (size_t)bc * HW;
        double acc = 0.0;
        for (size_t i = 0; i < HW; i++)
            acc += p[i];
        dv[bc] += (float)acc;
    }
    return 0;
}

/* ---- layout ---- */

static int cpu_transpose(TfKernels *k, float *y, const float *x, int B, int M, int N, TfError *err)
{
    (void)err;
    enum { TB = 32 };
    const int tm = (M + TB - 1) / TB, tn = (N + TB - 1) / TB;
    const long long tiles = (long long)B * tm * tn;
    PAR for (long long t = 0; t < tiles; t++)
    {
        const int b = (int)(t / ((long long)tm * tn)), r = (int)(t % ((long long)tm * tn));
        const int i0 = (r / tn) * TB, j0 = (r % tn) * TB;
        const float *xb = x + (size_t)b * M * N;
        float *yb = y + (size_t)b * M * N;
        const int i1 = i0 + TB < M ? i0 + TB : M, j1 = j0 + TB < N ? j0 + TB : N;
        for (int j = j0; j < j1; j++)
            for (int i = i0; i < i1; i++)
                yb[(size_t)j * M + i] = xb[(size_t)i * N + j];
    }
    return 0;
}

static int cpu_concat_channels(TfKernels *k, float *y, const float *a, const float *b, int B, int C1, int C2,
                               size_t HW, TfError *err)
{
    (void)err;
    PAR for (int i = 0; i < B; i++)
    {
        float *yb = y + (size_t)i * (C1 + C2) * HW;
        memcpy(yb, a + (size_t)i * C1 * HW, (size_t)C1 * HW * sizeof *y);
        memcpy(yb + (size_t)C1 * HW, b + (size_t)i * C2 * HW, (size_t)C2 * HW * sizeof *y);
    }
    return 0;
}

static int cpu_split_channels(TfKernels *k, float *da, float *db, const float *dy, int B, int C1, int C2, size_t HW,
                              TfError *err)
{
    (void)err;
    PAR for (int i = 0; i < B; i++)
    {
        const float *yb = dy + (size_t)i * (C1 + C2) * HW;
        if (da)
            memcpy(da + (size_t)i * C1 * HW, yb, (size_t)C1 * HW * sizeof *da);
        if (db)
            memcpy(db + (size_t)i * C2 * HW, yb + (size_t)C1 * HW, (size_t)C2 * HW * sizeof *db);
    }
    return 0;
}

/* rows (B, (H/p)(W/p), C p p) <-> x (B,C,H,W); to_rows picks the direction. */
static void patch_move(TfKernels *k, float *rows, float *x, int B, int C, int H, int W, int p, int to_rows)
{
    const int ph = H / p, pw = W / p, F = C * p * p;
    const long long np = (long long)B * ph * pw;
    PAR for (long long t = 0; t < np; t++)
    {
        const int b = (int)(t / ((long long)ph * pw)), r = (int)(t % ((long long)ph * pw));
        const int py = r / pw, px = r % pw;
        float *row = rows + (size_t)t * F;
        for (int c = 0; c < C; c++)
            for (int dy = 0; dy < p; dy++) {
                float *img = x + (((size_t)b * C + c) * H + (size_t)py * p + dy) * W + (size_t)px * p;
                float *f = row + ((size_t)c * p + dy) * p;
                for (int dx = 0; dx < p; dx++) {
                    if (to_rows)
                        f[dx] = img[dx];
                    else
                        img[dx] = f[dx];
                }
            }
    }
}

static int cpu_patchify(TfKernels *k, float *rows, const float *x, int B, int C, int H, int W, int p, TfError *err)
{
    (void)err;
    patch_move(k, rows, (float *)x, B, C, H, W, p, 1); /* reads x only */
    return 0;
}

static int cpu_unpatchify(TfKernels *k, float *x, const float *rows, int B, int C, int H, int W, int p, TfError *err)
{
    (void)err;
    patch_move(k, (float *)rows, x, B, C, H, W, p, 0); /* reads rows only */
    return 0;
}

static int check_index(const int32_t *idx, int R, int N, const char *kernel, TfError *err)
{
    for (int r = 0; r < R; r++)
        if (idx[r] < 0 || idx[r] >= N)
            return tf_fail(err, "%s: index %d at %d outside [0,%d)", kernel, idx[r], r, N);
    return 0;
}

static int cpu_rows_gather(TfKernels *k, float *y, const float *x, const int32_t *idx, int R, int N, int D,
                           TfError *err)
{
    if (check_index(idx, R, N, "rows_gather", err))
        return -1;
    PAR for (int r = 0; r < R; r++) memcpy(y + (size_t)r * D, x + (size_t)idx[r] * D, (size_t)D * sizeof *y);
    return 0;
}

static int cpu_rows_scatter(TfKernels *k, float *y, const float *x, const int32_t *idx, int R, int N, int D,
                            int accumulate, TfError *err)
{
    if (check_index(idx, R, N, "rows_scatter", err))
        return -1;
    if (!accumulate) { /* repeated rows: the last one wins, as in r order */
        for (int r = 0; r < R; r++)
            memcpy(y + (size_t)idx[r] * D, x + (size_t)r * D, (size_t)D * sizeof *y);
        return 0;
    }
    /* Column blocks per task, rows in r order: repeated indices add up the
     * same way on any thread count. */
    const int blocks = (D + COLS - 1) / COLS;
    PAR for (int bl = 0; bl < blocks; bl++)
    {
        const int j0 = bl * COLS, nj = D - j0 < COLS ? D - j0 : COLS;
        for (int r = 0; r < R; r++) {
            float *dst = y + (size_t)idx[r] * D + j0;
            const float *src = x + (size_t)r * D + j0;
            for (int j = 0; j < nj; j++)
                dst[j] += src[j];
        }
    }
    return 0;
}

/* ---- rotary position embedding ---- */

static int cpu_rope_table(TfKernels *k, float *cos_t, float *sin_t, const double *inv_freq, int half, int P,
                          TfError *err)
{
    (void)err;
    PAR for (int p = 0; p < P; p++) for (int i = 0; i < half; i++)
    {
        double a = (double)p * inv_freq[i];
        cos_t[(size_t)p * half + i] = (float)cos(a);
        sin_t[(size_t)p * half + i] = (float)sin(a);
    }
    return 0;
}

static int cpu_rope(TfKernels *k, float *x, const float *cos_t, const float *sin_t, const int32_t *pos, int N, int H,
                    int HD, int P, int sign, TfError *err)
{
    if (check_index(pos, N, P, sign > 0 ? "rope" : "rope_backward", err))
        return -1;
    const int half = HD / 2;
    PAR for (int n = 0; n < N; n++)
    {
        const float *c = cos_t + (size_t)pos[n] * half, *s = sin_t + (size_t)pos[n] * half;
        for (int h = 0; h < H; h++) {
            float *v = x + ((size_t)n * H + h) * HD;
            for (int i = 0; i < half; i++) {
                const float a = v[i], b = v[i + half], si = sign > 0 ? s[i] : -s[i];
                /* Hugging Face: x cos + rotate_half(x) sin, rotate_half = (-x2, x1) */
                v[i] = a * c[i] + (-b) * si;
                v[i + half] = b * c[i] + a * si;
            }
        }
    }
    return 0;
}

/* ---- embeddings ---- */

static int cpu_embedding(TfKernels *k, float *y, TfBuf table, const int32_t *ids, int N, int D, int V, TfError *err)
{
    for (int n = 0; n < N; n++)
        if (ids[n] >= V)
            return tf_fail(err, "embedding: token id %d at %d outside the vocabulary of %d", ids[n], n, V);
    PAR for (int n = 0; n < N; n++) if (ids[n] >= 0) cpu_to_f32(y + (size_t)n * D, table, (size_t)ids[n] * D, (size_t)D);
    return 0;
}

static int cpu_embedding_backward(TfKernels *k, float *dtable, const float *dy, const int32_t *ids,
                                  const int32_t *rows, int R, int N, int D, int V, TfError *err)
{
    for (int n = 0; n < N; n++)
        if (ids[n] >= V)
            return tf_fail(err, "embedding_backward: token id %d at %d outside the vocabulary of %d", ids[n], n, V);
    /* slot[n]: the gradient row of position n, or -1. With a row list the
     * lookup is a scan (the list is a few trainable rows). */
    int32_t *slot = malloc((size_t)N * sizeof *slot);
    if (!slot)
        return tf_fail(err, "embedding_backward: out of memory");
    int rc = 0;
    if (rows) {
        for (int r = 0; r < R && !rc; r++) {
            if (rows[r] < 0 || rows[r] >= V)
                rc = tf_fail(err, "embedding_backward: row %d (%d) outside the vocabulary of %d", r, rows[r], V);
            for (int q = 0; q < r && !rc; q++)
                if (rows[q] == rows[r])
                    rc = tf_fail(err, "embedding_backward: row %d listed twice", rows[r]);
        }
        for (int n = 0; n < N && !rc; n++) {
            slot[n] = -1;
            for (int r = 0; r < R; r++)
                if (ids[n] == rows[r])
                    slot[n] = r;
        }
    } else {
        for (int n = 0; n < N; n++)
            slot[n] = ids[n];
    }
    if (!rc) {
        const int blocks = (D + COLS - 1) / COLS;
        PAR for (int bl = 0; bl < blocks; bl++)
        {
            const int j0 = bl * COLS, nj = D - j0 < COLS ? D - j0 : COLS;
            for (int n = 0; n < N; n++) {
                if (slot[n] < 0)
                    continue;
                float *dst = dtable + (size_t)slot[n] * D + j0;
                const float *src = dy + (size_t)n * D + j0;
                for (int j = 0; j < nj; j++)
                    dst[j] += src[j];
            }
        }
    }
    free(slot);
    return rc;
}

static int cpu_timestep_embedding(TfKernels *k, float *y, const float *t, int n, int D, int flip, float freq_shift,
                                  float max_period, TfError *err)
{
    (void)err;
    const int half = D / 2;
    PAR for (int r = 0; r < n; r++)
    {
        float *row = y + (size_t)r * D;
        for (int i = 0; i < half; i++) {
            double f = exp(-log((double)max_period) * i / (half - (double)freq_shift));
            double a = (double)t[r] * f;
            row[flip ? half + i : i] = (float)sin(a);
            row[flip ? i : half + i] = (float)cos(a);
        }
        if (D % 2)
            row[D - 1] = 0.0f;
    }
    return 0;
}

/* ---- diffusion inputs ---- */

static int cpu_noise_mix(TfKernels *k, float *xt, const float *x0, const float *eps, const float *a, const float *s,
                         int B, size_t n, TfError *err)
{
    (void)err;
    for (int b = 0; b < B; b++) {
        const size_t o = (size_t)b * n;
        const float ab = a[b], sb = s[b];
        PAR for (size_t i = 0; i < n; i++) xt[o + i] = ab * x0[o + i] + sb * eps[o + i];
    }
    return 0;
}

static int cpu_latent_sample(TfKernels *k, float *z, const float *mean, const float *logvar, const float *eps,
                             size_t n, float shift, float scale, TfError *err)
{
    (void)err;
    if (!logvar) {
        PAR for (size_t i = 0; i < n; i++) z[i] = (mean[i] - shift) * scale;
        return 0;
    }
    PAR for (size_t i = 0; i < n; i++)
    {
        float lv = logvar[i] < -30.0f ? -30.0f : logvar[i] > 20.0f ? 20.0f : logvar[i];
        z[i] = (mean[i] + expf(0.5f * lv) * eps[i] - shift) * scale;
    }
    return 0;
}

static int cpu_randn(TfKernels *k, float *y, size_t n, uint64_t seed, uint64_t stream, uint64_t offset, float mean,
                     float std, TfError *err)
{
    (void)err;
    /* Over the counter pairs the range touches; the first and last may be
     * half outside it. */
    const uint64_t p0 = offset >> 1, p1 = (offset + n - 1) >> 1;
    const uint64_t np = p1 - p0 + 1;
    PAR for (uint64_t q = 0; q < np; q++)
    {
        double z[2];
        tf_randn_pair(seed, stream, p0 + q, z);
        for (int h = 0; h < 2; h++) {
            const uint64_t e = ((p0 + q) << 1) + (uint64_t)h;
            if (e >= offset && e - offset < n)
                y[e - offset] = (float)((double)mean + (double)std * z[h]);
        }
    }
    return 0;
}

/* ---- optimiser ---- */

/* torch.optim.AdamW's single-tensor step, operation for operation in fp32
 * with the scalars computed in double as Python does, then rounded. The
 * lerp is torch's: m + w (g - m) for w < 0.5, else g - (g - m)(1 - w),
 * fused (fmaf) as its vectorised CPU kernel does. */
static int cpu_adamw(TfKernels *k, float *param, const float *grad, float *m, float *v, size_t n, const TfAdamW *h,
                     float grad_scale, TfError *err)
{
    (void)err;
    TfAdamWScalars c;
    tf_adamw_scalars(h, &c);
    const float decay = c.decay, w1 = c.w1, b2 = c.b2, w2 = c.w2, step_size = c.step_size, bc2_sqrt = c.bc2_sqrt,
                eps = c.eps;
    const int small = w1 < 0.5f;
    PAR for (size_t i = 0; i < n; i++)
    {
        const float g = grad_scale == 1.0f ? grad[i] : grad[i] * grad_scale;
        float p = param[i];
        if (decay != 1.0f)
            p *= decay;
        const float mi = small ? fmaf(w1, g - m[i], m[i]) : fmaf(w1 - 1.0f, g - m[i], g);
        const float vi = v[i] * b2 + w2 * g * g;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        param[i] = p + (-step_size) * mi / denom;
        m[i] = mi;
        v[i] = vi;
    }
    return 0;
}

static int cpu_sum_squares(TfKernels *k, double *out, const float *x, size_t n, TfError *err)
{
    (void)err;
    const size_t chunk = cpu_chunk_size(n, 1 << 14), nc = (n + chunk - 1) / chunk;
    double part[CPU_MAX_CHUNKS];
    PAR for (size_t c = 0; c < nc; c++)
    {
        const size_t i0 = c * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
        double acc = 0.0;
        for (size_t i = i0; i < i1; i++)
            acc += (double)x[i] * x[i];
        part[c] = acc;
    }
    double total = 0.0;
    for (size_t c = 0; c < nc; c++)
        total += part[c];
    *out = total;
    return 0;
}

void cpu_register_pointwise(TfKernelsOps *ops)
{
    ops->fill = cpu_fill;
    ops->copy = cpu_copy;
    ops->convert = cpu_convert;
    ops->add = cpu_add;
    ops->mul = cpu_mul;
    ops->axpby = cpu_axpby;
    ops->scale_shift = cpu_scale_shift;
    ops->silu = cpu_silu;
    ops->silu_backward = cpu_silu_backward;
    ops->swiglu = cpu_swiglu;
    ops->swiglu_backward = cpu_swiglu_backward;
    ops->add_rows = cpu_add_rows;
    ops->sum_rows = cpu_sum_rows;
    ops->add_channels = cpu_add_channels;
    ops->sum_channels = cpu_sum_channels;
    ops->transpose = cpu_transpose;
    ops->concat_channels = cpu_concat_channels;
    ops->split_channels = cpu_split_channels;
    ops->patchify = cpu_patchify;
    ops->unpatchify = cpu_unpatchify;
    ops->rows_gather = cpu_rows_gather;
    ops->rows_scatter = cpu_rows_scatter;
    ops->rope_table = cpu_rope_table;
    ops->rope = cpu_rope;
    ops->embedding = cpu_embedding;
    ops->embedding_backward = cpu_embedding_backward;
    ops->timestep_embedding = cpu_timestep_embedding;
    ops->noise_mix = cpu_noise_mix;
    ops->latent_sample = cpu_latent_sample;
    ops->randn = cpu_randn;
    ops->adamw = cpu_adamw;
    ops->sum_squares = cpu_sum_squares;
}
