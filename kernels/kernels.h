/* kernels: the tensor kernels the models in transfuse run on.
 *
 * One interface, several backends chosen at run time: "cpu" (cpu/: fp32
 * reference, OpenBLAS sgemm + OpenMP) and "cuda" (cuda/: the next issue;
 * where it is not built or no device is present, tf_kernels_new says so).
 * A front end (kernels.c) checks every shape and dtype before dispatching,
 * so both backends reject the same misuse with the same message.
 *
 * Conventions (docs/KERNELS.md has the long form):
 *   - Every kernel returns 0, or -1 with `err` filled (err may be NULL).
 *     A GPU reports some failures late: a kernel may return 0 and a later
 *     call, or tf_kernels_sync, returns the error. After a failure the
 *     outputs of the failing call are unspecified; inputs are unchanged.
 *   - Buffers are kernel buffers (tf_kernels_alloc*: host memory on the
 *     CPU, device memory on a GPU) unless an argument says `host`.
 *   - Activations and gradients are fp32. Weights read by matmul, linear,
 *     embedding, RMSNorm and the fused LM-head cross-entropy are a TfBuf
 *     (fp32 or bf16, converted to fp32 inside the kernel). Reductions
 *     (norms, softmax, losses, sums) accumulate in fp32 or wider.
 *   - Row-major everywhere. Transformer tensors are rows of features: N
 *     rows (N = B*T tokens), D features. Images and U-Net maps are channel
 *     first: (B,C,H,W), or (B,C,HW) flattened.
 *   - Shapes are written next to every tensor argument. Letters used:
 *     B batch, T sequence length, N rows, D width, C channels, NH query
 *     heads, NKV key/value heads, HD head dim, V vocabulary, P positions.
 *   - Weight gradients (dw, db, dgamma, ...) ACCUMULATE (+=) and may be
 *     NULL (frozen weights: the work is skipped). Input gradients (dx)
 *     are overwritten, except where an `accumulate` flag says otherwise;
 *     a NULL dx skips it too.
 *   - Outputs must not alias inputs unless the comment says "may alias".
 *   - Results do not depend on the thread count: work is split in fixed
 *     chunks and every reduction runs in a fixed order (KERNELS.md lists
 *     the one place where that does not hold: tf_kernels_sgemm_peak).
 */
#ifndef TRANSFUSE_KERNELS_H
#define TRANSFUSE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

typedef struct TfKernels TfKernels;

/* ---- backends and contexts ------------------------------------------------ */

typedef enum { TF_BACKEND_CPU = 0, TF_BACKEND_CUDA = 1 } TfBackend;

/* "cpu" -> TF_BACKEND_CPU, "cuda" -> TF_BACKEND_CUDA (for --device).
 * Returns 0, or -1 with err naming the accepted values. */
int tf_backend_parse(const char *name, TfBackend *out, TfError *err);
const char *tf_backend_name(TfBackend backend);

/* A context running kernels on `backend`. threads: CPU threads (0: all
 * online CPUs; a GPU backend uses it for host-side work only). Owns its
 * scratch memory (and on a GPU its stream), so one thread uses a context
 * at a time: give each worker its own. Returns NULL with err filled when
 * the backend is not built, has no device, or memory runs out. */
TfKernels *tf_kernels_new(TfBackend backend, int threads, TfError *err);
void tf_kernels_free(TfKernels *k);

TfBackend tf_kernels_backend(const TfKernels *k);
const char *tf_kernels_backend_name(const TfKernels *k);
int tf_kernels_threads(const TfKernels *k);

/* Waits for all queued work and returns its first error (a GPU's late
 * errors). 0 at once on the CPU. */
int tf_kernels_sync(TfKernels *k, TfError *err);

/* Turns the Winograd F(2x2,3x3) path for 3x3 stride-1 pad-1 convolutions
 * on (the default) or off (im2col + GEMM for everything; the reference the
 * fast path is tested against). */
void tf_kernels_set_winograd(TfKernels *k, int on);

/* ---- dtypes and buffers ----------------------------------------------------- */

