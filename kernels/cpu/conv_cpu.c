/* conv_cpu.c: 2-D convolutions (forward and backward) and nearest 2x
 * upsampling on the CPU.
 *
 * Forward: 1x1 stride 1 is a plain GEMM; 3x3 stride 1 pad 1 uses Winograd
 * F(2x2,3x3) (2.25x fewer multiplies; its transforms use only 0, +-1 and
 * +-1/2, so fp32 accuracy stays close to the direct sum); every other
 * convolution lowers to im2col + GEMM, in chunks of output rows so the
 * column buffer stays a few MiB. Backward: the same chunks; dw from the
 * column buffer, dx through a column gradient folded back (col2im) one
 * input channel per task, so no two threads add into one pixel. */
#include "cpu.h"

#include <omp.h>
#include <string.h>

/* Fills y (K, n) rows with the bias, so GEMMs accumulate onto it. */
static void fill_bias(TfKernels *k, float *y, const float *bias, int K, size_t n, size_t ld)
{
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (int o = 0; o < K; o++) {
        float b = bias ? bias[o] : 0.0f;
        float *row = y + (size_t)o * ld;
        for (size_t i = 0; i < n; i++)
            row[i] = b;
    }
}

/* col (C*R*R, rows*Wo) for output rows [r0, r0+rows) of one image x (C,H,W). */
static void im2col(TfKernels *k, float *col, const float *x, const TfConv2dShape *s, int Wo, int r0, int rows)
{
    const int R = s->R, st = s->stride, H = s->H, W = s->W;
    const int nrows = s->C * R * R;
    const size_t n = (size_t)rows * (size_t)Wo;
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (int q = 0; q < nrows; q++) {
        int c = q / (R * R), ky = (q / R) % R, kx = q % R;
        const float *xc = x + (size_t)c * H * W;
        float *dst = col + (size_t)q * n;
        for (int oy = r0; oy < r0 + rows; oy++) {
            int iy = oy * st - s->pad_top + ky;
            float *d = dst + (size_t)(oy - r0) * Wo;
            if (iy < 0 || iy >= H) {
                memset(d, 0, (size_t)Wo * sizeof *d);
                continue;
            }
            const float *xr = xc + (size_t)iy * W;
            for (int ox = 0; ox < Wo; ox++) {
                int ix = ox * st - s->pad_left + kx;
                d[ox] = (ix >= 0 && ix < W) ? xr[ix] : 0.0f;
            }
        }
    }
}

static int conv_im2col(TfKernels *k, float *y, const float *x, const float *w, const float *bias,
                       const TfConv2dShape *s, TfError *err)
{
    const int Ho = tf_conv2d_out_h(s), Wo = tf_conv2d_out_w(s);
    const size_t HWo = (size_t)Ho * Wo, HW = (size_t)s->H * s->W;
    const int kd = s->C * s->R * s->R;
    const int direct = s->R == 1 && s->stride == 1 && !s->pad_top && !s->pad_left && !s->pad_bottom && !s->pad_right;
    int rows = Ho;
    float *col = NULL;
    if (!direct) {
        size_t budget = (size_t)4 << 20; /* floats per column chunk */
        size_t per_row = (size_t)kd * Wo;
        rows = (int)(budget / per_row);
        rows = rows < 1 ? 1 : rows > Ho ? Ho : rows;
        if (!(col = cpu_scratch(k, CPU_SCRATCH_MAIN, per_row * (size_t)rows, err)))
            return -1;
    }
    for (int b = 0; b < s->B; b++) {
        const float *xb = x + (size_t)b * s->C * HW;
        float *yb = y + (size_t)b * s->K * HWo;
        fill_bias(k, yb, bias, s->K, HWo, HWo);
        if (direct) {
            cpu_gemm(k, 0, 0, s->K, (int)HWo, kd, 1.0f, w, kd, xb, (int)HWo, 1.0f, yb, (int)HWo);
            continue;
        }
        for (int r0 = 0; r0 < Ho; r0 += rows) {
            int nr = Ho - r0 < rows ? Ho - r0 : rows;
            int n = nr * Wo;
            im2col(k, col, xb, s, Wo, r0, nr);
            cpu_gemm(k, 0, 0, s->K, n, kd, 1.0f, w, kd, col, n, 1.0f, yb + (size_t)r0 * Wo, (int)HWo);
        }
    }
    return 0;
}

