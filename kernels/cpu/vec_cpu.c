/* vec_cpu.c: the softmax helpers of the CPU backend (cpu.h: cpu_exp_sum,
 * cpu_row_max), written with GCC/Clang vector types so they run eight
 * lanes wide. Built with -Wno-psabi: the inline helpers pass 32-byte
 * vectors by value, which GCC warns would change the ABI without AVX;
 * they are always inlined, so no call crosses that ABI. */
#include "cpu.h"

#include <string.h>

/* Eight lanes at a time with GCC/Clang vector types: the compiler does
 * not vectorise the clamps and selects of a scalar loop without
 * fast-math. The functions are built twice (AVX2 and baseline x86-64,
 * chosen at load time); neither uses FMA, so both give the same bits. */
typedef float V8f __attribute__((vector_size(32)));
typedef int32_t V8i __attribute__((vector_size(32)));
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CPU_CLONES
#endif

static inline __attribute__((always_inline)) V8f v8_select(V8i mask, V8f a, V8f b) /* mask ? a : b */
{
    return (V8f)(((V8i)a & mask) | ((V8i)b & ~mask));
}

static inline __attribute__((always_inline)) V8f v8_splat(float f)
{
    return (V8f){f, f, f, f, f, f, f, f};
}

static inline __attribute__((always_inline)) V8f v8_exp(V8f x)
{
    const V8f hi = v8_splat(88.3762626647949f), lo = v8_splat(-87.33654475f);
    V8f xc = v8_select(x > hi, hi, x);
    xc = v8_select(xc < lo, lo, xc);
    V8f fx = xc * 1.44269504088896341f; /* n = round(x / ln 2) by the 1.5 * 2^23 trick */
    fx = (fx + 12582912.0f) - 12582912.0f;
    V8f r = xc - fx * 0.693359375f; /* ln 2 in two parts */
    r = r - fx * -2.12194440e-4f;
    V8f p = r * 1.9875691500E-4f + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    V8f y = p * r * r + r + 1.0f;
    V8i bits = (__builtin_convertvector(fx, V8i) + 127) << 23; /* 2^n */
    y *= (V8f)bits;
    return v8_select(x < lo, v8_splat(0.0f), y);
}

CPU_CLONES float cpu_exp_sum(float *x, int n, float shift)
{
    V8f acc = v8_splat(0.0f);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        V8f a;
        memcpy(&a, x + j, sizeof a);
        a = v8_exp(a - shift);
        memcpy(x + j, &a, sizeof a);
        acc += a;
    }
    if (j < n) { /* the tail through the same lanes, padded with zeros */
        float t[8] = {0};
        memcpy(t, x + j, (size_t)(n - j) * sizeof *t);
        V8f a;
        memcpy(&a, t, sizeof a);
        a = v8_exp(a - shift);
        memcpy(t, &a, sizeof a);
        for (int l = n - j; l < 8; l++)
            t[l] = 0.0f;
        memcpy(x + j, t, (size_t)(n - j) * sizeof *t);
        memcpy(&a, t, sizeof a);
        acc += a;
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

CPU_CLONES float cpu_row_max(const float *x, int n, float init)
{
    V8f m8 = v8_splat(init);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        V8f a;
        memcpy(&a, x + j, sizeof a);
        m8 = v8_select(a > m8, a, m8);
    }
    float m = init;
    for (int l = 0; l < 8; l++)
        m = m8[l] > m ? m8[l] : m;
    for (; j < n; j++)
        m = x[j] > m ? x[j] : m;
    return m;
}