/* Element types are core.h's TfDtype (the safetensors list, with
 * tf_dtype_size/tf_dtype_name and the bf16 <-> f32 bit conversions).
 * Kernel buffers hold TF_DTYPE_F32, TF_DTYPE_BF16 or TF_DTYPE_I32;
 * weight arguments take F32 or BF16. */

/* A typed read-only buffer: what weight arguments take, so frozen text
 * weights can stay bf16. */
typedef struct TfBuf {
    const void *data;
    TfDtype dtype;
} TfBuf;

static inline TfBuf tf_buf_f32(const float *p)
{
    return (TfBuf){p, TF_DTYPE_F32};
}
static inline TfBuf tf_buf_bf16(const uint16_t *p)
{
    return (TfBuf){p, TF_DTYPE_BF16};
}

/* Kernel buffers, 64-byte aligned. tf_kernels_alloc: n floats;
 * tf_kernels_alloc_as: n elements of dtype. NULL with err filled on
 * overflow or out of memory. tf_kernels_release(k, NULL) is a no-op. */
float *tf_kernels_alloc(TfKernels *k, size_t n, TfError *err);
void *tf_kernels_alloc_as(TfKernels *k, TfDtype dtype, size_t n, TfError *err);
void tf_kernels_release(TfKernels *k, void *buf);

/* Copies between host memory and kernel buffers: n floats, or `bytes`
 * bytes (any dtype). Downloads wait for queued work first. */
int tf_kernels_upload(TfKernels *k, float *dst, const float *host, size_t n, TfError *err);
int tf_kernels_download(TfKernels *k, float *host, const float *src, size_t n, TfError *err);
int tf_kernels_upload_bytes(TfKernels *k, void *dst, const void *host, size_t bytes, TfError *err);
int tf_kernels_download_bytes(TfKernels *k, void *host, const void *src, size_t bytes, TfError *err);

/* ---- elementwise ------------------------------------------------------------ */

/* y[i] = value.   y (n) */
int tf_fill(TfKernels *k, float *y, float value, size_t n, TfError *err);
/* y = x between kernel buffers.   y, x (n) */
int tf_copy(TfKernels *k, float *y, const float *x, size_t n, TfError *err);
/* y = x converted (f32 <-> bf16, or a copy when the dtypes match); y is a
 * writable buffer of y_dtype.   y, x (n) */
int tf_convert(TfKernels *k, void *y, TfDtype y_dtype, TfBuf x, size_t n, TfError *err);

/* y = a + b. y may alias a or b.   y, a, b (n) */
int tf_add(TfKernels *k, float *y, const float *a, const float *b, size_t n, TfError *err);
/* y = a * b elementwise. y may alias a or b.   y, a, b (n) */
int tf_mul(TfKernels *k, float *y, const float *a, const float *b, size_t n, TfError *err);
/* y = alpha * x + beta * y.   y, x (n) */
int tf_axpby(TfKernels *k, float *y, float alpha, const float *x, float beta, size_t n, TfError *err);
/* y = a * scale + shift. y may alias a.   y, a (n) */
int tf_scale_shift(TfKernels *k, float *y, const float *a, float scale, float shift, size_t n, TfError *err);

/* y = x * sigmoid(x); y may alias x.   y, x (n) */
int tf_silu(TfKernels *k, float *y, const float *x, size_t n, TfError *err);
/* dx = dy * silu'(x); dx may alias dy.   dx, dy, x (n) */
int tf_silu_backward(TfKernels *k, float *dx, const float *dy, const float *x, size_t n, TfError *err);

/* SwiGLU: h = silu(g) * u (Llama's FFN: down(silu(gate x) * up x)).
 *   h, g, u (n) */
int tf_swiglu(TfKernels *k, float *h, const float *g, const float *u, size_t n, TfError *err);
/* dg = dh * u * silu'(g), du = dh * silu(g); either may be NULL.
 *   dg, du, dh, g, u (n) */
int tf_swiglu_backward(TfKernels *k, float *dg, float *du, const float *dh, const float *g, const float *u, size_t n,
                       TfError *err);

