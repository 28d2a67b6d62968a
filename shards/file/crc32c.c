/* crc32c.c: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of TFRecord framing and of whole shard files.
 *
 * On x86-64 with SSE4.2 the crc32 instruction does 8 bytes per step; its
 * latency (3 cycles) would cap one stream at ~8 bytes / 3 cycles, so long
 * buffers run three independent streams over thirds of a block and merge
 * them with a carry-less shift (precomputed "multiply by x^(8n)" tables).
 * Elsewhere, slicing-by-8 tables. Both produce the same values; a
 * known-answer test pins them. */
#include "shards.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u

/* Every table of this file is built once, on the first call into any path,
 * under pthread_once (first calls may come from several threads at once):
 * the slicing-by-8 tables, the powers of x for combining and, on x86-64,
 * the CPU check and the three-stream shift tables. */
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
static void tables_init(void);

static uint32_t table[8][256];

static void table_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

static uint32_t crc_portable_raw(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len && ((uintptr_t)p & 7)) {
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
        len--;
    }
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= crc;
        crc = table[7][v & 0xff] ^ table[6][(v >> 8) & 0xff] ^ table[5][(v >> 16) & 0xff] ^
              table[4][(v >> 24) & 0xff] ^ table[3][(v >> 32) & 0xff] ^ table[2][(v >> 40) & 0xff] ^
              table[1][(v >> 48) & 0xff] ^ table[0][v >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
    return crc;
}

uint32_t shard_crc32c_portable(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&tables_once, tables_init);
    return ~crc_portable_raw(~crc, data, len);
}

#if defined(__x86_64__)
#include <nmmintrin.h>

/* Shifting a CRC state over n zero bytes is linear in the state: for the
 * block size used below, tables give the effect of each state byte. */
#define STREAM_BYTES 4096u /* each of the three streams' share of a block */
static uint32_t shift_table[4][256];
static int have_hw; /* the CPU has SSE4.2's crc32 */

static uint32_t gf2_shift_zeros(uint32_t crc, size_t n)
{
    /* Slow but exact: feed n zero bytes through the bytewise table. Only
     * used to build shift_table once. */
    while (n--)
        crc = (crc >> 8) ^ table[0][crc & 0xff];
    return crc;
}

/* Needs table[0]. */
static void shift_init(void)
{
    __builtin_cpu_init();
    have_hw = __builtin_cpu_supports("sse4.2");
    if (!have_hw)
        return;
    for (int b = 0; b < 4; b++)
        for (uint32_t v = 0; v < 256; v++)
            shift_table[b][v] = gf2_shift_zeros(v << (8 * b), STREAM_BYTES);
}

static inline uint32_t shift_block(uint32_t crc)
{
    return shift_table[0][crc & 0xff] ^ shift_table[1][(crc >> 8) & 0xff] ^ shift_table[2][(crc >> 16) & 0xff] ^
           shift_table[3][crc >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw_raw(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len && ((uintptr_t)p & 7)) {
        crc = _mm_crc32_u8(crc, *p++);
        len--;
    }
    uint64_t c0 = crc;
    /* Three interleaved streams over blocks of 3 * STREAM_BYTES. */
    while (len >= 3 * STREAM_BYTES) {
        uint64_t c1 = 0, c2 = 0;
        const uint8_t *p1 = p + STREAM_BYTES, *p2 = p + 2 * STREAM_BYTES;
        for (size_t i = 0; i < STREAM_BYTES; i += 8) {
            uint64_t a, b, c;
            memcpy(&a, p + i, 8);
            memcpy(&b, p1 + i, 8);
            memcpy(&c, p2 + i, 8);
            c0 = _mm_crc32_u64(c0, a);
            c1 = _mm_crc32_u64(c1, b);
            c2 = _mm_crc32_u64(c2, c);
        }
        /* crc(A||B||C) = shift(shift(cA) ^ cB) ^ cC for raw (unfinalised) states. */
        c0 = shift_block((uint32_t)c0) ^ (uint32_t)c1;
        c0 = shift_block((uint32_t)c0) ^ (uint32_t)c2;
        p += 3 * STREAM_BYTES;
        len -= 3 * STREAM_BYTES;
    }
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c0 = _mm_crc32_u64(c0, v);
        p += 8;
        len -= 8;
    }
    crc = (uint32_t)c0;
    while (len--)
        crc = _mm_crc32_u8(crc, *p++);
    return crc;
}

uint32_t shard_crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&tables_once, tables_init);
    if (!have_hw)
        return shard_crc32c_portable(crc, data, len);
    return ~crc_hw_raw(~crc, data, len);
}
#else
static void shift_init(void)
{
}

uint32_t shard_crc32c(uint32_t crc, const void *data, size_t len)
{
    return shard_crc32c_portable(crc, data, len);
}
#endif

uint32_t shard_crc_mask(uint32_t crc)
{
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

uint32_t shard_crc_unmask(uint32_t masked)
{
    uint32_t rot = masked - 0xa282ead8u;
    return (rot >> 17) | (rot << 15);
}

/* ---- combining: crc(A || B) from crc(A), crc(B) and |B| ----
 * Multiplying by x^(8n) modulo the polynomial shifts a CRC over n bytes.
 * Records of one dataset mostly share a length, so the operator for the
 * last length is cached per thread and a combine costs one multiply. */

/* a * b modulo P, in the reflected bit order CRCs use. */
static uint32_t mult_mod_p(uint32_t a, uint32_t b)
{
    uint32_t m = 1u << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0)
                break;
        }
        m >>= 1;
        b = b & 1 ? (b >> 1) ^ POLY : b >> 1;
    }
    return p;
}

/* x2n[i] = x^(2^i) modulo P. */
static uint32_t x2n[32];

static void x2n_init(void)
{
    uint32_t p = 1u << 30; /* x^1 */
    x2n[0] = p;
    for (int i = 1; i < 32; i++)
        x2n[i] = p = mult_mod_p(p, p);
}

static void tables_init(void)
{
    table_init();
    shift_init();
    x2n_init();
}

/* x^(n * 2^k) modulo P. */
static uint32_t x_pow_mod_p(uint64_t n, unsigned k)
{
    pthread_once(&tables_once, tables_init);
    uint32_t p = 1u << 31; /* x^0 */
    while (n) {
        if (n & 1)
            p = mult_mod_p(x2n[k & 31], p);
        n >>= 1;
        k++;
    }
    return p;
}

uint32_t shard_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b)
{
    static _Thread_local uint64_t cached_len = UINT64_MAX;
    static _Thread_local uint32_t cached_op;
    if (len_b != cached_len) {
        cached_op = x_pow_mod_p(len_b, 3);
        cached_len = len_b;
    }
    return mult_mod_p(cached_op, crc_a) ^ crc_b;
}
