/* The record source over a dataset folder: the order is the manifest's;
 * for every world size 1..5 and both splits, the ranks together read every
 * record exactly once, blocks differ in size by at most one; a position
 * saved after any record resumes exactly at the next one (also after more
 * shards were published); positions from another rank or split are
 * refused; expected facts that differ are refused with both named; a
 * damaged record is reported with its shard, record and offset and reading
 * goes on; record_source_keys collects every key. */
#include "shards.h"
#include "test.h"

#include <unistd.h>

#define N_SHARDS 7 /* uneven on purpose: shard 6 is short */
#define PER_SHARD 23
#define N_RECORDS (6 * PER_SHARD + 5)

static char dir[] = "/tmp/tf_source_XXXXXX";

static void write_dataset(int first, int count)
{
    ShardFacts facts = {0};
    snprintf(facts.tokenizer_id, sizeof facts.tokenizer_id, "tok-a");
    snprintf(facts.vae_id, sizeof facts.vae_id, "vae-a");
    ShardWriterOptions wo = {.max_shard_records = PER_SHARD, .no_fsync = 1};
    TfError err = {{0}};
    ShardWriter *w = shard_writer_open(dir, &wo, &facts, &err);
    REQUIRE(w);
    for (int i = first; i < first + count; i++) {
        char key[32], caption[32];
        snprintf(key, sizeof key, "k%05d", i);
        snprintf(caption, sizeof caption, "caption %d", i);
        Sample s = TRANSFUSE__V1__SAMPLE__INIT;
        s.key = key;
        s.caption = caption;
        REQUIRE(shard_writer_append_sample(w, &s, &err) == 0);
    }
    REQUIRE(shard_writer_close(w, &err) == 0);
}

/* Reads up to `max` records of rank r of w into ids (the number in the
 * key); returns the count. With pos_out, the position after them. */
static int read_rank(int r, int w, RecordSplit split, const json_t *pos, int max, int *ids, json_t **pos_out)
{
    RecordSourceOptions o = {.path = dir, .rank = r, .world_size = w, .split = split, .position = pos};
    TfError err = {{0}};
    RecordSource *src = record_source_open(&o, &err);
    REQUIRE(src);
    Record rec;
    ShardProblem p;
    int n = 0, rc;
    while (n < max && (rc = record_source_next(src, &rec, 0, &p, &err)) != RECORD_SOURCE_END) {
        REQUIRE(rc == RECORD_SOURCE_RECORD);
        CHECK(rec.key_len == 6 && rec.key[0] == 'k');
        ids[n++] = atoi(rec.key + 1);
    }
    if (pos_out)
        *pos_out = record_source_position_json(src);
    record_source_free(src);
    return n;
}