/* y[r,:] += b: a bias on every row.   y (N,D), b (D) */
int tf_add_rows(TfKernels *k, float *y, const float *b, int N, int D, TfError *err);
/* db += sum over rows of dy (the bias gradient of tf_add_rows).
 *   db (D), dy (N,D) */
int tf_sum_rows(TfKernels *k, float *db, const float *dy, int N, int D, TfError *err);

/* y[b,c,:] += v[b,c]: a per-(image, channel) value over the map (the
 * timestep embedding in a ResBlock).   y (B,C,HW), v (B,C) */
int tf_add_channels(TfKernels *k, float *y, const float *v, int B, int C, size_t HW, TfError *err);
/* dv += sum over HW of dy (its backward).   dv (B,C), dy (B,C,HW) */
int tf_sum_channels(TfKernels *k, float *dv, const float *dy, int B, int C, size_t HW, TfError *err);

/* ---- layout ----------------------------------------------------------------- */

/* y[b] = x[b]^T for each of B matrices: (B,C,HW) <-> (B,HW,C), the step
 * between U-Net maps and transformer rows.   y (B,N,M), x (B,M,N) */
int tf_transpose(TfKernels *k, float *y, const float *x, int B, int M, int N, TfError *err);

/* Channel concat along C and its backward (the split).
 *   y (B,C1+C2,HW), a (B,C1,HW), b (B,C2,HW) */
int tf_concat_channels(TfKernels *k, float *y, const float *a, const float *b, int B, int C1, int C2, size_t HW,
                       TfError *err);
/* da, db (either may be NULL) = the two parts of dy.
 *   da (B,C1,HW), db (B,C2,HW), dy (B,C1+C2,HW) */
int tf_split_channels(TfKernels *k, float *da, float *db, const float *dy, int B, int C1, int C2, size_t HW,
                      TfError *err);

/* Patchify: p x p latent pixels -> one row of C*p*p features, patches in
 * raster order, features ordered (c, dy, dx) as a stride-p convolution
 * flattens them. unpatchify is its inverse (and each is the other's
 * backward). H and W must be multiples of p.
 *   rows (B, (H/p)*(W/p), C*p*p), x (B,C,H,W) */
int tf_patchify(TfKernels *k, float *rows, const float *x, int B, int C, int H, int W, int p, TfError *err);
int tf_unpatchify(TfKernels *k, float *x, const float *rows, int B, int C, int H, int W, int p, TfError *err);

/* Row gather: y[r,:] = x[idx[r],:]. Every idx in [0,N).
 *   y (R,D), x (N,D), idx (R) int32 */
int tf_rows_gather(TfKernels *k, float *y, const float *x, const int32_t *idx, int R, int N, int D, TfError *err);
/* Row scatter: y[idx[r],:] = x[r,:] (accumulate: +=; rows repeated in idx
 * then add up in r order). Rows of y not named are unchanged.
 *   y (N,D), x (R,D), idx (R) int32 */
int tf_rows_scatter(TfKernels *k, float *y, const float *x, const int32_t *idx, int R, int N, int D, int accumulate,
                    TfError *err);

/* ---- matrix products ----------------------------------------------------------- */

/* c = alpha * op(a) op(b) + beta * c (+ bias on every row), contiguous
 * row-major: op(a) (M,K) is a (M,K), or a (K,M) with trans_a; op(b) (K,N)
 * is b (K,N), or b (N,K) with trans_b. b may be bf16.
 *   c (M,N), bias (N) or NULL */
int tf_matmul(TfKernels *k, float *c, const float *a, TfBuf b, int M, int N, int K, int trans_a, int trans_b,
              float alpha, float beta, const float *bias, TfError *err);

/* A linear layer with Hugging Face's [out, in] weights:
 * y = x w^T + bias.   y (N,out), x (N,in), w (out,in) f32|bf16, bias (out) or NULL */
int tf_linear(TfKernels *k, float *y, const float *x, TfBuf w, const float *bias, int N, int in, int out,
              TfError *err);
