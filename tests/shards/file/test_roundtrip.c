/* Round trip of thousands of records across shard rolls (by count and by
 * bytes): every record comes back byte-identical sequentially, by index and
 * by key; the manifest agrees; a second writer appends after the existing
 * shards; a writer with other facts is refused; an unfinished shard is
 * never published. */
#include "shards.h"
#include "test.h"

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#define N_RECORDS 3000

static uint32_t rng = 7;
static uint32_t next_rand(void)
{
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}

/* Builds record i: varied sizes (a few bytes to ~20 KB of latent). */
static uint8_t *make_record(int i, size_t *len, char *key, size_t key_cap)
{
    Sample s = TRANSFUSE__V1__SAMPLE__INIT;
    Transfuse__V1__Tensor t = TRANSFUSE__V1__TENSOR__INIT;
    snprintf(key, key_cap, "sample-%05d", i);
    char caption[64];
    snprintf(caption, sizeof caption, "caption number %d", i);
    s.key = key;
    s.caption = caption;
    uint32_t tokens[64];
    s.n_tokens = (size_t)(i % 64);
    for (size_t k = 0; k < s.n_tokens; k++)
        tokens[k] = next_rand() % 128256;
    s.tokens = tokens;
    uint32_t shape[3] = {4, 32, (uint32_t)(1 + i % 40)};
    size_t bytes = 2u * 4 * 32 * shape[2];
    uint8_t *data = malloc(bytes);
    for (size_t k = 0; k < bytes; k++)
        data[k] = (uint8_t)next_rand();
    t.dtype = TRANSFUSE__V1__DTYPE__DTYPE_BF16;
    t.n_shape = 3;
    t.shape = shape;
    t.data.data = data;
    t.data.len = bytes;
    s.latent_mean = &t;
    uint8_t *out = sample_encode(&s, len);
    free(data);
    return out;
}

static char tmpdir[] = "/tmp/tf_roundtrip_XXXXXX";

static size_t count_files(const char *dir, const char *needle)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strstr(e->d_name, needle) != NULL;
    if (d)
        closedir(d);
    return n;
}