/* Winograd F(2x2,3x3): each 4x4 input tile d gives a 2x2 output tile
 * A^T [(G g G^T) . (B^T d B)] A. The 16 element-wise products over channels
 * become 16 GEMMs (K,C) x (C,P) over a chunk of P tiles. */
static void wino_filter(TfKernels *k, float *u, const float *w, int K, int C)
{
    /* u (16, K, C) = G g G^T for each (K,C) filter g (3,3). */
    const size_t KC = (size_t)K * C;
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (size_t kc = 0; kc < KC; kc++) {
        const float *g = w + kc * 9;
        float t[4][3];
        for (int j = 0; j < 3; j++) {
            t[0][j] = g[j];
            t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
            t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
            t[3][j] = g[6 + j];
        }
        for (int i = 0; i < 4; i++) {
            float r[4] = {t[i][0], 0.5f * (t[i][0] + t[i][1] + t[i][2]), 0.5f * (t[i][0] - t[i][1] + t[i][2]),
                          t[i][2]};
            for (int j = 0; j < 4; j++)
                u[(size_t)(i * 4 + j) * KC + kc] = r[j];
        }
    }
}

static int conv_winograd(TfKernels *k, float *y, const float *x, const float *w, const float *bias,
                         const TfConv2dShape *s, TfError *err)
{
    const int C = s->C, K = s->K, H = s->H, W = s->W;
    const int th = (H + 1) / 2, tw = (W + 1) / 2;
    const size_t HW = (size_t)H * W;
    const int wide = C > K ? C : K;
    /* Tiles per chunk: whole tile rows, about 2M floats of V or M. */
    int trows = (int)(((size_t)2 << 20) / ((size_t)16 * wide * tw));
    trows = trows < 1 ? 1 : trows > th ? th : trows;
    const size_t pmax = (size_t)trows * tw;
    const size_t nu = (size_t)16 * K * C, nv = (size_t)16 * C * pmax, nm = (size_t)16 * K * pmax;
    const size_t per_thread = (size_t)8 * (2 * (size_t)tw + 2); /* row buffers of the transforms */
    float *u = cpu_scratch(k, CPU_SCRATCH_MAIN, nu + nv + nm + per_thread * (size_t)k->threads, err);
    if (!u)
        return -1;
    float *v = u + nu, *m = v + nv, *rows = m + nm;
    wino_filter(k, u, w, K, C);
    for (int b = 0; b < s->B; b++) {
        const float *xb = x + (size_t)b * C * HW;
        float *yb = y + (size_t)b * K * HW;
        for (int ty0 = 0; ty0 < th; ty0 += trows) {
            const int nty = th - ty0 < trows ? th - ty0 : trows;
            const size_t P = (size_t)nty * tw;
            /* Input transform: v (16, C, P). Per (channel, tile row): the
             * four input rows, zero-padded, combine row-wise (B^T d) over
             * the whole width, then column-wise per tile (. B), writing 16
             * contiguous streams over the tiles. */
#pragma omp parallel num_threads(k->threads)
            {
                const int wp = 2 * tw + 2;
                float *buf = rows + per_thread * (size_t)omp_get_thread_num();
#pragma omp for schedule(static) collapse(2)
                for (int c = 0; c < C; c++) {
                    for (int ty = 0; ty < nty; ty++) {
                        const float *xc = xb + (size_t)c * HW;
                        const int y0 = (ty0 + ty) * 2 - 1;
                        float *d[4], *t[4];
                        for (int i = 0; i < 4; i++) {
                            d[i] = buf + (size_t)i * wp;
                            t[i] = buf + (size_t)(4 + i) * wp;
                            int iy = y0 + i;
                            memset(d[i], 0, (size_t)wp * sizeof *d[i]);
                            if (iy >= 0 && iy < H)
                                memcpy(d[i] + 1, xc + (size_t)iy * W, (size_t)W * sizeof *d[i]);
                        }
                        for (int j = 0; j < wp; j++) {
                            t[0][j] = d[0][j] - d[2][j];
                            t[1][j] = d[1][j] + d[2][j];
                            t[2][j] = d[2][j] - d[1][j];
                            t[3][j] = d[1][j] - d[3][j];
                        }
                        const size_t step = (size_t)C * P, p0 = (size_t)ty * tw;
                        for (int i = 0; i < 4; i++) {
                            const float *ti = t[i];
                            float *v0 = v + ((size_t)(i * 4) * C + c) * P + p0;
                            float *v1 = v0 + step, *v2 = v1 + step, *v3 = v2 + step;
                            for (int tx = 0; tx < tw; tx++) {
                                float a0 = ti[2 * tx], a1 = ti[2 * tx + 1], a2 = ti[2 * tx + 2], a3 = ti[2 * tx + 3];
                                v0[tx] = a0 - a2;
                                v1[tx] = a1 + a2;
                                v2[tx] = a2 - a1;
                                v3[tx] = a1 - a3;
                            }
                        }
                    }
                }
            }
            /* 16 independent GEMMs: one per thread at a time. */
#pragma omp parallel for num_threads(k->threads) schedule(dynamic, 1)
            for (int e = 0; e < 16; e++)
                cpu_gemm1(0, 0, K, (int)P, C, 1.0f, u + (size_t)e * K * C, C, v + (size_t)e * C * P, (int)P, 0.0f,
                      m + (size_t)e * K * P, (int)P);
            /* Output transform: A^T m A plus bias, cropped at odd edges,
             * one (filter, tile row) at a time over contiguous tile streams. */
#pragma omp parallel num_threads(k->threads)
            {
                float *buf = rows + per_thread * (size_t)omp_get_thread_num();
#pragma omp for schedule(static) collapse(2)
                for (int o = 0; o < K; o++) {
                    for (int ty = 0; ty < nty; ty++) {
                        const float bo = bias ? bias[o] : 0.0f;
                        const size_t step = (size_t)K * P;
                        const float *mp = m + (size_t)o * P + (size_t)ty * tw;
                        float *r0 = buf, *r1 = buf + 2 * tw;
                        for (int tx = 0; tx < tw; tx++) {
                            float a[16];
                            for (int e = 0; e < 16; e++)
                                a[e] = mp[e * step + tx];
                            float s0[4], s1[4];
                            for (int j = 0; j < 4; j++) {
                                s0[j] = a[j] + a[4 + j] + a[8 + j];
                                s1[j] = a[4 + j] - a[8 + j] - a[12 + j];
                            }
                            r0[2 * tx] = bo + s0[0] + s0[1] + s0[2];
                            r0[2 * tx + 1] = bo + s0[1] - s0[2] - s0[3];
                            r1[2 * tx] = bo + s1[0] + s1[1] + s1[2];
                            r1[2 * tx + 1] = bo + s1[1] - s1[2] - s1[3];
                        }
                        float *yo = yb + (size_t)o * HW;
                        const int oy = (ty0 + ty) * 2;
                        memcpy(yo + (size_t)oy * W, r0, (size_t)W * sizeof *yo);
                        if (oy + 1 < H)
                            memcpy(yo + (size_t)(oy + 1) * W, r1, (size_t)W * sizeof *yo);
                    }
                }
            }
        }
    }
    return 0;
}