/* Its backward: dx = dy w (accumulate: dx += dy w); dw += dy^T x;
 * db += column sums of dy. dx, dw, db may each be NULL (frozen text
 * weights: dw = db = NULL computes only dx). dw needs x; x may be NULL
 * when dw is.
 *   dx (N,in), dw (out,in) f32, db (out), dy (N,out), x (N,in), w (out,in) */
int tf_linear_backward(TfKernels *k, float *dx, float *dw, float *db, const float *dy, const float *x, TfBuf w, int N,
                       int in, int out, int accumulate, TfError *err);

/* ---- normalisation ------------------------------------------------------------- */

/* RMSNorm over the last dim as Llama computes it in fp32:
 * y = w * (x * rstd), rstd = 1/sqrt(mean(x^2) + eps), saved for backward.
 *   y (N,D), rstd (N) or NULL, x (N,D), w (D) f32|bf16 */
int tf_rms_norm(TfKernels *k, float *y, float *rstd, const float *x, TfBuf w, int N, int D, float eps, TfError *err);
/*   dx (N,D) or NULL, dw (D) or NULL, dy (N,D), x (N,D), rstd (N), w (D) */
int tf_rms_norm_backward(TfKernels *k, float *dx, float *dw, const float *dy, const float *x, const float *rstd,
                         TfBuf w, int N, int D, TfError *err);

/* LayerNorm over the last dim (biased variance, as torch):
 * y = (x - mean) * rstd * w + b; w, b NULL mean 1 and 0.
 *   y (N,D), mean, rstd (N) or NULL, x (N,D), w, b (D) or NULL */
int tf_layer_norm(TfKernels *k, float *y, float *mean, float *rstd, const float *x, const float *w, const float *b,
                  int N, int D, float eps, TfError *err);
/*   dx (N,D) or NULL, dw, db (D) or NULL, dy, x (N,D), mean, rstd (N), w (D) or NULL */
int tf_layer_norm_backward(TfKernels *k, float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *mean, const float *rstd, const float *w, int N, int D, TfError *err);

/* GroupNorm over `groups` groups of C/groups channels, statistics per
 * (image, group) as PyTorch computes them (biased variance), then the
 * per-channel affine (gamma, beta NULL: 1 and 0); with fuse_silu, SiLU
 * after (inference only: the backward below is for fuse_silu = 0). y may
 * alias x. groups must divide C.
 *   y, x (B,C,HW), mean, rstd (B,groups) or NULL, gamma, beta (C) or NULL */
int tf_group_norm(TfKernels *k, float *y, float *mean, float *rstd, const float *x, const float *gamma,
                  const float *beta, int B, int C, size_t HW, int groups, float eps, int fuse_silu, TfError *err);
/*   dx (B,C,HW) or NULL, dgamma, dbeta (C) or NULL, dy, x (B,C,HW),
 *   mean, rstd (B,groups), gamma (C) or NULL */
int tf_group_norm_backward(TfKernels *k, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                           const float *mean, const float *rstd, const float *gamma, int B, int C, size_t HW,
                           int groups, TfError *err);

/* ---- convolution --------------------------------------------------------------- */

/* Geometry of a 2-D convolution: input (B,C,H,W), K filters (K,C,R,R),
 * stride, and padding per side (diffusers' downsampler pads only right and
 * bottom, so the sides are separate). */
typedef struct TfConv2dShape {
    int B, C, H, W;
    int K, R;
    int stride;
    int pad_top, pad_left, pad_bottom, pad_right;
} TfConv2dShape;

/* Output height and width of a convolution (<= 0 for an invalid one). */
int tf_conv2d_out_h(const TfConv2dShape *s);
int tf_conv2d_out_w(const TfConv2dShape *s);

/* y = conv(x, w) + bias (cross-correlation, as torch).
 *   y (B,K,Ho,Wo), x (B,C,H,W), w (K,C,R,R), bias (K) or NULL */
int tf_conv2d(TfKernels *k, float *y, const float *x, const float *w, const float *bias, const TfConv2dShape *s,
              TfError *err);
