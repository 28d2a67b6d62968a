/* philox.h: the counter-based generator of tf_randn, shared by the host
 * (kernels.c, cpu/) and the CUDA device code (cuda/), so both backends
 * draw the same stream from one definition. Private to kernels/. */
#ifndef TRANSFUSE_KERNELS_PHILOX_H
#define TRANSFUSE_KERNELS_PHILOX_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define TF_HOST_DEVICE __host__ __device__
#else
#define TF_HOST_DEVICE
#endif

/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
 * 3", SC'11), the generator of curand and PyTorch's CUDA backend. */
static inline TF_HOST_DEVICE void tf_philox_block(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        if (r) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The two normals of counter pair p of (seed, stream): Box-Muller in
 * double over two 53-bit uniforms from one block, u1 in (0,1] so the log
 * is finite. Element 2p takes out[0], element 2p+1 out[1]. */
static inline TF_HOST_DEVICE void tf_randn_pair(uint64_t seed, uint64_t stream, uint64_t p, double out[2])
{
    const uint32_t ctr[4] = {(uint32_t)p, (uint32_t)(p >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t r[4];
    tf_philox_block(ctr, key, r);
    const double u1 = ((double)((((uint64_t)r[0] << 32) | r[1]) >> 11) + 1.0) * 0x1p-53;
    const double u2 = (double)((((uint64_t)r[2] << 32) | r[3]) >> 11) * 0x1p-53;
    const double rad = sqrt(-2.0 * log(u1)), th = 2.0 * 3.14159265358979323846 * u2;
    out[0] = rad * cos(th);
    out[1] = rad * sin(th);
}

#endif