/* 3x3 stride 1 pad 1: dx is the convolution of dy with the filters
 * transposed (K <-> C) and flipped, which the Winograd forward does at
 * its speed. */
static int winograd_ok(const TfKernels *k, const TfConv2dShape *s, int in_channels)
{
    return k->winograd && s->R == 3 && s->stride == 1 && s->pad_top == 1 && s->pad_left == 1 && s->pad_bottom == 1 &&
           s->pad_right == 1 && in_channels >= 8;
}

static int cpu_conv2d(TfKernels *k, float *y, const float *x, const float *w, const float *bias, const TfConv2dShape *s,
                      TfError *err)
{
    if (winograd_ok(k, s, s->C))
        return conv_winograd(k, y, x, w, bias, s, err);
    return conv_im2col(k, y, x, w, bias, s, err);
}

/* dx (C,H,W) += the column gradient dcol (C*R*R, rows*Wo) of output rows
 * [r0, r0+rows) of one image: im2col's transpose. */
static void col2im(TfKernels *k, float *dx, const float *dcol, const TfConv2dShape *s, int Wo, int r0, int rows)
{
    const int R = s->R, st = s->stride, H = s->H, W = s->W;
    const size_t n = (size_t)rows * (size_t)Wo;
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (int c = 0; c < s->C; c++) {
        float *xc = dx + (size_t)c * H * W;
        for (int ky = 0; ky < R; ky++)
            for (int kx = 0; kx < R; kx++) {
                const float *src = dcol + (size_t)((c * R + ky) * R + kx) * n;
                for (int oy = r0; oy < r0 + rows; oy++) {
                    int iy = oy * st - s->pad_top + ky;
                    if (iy < 0 || iy >= H)
                        continue;
                    const float *d = src + (size_t)(oy - r0) * Wo;
                    float *xr = xc + (size_t)iy * W;
                    for (int ox = 0; ox < Wo; ox++) {
                        int ix = ox * st - s->pad_left + kx;
                        if (ix >= 0 && ix < W)
                            xr[ix] += d[ox];
                    }
                }
            }
    }
}