/* Its backward: dx = conv^T(dy, w) (overwritten); dw += dy (x) x; db +=
 * sums of dy per filter. Any of dx, dw, db may be NULL.
 *   dx (B,C,H,W), dw (K,C,R,R), db (K), dy (B,K,Ho,Wo), x (B,C,H,W), w (K,C,R,R) */
int tf_conv2d_backward(TfKernels *k, float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                       const TfConv2dShape *s, TfError *err);

/* Nearest-neighbour 2x upsampling and its backward (each input pixel's
 * gradient is the sum of its four copies).
 *   y (B,C,2H,2W), x (B,C,H,W) */
int tf_upsample_nearest2x(TfKernels *k, float *y, const float *x, int B, int C, int H, int W, TfError *err);
/*   dx (B,C,H,W), dy (B,C,2H,2W) */
int tf_upsample_nearest2x_backward(TfKernels *k, float *dx, const float *dy, int B, int C, int H, int W,
                                   TfError *err);

/* ---- rotary position embedding ------------------------------------------------------ */

/* RoPE parameters from a Llama config. factor <= 1 means no scaling;
 * otherwise llama3 scaling (rope_type "llama3") with the other three. */
typedef struct TfRope {
    int head_dim;
    double theta;
    double factor;
    double low_freq_factor, high_freq_factor;
    int original_max_position;
} TfRope;

/* Host: the HD/2 inverse frequencies, in double, llama3 scaling applied
 * (transformers' _compute_llama3_parameters). Returns -1 on bad params.
 *   inv_freq (HD/2) host */
int tf_rope_inv_freq(const TfRope *rope, double *inv_freq, TfError *err);

/* The cos/sin table for positions 0..P-1: cos[p,i] = cos(p * inv_freq[i]),
 * computed in double, stored fp32.   cos, sin (P, HD/2) */
int tf_rope_table(TfKernels *k, float *cos, float *sin, const TfRope *rope, int P, TfError *err);

/* Rotates x in place, rotate-half pairing as in Hugging Face Llama: for
 * i < HD/2, (x[i], x[i+HD/2]) -> (x[i] c - x[i+HD/2] s, x[i+HD/2] c + x[i] s)
 * with c, s at the row's position pos[n] (0 <= pos < P). The backward
 * rotates by the opposite angle (the rotation's transpose).
 *   x (N,H,HD), cos, sin (P,HD/2), pos (N) int32 */
int tf_rope(TfKernels *k, float *x, const float *cos, const float *sin, const int32_t *pos, int N, int H, int HD, int P,
            TfError *err);
int tf_rope_backward(TfKernels *k, float *dx, const float *cos, const float *sin, const int32_t *pos, int N, int H,
                     int HD, int P, TfError *err);

/* ---- attention ---------------------------------------------------------------- */

/* Geometry of grouped-query attention over B sequences of T positions:
 * NH query heads share NKV key/value heads (NH % NKV == 0; query head h
 * uses kv head h / (NH/NKV)); scale is usually 1/sqrt(HD). */
typedef struct TfAttnShape {
    int B, T, NH, NKV, HD;
    float scale;
} TfAttnShape;

/* Masked GQA: y[b,i,h] = sum_j softmax_j(scale q[b,i,h] . k[b,j,g]) v[b,j,g]
 * over the keys j with lo[b,i] <= j < hi[b,i] (the Transfusion mask:
 * hi = i+1 for text, the end of the image span for image patches, lo the
 * start of the packed document). Needs 0 <= lo < hi <= T and hi
 * non-decreasing along each sequence; lo = hi = NULL means every key
 * visible. Softmax in fp32 with the row maximum subtracted; lse (the log
 * of each row's softmax denominator, scaled logits) is saved for the
 * backward. Tiled: fully masked tiles are skipped, fully visible ones
 * skip the mask.
 *   y (B*T, NH, HD), lse (B, NH, T) or NULL,
 *   q (B*T, NH, HD), kk, v (B*T, NKV, HD), lo, hi (B*T) int32 */