int main(void)
{
    REQUIRE(mkdtemp(tmpdir));
    TfError err = {{0}};
    ShardFacts facts = {.latent_scaling = 0.18215, .latent_rank = 3, .latent_shape = {4, 32, 40}};
    snprintf(facts.tokenizer_id, sizeof facts.tokenizer_id, "tok-abc");
    snprintf(facts.vae_id, sizeof facts.vae_id, "vae-123");
    snprintf(facts.latent_dtype, sizeof facts.latent_dtype, "bf16");
    ShardWriterOptions wo = {.max_shard_records = 700, .max_shard_bytes = 4u << 20, .no_fsync = 1};

    uint8_t **want = calloc(N_RECORDS, sizeof *want);
    size_t *want_len = calloc(N_RECORDS, sizeof *want_len);
    char key[32];
    ShardWriter *w = shard_writer_open(tmpdir, &wo, &facts, &err);
    REQUIRE(w);
    for (int i = 0; i < N_RECORDS / 2; i++) {
        want[i] = make_record(i, &want_len[i], key, sizeof key);
        CHECKF(shard_writer_append(w, want[i], want_len[i], key, strlen(key), &err) == 0, "%s", err.msg);
    }
    CHECK(shard_writer_close(w, &err) == 0);

    /* A writer with other facts is refused. */
    ShardFacts other = facts;
    snprintf(other.vae_id, sizeof other.vae_id, "vae-999");
    CHECK(shard_writer_open(tmpdir, &wo, &other, &err) == NULL);
    CHECKF(strstr(err.msg, "VAE differs") != NULL, "%s", err.msg);

    /* A second writer appends after the existing shards. */
    w = shard_writer_open(tmpdir, &wo, &facts, &err);
    REQUIRE(w);
    for (int i = N_RECORDS / 2; i < N_RECORDS; i++) {
        want[i] = make_record(i, &want_len[i], key, sizeof key);
        CHECK(shard_writer_append(w, want[i], want_len[i], key, strlen(key), &err) == 0);
    }
    CHECK(shard_writer_close(w, &err) == 0);

    /* An abandoned writer publishes nothing and leaves no temp file. */
    w = shard_writer_open(tmpdir, &wo, &facts, &err);
    REQUIRE(w);
    CHECK(shard_writer_append(w, want[0], want_len[0], "x", 1, &err) == 0);
    shard_writer_free(w);
    CHECK(count_files(tmpdir, ".tmp") == 0);

    ShardManifest *m = shard_manifest_load(tmpdir, &err);
    REQUIRE(m);
    CHECKF(m->records == N_RECORDS, "manifest lists %llu records", (unsigned long long)m->records);
    CHECKF(m->n_shards >= 6, "only %zu shards: no rolling?", m->n_shards);
    CHECK(count_files(tmpdir, ".tfrecord.idx") == m->n_shards);
    CHECK(!strcmp(m->facts.vae_id, "vae-123") && m->facts.latent_rank == 3 && m->facts.latent_shape[2] == 40);
    uint64_t got = 0;
    for (size_t s = 0; s < m->n_shards; s++) {
        const ShardEntry *e = &m->shards[s];
        CHECK(e->bytes <= wo.max_shard_bytes && e->records <= wo.max_shard_records);
        char path[4096];
        tf_path_join(path, sizeof path, tmpdir, e->name);
        ShardFile *f = shard_file_open(path, &err);
        REQUIRE(f);
        CHECK(shard_file_index_count(f) == (int64_t)e->records);
        CHECK(shard_crc32c(0, shard_file_data(f), shard_file_size(f)) == e->crc32c);
        ShardCursor c;
        shard_cursor_init(&c, f);
        const uint8_t *p;
        size_t len;
        ShardProblem prob;
        uint64_t first = got;
        while (shard_cursor_next(&c, &p, &len, &prob) == 1) {
            REQUIRE(got < N_RECORDS);
            CHECKF(len == want_len[got] && !memcmp(p, want[got], len), "record %llu differs", (unsigned long long)got);
            got++;
        }
        /* Random access and key lookup agree with the sequential read. */
        for (uint64_t r = 0; r < e->records; r += 97) {
            CHECK(shard_file_get(f, r, &p, &len, &prob) == 1 && len == want_len[first + r] &&
                  !memcmp(p, want[first + r], len));
            snprintf(key, sizeof key, "sample-%05d", (int)(first + r));
            CHECK(shard_file_find_key(f, key) == (int64_t)r);
        }
        CHECK(shard_file_find_key(f, "no-such-key") == -1);
        CHECK(shard_file_get(f, e->records, &p, &len, &prob) == -1);
        shard_file_free(f);
    }
    CHECKF(got == N_RECORDS, "read %llu records", (unsigned long long)got);

    /* Rolling by bytes alone: every shard stays under the limit. */
    char bydir[64];
    snprintf(bydir, sizeof bydir, "%s/bybytes", tmpdir);
    ShardWriterOptions bo = {.max_shard_bytes = 64 * 1024, .no_fsync = 1};
    w = shard_writer_open(bydir, &bo, NULL, &err);
    REQUIRE(w);
    for (int i = 0; i < 200; i++)
        CHECK(shard_writer_append(w, want[i], want_len[i], "k", 1, &err) == 0);
    CHECK(shard_writer_close(w, &err) == 0);
    ShardManifest *bm = shard_manifest_load(bydir, &err);
    REQUIRE(bm);
    CHECK(bm->records == 200 && bm->n_shards > 3);
    for (size_t s = 0; s < bm->n_shards; s++)
        CHECK(bm->shards[s].bytes <= 64 * 1024);
    shard_manifest_free(bm);

    /* Decoding with an arena gives the same Sample as without. */
    ShardArena arena;
    shard_arena_init(&arena, 256);
    for (int i = 0; i < 50; i++) {
        Sample *a = sample_decode(want[i], want_len[i], &arena, &err);
        Sample *b = sample_decode(want[i], want_len[i], NULL, &err);
        REQUIRE(a && b);
        CHECK(!strcmp(a->key, b->key) && a->n_tokens == b->n_tokens &&
              a->latent_mean->data.len == b->latent_mean->data.len &&
              !memcmp(a->latent_mean->data.data, b->latent_mean->data.data, a->latent_mean->data.len));
        sample_free(b);
        if (i % 10 == 9)
            shard_arena_reset(&arena);
    }
    shard_arena_deinit(&arena);

    for (int i = 0; i < N_RECORDS; i++)
        free(want[i]);
    free(want);
    free(want_len);
    shard_manifest_free(m);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    CHECK(system(cmd) == 0);
    return test_main_end("test_shards_roundtrip");
}