static int backward_data_winograd(TfKernels *k, float *dx, const float *dy, const float *w, const TfConv2dShape *s,
                                  TfError *err)
{
    float *wt = cpu_scratch(k, CPU_SCRATCH_CONVERT, (size_t)s->C * s->K * 9, err); /* (C,K,3,3) */
    if (!wt)
        return -1;
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (int c = 0; c < s->C; c++)
        for (int o = 0; o < s->K; o++)
            for (int t = 0; t < 9; t++)
                wt[((size_t)c * s->K + o) * 9 + t] = w[((size_t)o * s->C + c) * 9 + (8 - t)];
    TfConv2dShape t = *s;
    t.C = s->K;
    t.K = s->C;
    return conv_winograd(k, dx, dy, wt, NULL, &t, err);
}

static int cpu_conv2d_backward(TfKernels *k, float *dx, float *dw, float *db, const float *dy, const float *x,
                               const float *w, const TfConv2dShape *s, TfError *err)
{
    if (dx && winograd_ok(k, s, s->K)) {
        if (backward_data_winograd(k, dx, dy, w, s, err))
            return -1;
        dx = NULL;
    }
    const int Ho = tf_conv2d_out_h(s), Wo = tf_conv2d_out_w(s);
    const size_t HWo = (size_t)Ho * Wo, HW = (size_t)s->H * s->W;
    const int kd = s->C * s->R * s->R;
    const int direct = s->R == 1 && s->stride == 1 && !s->pad_top && !s->pad_left && !s->pad_bottom && !s->pad_right;
    if (db) {
#pragma omp parallel for num_threads(k->threads) schedule(static)
        for (int o = 0; o < s->K; o++) {
            double acc = 0.0;
            for (int b = 0; b < s->B; b++) {
                const float *d = dy + ((size_t)b * s->K + o) * HWo;
                for (size_t i = 0; i < HWo; i++)
                    acc += d[i];
            }
            db[o] += (float)acc;
        }
    }
    if (!dx && !dw)
        return 0;
    int rows = Ho;
    float *col = NULL, *dcol = NULL;
    if (!direct) {
        size_t per_row = (size_t)kd * Wo;
        rows = (int)(((size_t)4 << 20) / per_row);
        rows = rows < 1 ? 1 : rows > Ho ? Ho : rows;
        size_t chunk = per_row * (size_t)rows;
        float *buf = cpu_scratch(k, CPU_SCRATCH_MAIN, (dw ? chunk : 0) + (dx ? chunk : 0), err);
        if (!buf)
            return -1;
        col = dw ? buf : NULL;
        dcol = dx ? buf + (dw ? chunk : 0) : NULL;
    }
    for (int b = 0; b < s->B; b++) {
        const float *xb = x ? x + (size_t)b * s->C * HW : NULL;
        const float *dyb = dy + (size_t)b * s->K * HWo;
        float *dxb = dx ? dx + (size_t)b * s->C * HW : NULL;
        if (direct) {
            /* dw (K,C) += dy (K,HW) x^T (HW,C); dx (C,HW) = w^T (C,K) dy (K,HW) */
            if (dw)
                cpu_gemm(k, 0, 1, s->K, kd, (int)HWo, 1.0f, dyb, (int)HWo, xb, (int)HWo, 1.0f, dw, kd);
            if (dxb)
                cpu_gemm(k, 1, 0, kd, (int)HWo, s->K, 1.0f, w, kd, dyb, (int)HWo, 0.0f, dxb, (int)HWo);
            continue;
        }
        if (dxb)
            memset(dxb, 0, (size_t)s->C * HW * sizeof *dxb);
        for (int r0 = 0; r0 < Ho; r0 += rows) {
            const int nr = Ho - r0 < rows ? Ho - r0 : rows;
            const int n = nr * Wo;
            if (dw) {
                im2col(k, col, xb, s, Wo, r0, nr);
                cpu_gemm(k, 0, 1, s->K, kd, n, 1.0f, dyb + (size_t)r0 * Wo, (int)HWo, col, n, 1.0f, dw, kd);
            }
            if (dxb) {
                cpu_gemm(k, 1, 0, kd, n, s->K, 1.0f, w, kd, dyb + (size_t)r0 * Wo, (int)HWo, 0.0f, dcol, n);
                col2im(k, dxb, dcol, s, Wo, r0, nr);
            }
        }
    }
    return 0;
}