int tf_attention_gqa(TfKernels *k, float *y, float *lse, const float *q, const float *kk, const float *v,
                     const int32_t *lo, const int32_t *hi, const TfAttnShape *s, TfError *err);
/* Its backward from the forward's y and lse: dq, dk, dv overwritten (any
 * may be NULL).
 *   dq (B*T,NH,HD), dk, dv (B*T,NKV,HD), dy, y (B*T,NH,HD), lse (B,NH,T) */
int tf_attention_gqa_backward(TfKernels *k, float *dq, float *dk, float *dv, const float *dy, const float *y,
                              const float *lse, const float *q, const float *kk, const float *v, const int32_t *lo,
                              const int32_t *hi, const TfAttnShape *s, TfError *err);

/* Single-head unmasked attention in channel-major layout (the VAE's mid
 * block): y[:, :, i] = sum_j softmax_j(scale * q[:, :, i] . k[:, :, j]) v[:, :, j].
 *   y, q, kk, v (B,C,T) */
int tf_attention(TfKernels *k, float *y, const float *q, const float *kk, const float *v, int B, int C, int T,
                 float scale, TfError *err);

/* ---- embeddings ---------------------------------------------------------------- */

/* y[n,:] = table[ids[n],:]; rows with ids[n] < 0 are left unchanged (the
 * image positions of a sequence). ids >= V is an error.
 *   y (N,D), table (V,D) f32|bf16, ids (N) int32 */
int tf_embedding(TfKernels *k, float *y, TfBuf table, const int32_t *ids, int N, int D, int V, TfError *err);
/* Scatter-add into the trainable rows only: dtable[r,:] += sum of dy[n,:]
 * over the n with ids[n] == rows[r]; positions whose id is not listed
 * (frozen rows, ids < 0) are dropped. rows NULL: every row trainable
 * (R = V, rows[r] = r). rows must be distinct.
 *   dtable (R,D), dy (N,D), ids (N) int32, rows (R) int32 or NULL */
int tf_embedding_backward(TfKernels *k, float *dtable, const float *dy, const int32_t *ids, const int32_t *rows, int R,
                          int N, int D, int V, TfError *err);

/* Sinusoidal timestep embedding as diffusers' get_timestep_embedding:
 * freq_i = exp(-ln(max_period) i / (D/2 - freq_shift)), features
 * [sin(t freq), cos(t freq)] (flip_sin_to_cos: cos first), a zero column
 * when D is odd. Computed in double.   y (n,D), t (n) */
int tf_timestep_embedding(TfKernels *k, float *y, const float *t, int n, int D, int flip_sin_to_cos,
                          float freq_shift, float max_period, TfError *err);

/* ---- losses -------------------------------------------------------------------- */

/* Cross-entropy of the LM head without the logits: logits = h w^T are
 * made a tile at a time (a fixed chunk of rows x a vocabulary tile) with
 * an online logsumexp, so memory stays a few MiB for V = 128256.
 * loss[n] = logsumexp(logits[n]) - logits[n, targets[n]] for targets >= 0;
 * targets[n] < 0: no loss (0) and no gradient. Outputs (each may be NULL):
 *   losses     per-row loss (0 where untargeted)
 *   mean_loss  host: mean over targeted rows (0 when there are none)
 *   dh         d(grad_scale * sum_n loss[n]) / dh (overwritten; grad_scale
 *              = 1/count gives the mean's gradient)
 *   dw         += the same gradient for the listed vocabulary rows only
 *              (the trainable BOI/EOI rows of a frozen head): dw[r,:] is
 *              row w_rows[r] of the head's gradient.
 *   h (N,D), w (V,D) f32|bf16, targets (N) int32,
 *   losses (N), dh (N,D), dw (R,D), w_rows (R) int32 (distinct, < V) */
int tf_cross_entropy_lm_head(TfKernels *k, float *losses, double *mean_loss, float *dh, float *dw,
                             const int32_t *w_rows, int R, const float *h, TfBuf w, const int32_t *targets, int N,
                             int D, int V, float grad_scale, TfError *err);

