/* CRC-32C known answers (RFC 3720 B.4 and the classic check value), the
 * hardware path against the portable one on many lengths and alignments,
 * and TFRecord's mask. */
#include "shards.h"
#include "test.h"

int main(void)
{
    uint8_t buf[3 * 4096 * 4 + 64];
    CHECK(shard_crc32c(0, "123456789", 9) == 0xE3069283u);
    CHECK(shard_crc32c_portable(0, "123456789", 9) == 0xE3069283u);
    memset(buf, 0, 32);
    CHECK(shard_crc32c(0, buf, 32) == 0x8A9136AAu);
    memset(buf, 0xff, 32);
    CHECK(shard_crc32c(0, buf, 32) == 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    CHECK(shard_crc32c(0, buf, 32) == 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)(31 - i);
    CHECK(shard_crc32c(0, buf, 32) == 0x113FDB5Cu);

    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof buf; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    /* Lengths around the three-stream block size, odd alignments, and
     * incremental use (crc of a||b == crc(crc(a), b)). */
    size_t lens[] = {0, 1, 7, 8, 9, 63, 4095, 4096, 12287, 12288, 12289, 24576 + 5, 3 * 4096 * 4};
    for (size_t a = 0; a < 8; a++)
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
            size_t n = lens[k];
            uint32_t hw = shard_crc32c(0, buf + a, n), sw = shard_crc32c_portable(0, buf + a, n);
            CHECKF(hw == sw, "align %zu len %zu: %08x vs %08x", a, n, hw, sw);
            size_t cut = n / 3;
            CHECK(shard_crc32c(shard_crc32c(0, buf + a, cut), buf + a + cut, n - cut) == sw);
            uint32_t ca = shard_crc32c(0, buf + a, cut), cb = shard_crc32c(0, buf + a + cut, n - cut);
            CHECKF(shard_crc32c_combine(ca, cb, n - cut) == sw, "combine at len %zu cut %zu", n, cut);
        }
    /* TFRecord mask: known value of mask(0) and a round trip. */
    CHECK(shard_crc_mask(0) == 0xa282ead8u);
    CHECK(shard_crc_unmask(shard_crc_mask(0xE3069283u)) == 0xE3069283u);
    /* Header of an empty record as TensorFlow writes it: length 0, then
     * masked crc32c of 8 zero bytes. */
    uint8_t h[SHARD_FRAME_HEADER];
    shard_frame_header(h, 0);
    memset(buf, 0, 8);
    uint32_t want = shard_crc_mask(shard_crc32c(0, buf, 8));
    CHECK((uint32_t)(h[8] | h[9] << 8 | h[10] << 16 | (uint32_t)h[11] << 24) == want);
    return test_main_end("test_shards_crc32c");
}
