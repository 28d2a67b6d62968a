/* frame.c: TFRecord frame headers (little-endian on every host). */
#include "shards.h"

void shard_frame_header(uint8_t header[SHARD_FRAME_HEADER], uint64_t len)
{
    for (int i = 0; i < 8; i++)
        header[i] = (uint8_t)(len >> (8 * i));
    uint32_t c = shard_crc_mask(shard_crc32c(0, header, 8));
    for (int i = 0; i < 4; i++)
        header[8 + i] = (uint8_t)(c >> (8 * i));
}