/* Mean squared error per item (the diffusion loss per image):
 * loss[b] = mean_i (pred[b,i] - target[b,i])^2, in double. Outputs (each
 * may be NULL): losses (B); mean_loss (host) = mean over b of loss[b];
 * dpred = d(grad_scale * sum_b loss[b]) / dpred = grad_scale * 2 (pred -
 * target) / n.
 *   losses (B), dpred, pred, target (B,n) */
int tf_mse(TfKernels *k, float *losses, double *mean_loss, float *dpred, const float *pred, const float *target, int B,
           size_t n, float grad_scale, TfError *err);

/* ---- diffusion inputs ------------------------------------------------------------- */

/* x_t = a[b] x0 + s[b] eps per item (a = sqrt(alpha_bar), s =
 * sqrt(1 - alpha_bar)); a, s are host arrays of B values.
 *   xt, x0, eps (B,n); a, s (B) host */
int tf_noise_mix(TfKernels *k, float *xt, const float *x0, const float *eps, const float *a, const float *s, int B,
                 size_t n, TfError *err);

/* A latent sampled and normalised: z = (mean + exp(logvar/2) eps - shift)
 * * scale, logvar clamped to [-30, 20] as diffusers does; logvar NULL:
 * z = (mean - shift) * scale.   z, mean, logvar, eps (n) */
int tf_latent_sample(TfKernels *k, float *z, const float *mean, const float *logvar, const float *eps, size_t n,
                     float shift, float scale, TfError *err);

/* Counter-based normal noise: y[i] = mean + std * N(0,1) drawn from
 * Philox4x32-10 keyed by seed, counter (offset + i) / 2 and `stream`
 * (Box-Muller in double, two values per counter). The value of element i
 * depends only on (seed, stream, offset + i): not on threads, chunking or
 * how a fill is split, so a run resumed at a known offset continues the
 * same noise.   y (n) */
int tf_randn(TfKernels *k, float *y, size_t n, uint64_t seed, uint64_t stream, uint64_t offset, float mean, float std,
             TfError *err);

/* Host: one Philox4x32-10 block (the generator tf_randn uses, for host
 * decisions that must resume exactly: timesteps, orderings). */
void tf_philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/* ---- optimiser ---------------------------------------------------------------- */

/* AdamW hyper-parameters for one group of parameters; step is 1 on the
 * first update (bias correction 1 - beta^step). */
typedef struct TfAdamW {
    double lr, beta1, beta2, eps, weight_decay;
    long step;
} TfAdamW;

/* One AdamW step over a range, with the arithmetic of torch.optim.AdamW
 * (single-tensor path, fp32): g = grad * grad_scale (the clipping
 * factor; 1 for none); p *= 1 - lr wd; m = lerp(m, g, 1 - beta1);
 * v = v beta2 + (1 - beta2) g g; p -= lr / (1 - beta1^t) * m /
 * (sqrt(v) / sqrt(1 - beta2^t) + eps).
 *   param, grad, m, v (n) */
int tf_adamw(TfKernels *k, float *param, const float *grad, float *m, float *v, size_t n, const TfAdamW *h,
             float grad_scale, TfError *err);

/* Host out: sum of x[i]^2 in double, in fixed chunks (the same for any
 * thread count). The global gradient norm is sqrt of it over the one
 * gradient allocation.   x (n) */
int tf_sum_squares(TfKernels *k, double *out, const float *x, size_t n, TfError *err);

/* Host: torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm /
 * (total_norm + 1e-6)), as a float to pass to tf_adamw. */
float tf_clip_grad_scale(double total_norm, double max_norm);

/* ---- measurement ---------------------------------------------------------------- */

/* Times an n x n x n sgemm with the context's threads and returns the
 * best GFLOP/s of `reps` runs: the machine's practical matrix peak, which
 * benchmarks report their own rate against. 0 when not measurable. */
double tf_kernels_sgemm_peak(TfKernels *k, int n, int reps);

#endif
