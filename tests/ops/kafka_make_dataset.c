/* kafka_make_dataset: writes N deterministic ~17 KB Sample records (the
 * same ones the Kafka unit tests use) into a dataset folder, and with
 * --files also one file per record, for the broker/kcat interop test and
 * bench/kafka_bench.sh.
 *   kafka_make_dataset DIR N [--files FILEDIR] */
#include "../shards/kafka/kafka_test_util.h"

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 5) {
        fprintf(stderr, "usage: kafka_make_dataset DIR N [--files FILEDIR]\n");
        return 2;
    }
    long n = atol(argv[2]);
    ShardFacts facts;
    memset(&facts, 0, sizeof facts);
    snprintf(facts.tokenizer_id, sizeof facts.tokenizer_id, "tok-1234abcd");
    snprintf(facts.vae_id, sizeof facts.vae_id, "vae-feedbeef");
    TfError err = {{0}};
    ShardWriterOptions wo = {.max_shard_records = 100, .no_fsync = 1};
    ShardWriter *w = shard_writer_open(argv[1], &wo, &facts, &err);
    if (!w) {
        fprintf(stderr, "kafka_make_dataset: %s\n", err.msg);
        return 1;
    }
    for (long i = 0; i < n; i++) {
        size_t len;
        char key[32];
        uint8_t *rec = test_record((uint32_t)i, &len, key);
        if (shard_writer_append(w, rec, len, key, strlen(key), &err)) {
            fprintf(stderr, "kafka_make_dataset: %s\n", err.msg);
            return 1;
        }
        if (argc == 5) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s.pb", argv[4], key);
            FILE *f = fopen(path, "wb");
            if (!f || fwrite(rec, 1, len, f) != len || fclose(f)) {
                fprintf(stderr, "kafka_make_dataset: cannot write %s\n", path);
                return 1;
            }
        }
        free(rec);
    }
    if (shard_writer_close(w, &err)) {
        fprintf(stderr, "kafka_make_dataset: %s\n", err.msg);
        return 1;
    }
    return 0;
}