int main(void)
{
    REQUIRE(mkdtemp(dir));
    write_dataset(0, N_RECORDS);
    static int ids[N_RECORDS + 10], seen[N_RECORDS];

    /* Order: one reader sees the records in the order written. */
    int n = read_rank(0, 1, RECORD_SPLIT_SHARDS, NULL, N_RECORDS + 10, ids, NULL);
    CHECK(n == N_RECORDS);
    for (int i = 0; i < n; i++)
        CHECK(ids[i] == i);

    for (int split = 0; split < 2; split++)
        for (int w = 1; w <= 5; w++) {
            memset(seen, 0, sizeof seen);
            int lo = N_RECORDS, hi = 0;
            for (int r = 0; r < w; r++) {
                int got = read_rank(r, w, (RecordSplit)split, NULL, N_RECORDS + 10, ids, NULL);
                lo = got < lo ? got : lo;
                hi = got > hi ? got : hi;
                for (int i = 0; i < got; i++) {
                    REQUIRE(ids[i] >= 0 && ids[i] < N_RECORDS);
                    seen[ids[i]]++;
                    if (split == RECORD_SPLIT_BLOCKS && i)
                        CHECKF(ids[i] == ids[i - 1] + 1, "blocks are contiguous (w %d r %d)", w, r);
                    if (split == RECORD_SPLIT_SHARDS)
                        CHECKF((ids[i] / PER_SHARD) % w == r, "shard split: record %d on rank %d of %d", ids[i], r,
                               w);
                }
            }
            for (int i = 0; i < N_RECORDS; i++)
                CHECKF(seen[i] == 1, "split %d world %d: record %d read %d times", split, w, i, seen[i]);
            if (split == RECORD_SPLIT_BLOCKS)
                CHECKF(hi - lo <= 1, "world %d: blocks of %d and %d records", w, lo, hi);
        }

    /* Resume: stop after k records, reopen at the saved position. */
    for (int split = 0; split < 2; split++)
        for (int k = 0; k <= 40; k += 7) {
            int whole[N_RECORDS], part[N_RECORDS];
            int nw = read_rank(1, 3, (RecordSplit)split, NULL, N_RECORDS, whole, NULL);
            json_t *pos = NULL;
            int na = read_rank(1, 3, (RecordSplit)split, NULL, k, part, &pos);
            /* Through JSON text, as a checkpoint stores it. */
            char *text = json_dumps(pos, JSON_COMPACT);
            json_decref(pos);
            pos = json_loads(text, 0, NULL);
            free(text);
            int nb = read_rank(1, 3, (RecordSplit)split, pos, N_RECORDS, part + na, NULL);
            CHECKF(na + nb == nw, "split %d k %d: %d + %d records, whole %d", split, k, na, nb, nw);
            CHECK(!memcmp(whole, part, sizeof(int) * (size_t)nw));
            json_decref(pos);
        }

    /* A position pins the shards: more shards published later do not move
     * the blocks of a resumed reader. */
    json_t *pos = NULL;
    int before[N_RECORDS], after[N_RECORDS];
    int nb0 = read_rank(2, 4, RECORD_SPLIT_BLOCKS, NULL, N_RECORDS, before, NULL);
    int k0 = read_rank(2, 4, RECORD_SPLIT_BLOCKS, NULL, 5, after, &pos);
    write_dataset(N_RECORDS, 50);
    int k1 = read_rank(2, 4, RECORD_SPLIT_BLOCKS, pos, N_RECORDS, after + k0, NULL);
    CHECK(k0 + k1 == nb0 && !memcmp(before, after, sizeof(int) * (size_t)nb0));

    /* Refusals: another rank, world or split; other facts. */
    TfError err = {{0}};
    RecordSourceOptions o = {.path = dir, .rank = 1, .world_size = 4, .split = RECORD_SPLIT_BLOCKS, .position = pos};
    CHECK(!record_source_open(&o, &err) && strstr(err.msg, "rank 2 of 4"));
    o = (RecordSourceOptions){.path = dir, .rank = 2, .world_size = 4, .position = pos};
    CHECK(!record_source_open(&o, &err) && strstr(err.msg, "split"));
    json_decref(pos);
    ShardFacts want = {0};
    snprintf(want.vae_id, sizeof want.vae_id, "vae-b");
    o = (RecordSourceOptions){.path = dir, .expect = &want};
    CHECKF(!record_source_open(&o, &err) && strstr(err.msg, "vae-b") && strstr(err.msg, "vae-a"), "%s", err.msg);
    RecordSource *src = record_source_open(&(RecordSourceOptions){.path = dir}, &err);
    REQUIRE(src);
    CHECK(!strcmp(record_source_facts(src)->tokenizer_id, "tok-a"));
    record_source_free(src);

    /* Damage: one flipped byte in shard 2 is one problem, the rest reads. */
    char path[4200];
    snprintf(path, sizeof path, "%s/shard-000002.tfrecord", dir);
    FILE *f = fopen(path, "r+b");
    REQUIRE(f);
    fseek(f, 20, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 20, SEEK_SET);
    fputc(ch ^ 1, f);
    fclose(f);
    src = record_source_open(&(RecordSourceOptions){.path = dir, .check_shards = 1}, &err);
    REQUIRE(src);
    Record rec;
    ShardProblem p;
    int rc, good = 0, problems = 0, located = 0;
    while ((rc = record_source_next(src, &rec, 0, &p, &err)) != RECORD_SOURCE_END) {
        REQUIRE(rc > 0);
        if (rc == RECORD_SOURCE_RECORD)
            good++;
        else {
            problems++;
            located += !strcmp(p.shard, "shard-000002.tfrecord") && p.record == 0 && p.offset == 0;
        }
    }
    CHECKF(good == N_RECORDS + 50 - 1, "%d good", good);
    CHECKF(problems == 2 && located == 2, "%d problems (payload CRC, file CRC), %d located", problems, located);
    record_source_free(src);

    /* Every key, for a resuming job. */
    ShardKeySet *keys = shard_keyset_new();
    uint64_t damaged = 0;
    CHECK(record_source_keys(dir, keys, &damaged, &err) == 0);
    CHECK(shard_keyset_count(keys) == N_RECORDS + 50 - 1 && damaged == 1);
    CHECK(shard_keyset_has(keys, "k00000", 6, NULL) && !shard_keyset_has(keys, "k99999", 6, NULL));
    shard_keyset_free(keys);

    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return test_main_end("test_shards_source");
}
