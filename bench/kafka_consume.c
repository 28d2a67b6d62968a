/* kafka_consume: consumer throughput of the transfuse Kafka source, as a
 * trainer rank uses it: every partition of TOPIC to the high watermark,
 * each record's bytes touched (CRC-32C) and, with --decode, parsed into a
 * Sample. Prints records, MB and MB/s. Used by bench/kafka_bench.sh.
 *   kafka_consume BOOTSTRAP TOPIC [--decode] */
#include <stdio.h>
#include <string.h>

#include "shards.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: kafka_consume BOOTSTRAP TOPIC [--decode]\n");
        return 2;
    }
    int decode = argc > 3 && !strcmp(argv[3], "--decode");
    TfError err = {{0}};
    double t0 = tf_now();
    KafkaSourceOptions o = {.bootstrap = argv[1], .topic = argv[2], .group_id = "bench", .until = KAFKA_UNTIL_SNAPSHOT,
                            .commit_interval_ms = -1};
    KafkaSource *src = kafka_source_new(&o, &err);
    if (!src) {
        fprintf(stderr, "kafka_consume: %s\n", err.msg);
        return 1;
    }
    ShardArena arena;
    shard_arena_init(&arena, 1 << 20);
    uint64_t n = 0, bytes = 0;
    uint32_t crc = 0;
    int rc;
    KafkaRecord r;
    while ((rc = kafka_source_next(src, &r, 10000, &err)) == KAFKA_RECORD) {
        n++;
        bytes += r.len;
        crc = shard_crc32c(crc, r.payload, r.len);
        if (decode) {
            shard_arena_reset(&arena);
            if (!sample_decode(r.payload, r.len, &arena, &err)) {
                fprintf(stderr, "kafka_consume: %s\n", err.msg);
                return 1;
            }
        }
    }
    double dt = tf_now() - t0;
    if (rc != KAFKA_END) {
        fprintf(stderr, "kafka_consume: stopped with %d: %s\n", rc, err.msg);
        return 1;
    }
    printf("%llu records, %.1f MB in %.3f s: %.1f MB/s (crc %08x)\n", (unsigned long long)n, bytes / 1e6, dt,
           bytes / 1e6 / dt, crc);
    shard_arena_deinit(&arena);
    kafka_source_free(src);
    return 0;
}