static int cpu_upsample_nearest2x(TfKernels *k, float *y, const float *x, int B, int C, int H, int W, TfError *err)
{
    (void)err;
    const int BC = B * C;
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (int bc = 0; bc < BC; bc++) {
        const float *xp = x + (size_t)bc * H * W;
        float *yp = y + (size_t)bc * 4 * H * W;
        for (int i = 0; i < H; i++) {
            float *r0 = yp + (size_t)(2 * i) * 2 * W, *r1 = r0 + 2 * W;
            for (int j = 0; j < W; j++)
                r0[2 * j] = r0[2 * j + 1] = xp[(size_t)i * W + j];
            memcpy(r1, r0, (size_t)2 * W * sizeof *r1);
        }
    }
    return 0;
}

static int cpu_upsample_nearest2x_backward(TfKernels *k, float *dx, const float *dy, int B, int C, int H, int W,
                                           TfError *err)
{
    (void)err;
    const int BC = B * C;
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (int bc = 0; bc < BC; bc++) {
        const float *dp = dy + (size_t)bc * 4 * H * W;
        float *xp = dx + (size_t)bc * H * W;
        for (int i = 0; i < H; i++) {
            const float *r0 = dp + (size_t)(2 * i) * 2 * W, *r1 = r0 + 2 * W;
            for (int j = 0; j < W; j++)
                xp[(size_t)i * W + j] = (r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]);
        }
    }
    return 0;
}

void cpu_register_conv(TfKernelsOps *ops)
{
    ops->conv2d = cpu_conv2d;
    ops->conv2d_backward = cpu_conv2d_backward;
    ops->upsample_nearest2x = cpu_upsample_nearest2x;
    ops->upsample_nearest2x_backward = cpu_upsample_nearest2x_backward;
}
