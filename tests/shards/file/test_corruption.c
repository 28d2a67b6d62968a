/* Damage at each part of the framing, flipped payload bytes, a payload that
 * is not a Sample, a truncated tail, a missing or damaged index: each is
 * reported at its record and byte offset, and every other record is still
 * read. */
#include "shards.h"
#include "test.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define N 40

static char dir[] = "/tmp/tf_corrupt_XXXXXX";
static char shard[4200], copy_path[4200];
static uint64_t offsets[N + 1];
static size_t lens[N];

static void write_dataset(void)
{
    TfError err = {{0}};
    ShardWriterOptions wo = {.no_fsync = 1};
    ShardWriter *w = shard_writer_open(dir, &wo, NULL, &err);
    REQUIRE(w);
    uint64_t off = 0;
    for (int i = 0; i < N; i++) {
        char key[16], caption[64];
        snprintf(key, sizeof key, "k%02d", i);
        snprintf(caption, sizeof caption, "record %d with some caption text", i);
        Sample s = TRANSFUSE__V1__SAMPLE__INIT;
        s.key = key;
        s.caption = caption;
        size_t len;
        uint8_t *b = sample_encode(&s, &len);
        REQUIRE(shard_writer_append(w, b, len, key, strlen(key), &err) == 0);
        free(b);
        offsets[i] = off;
        lens[i] = len;
        off += 16 + len;
    }
    offsets[N] = off;
    REQUIRE(shard_writer_close(w, &err) == 0);
    snprintf(shard, sizeof shard, "%s/shard-000000.tfrecord", dir);
    snprintf(copy_path, sizeof copy_path, "%s/pristine", dir);
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "cp %s %s && cp %s.idx %s.idx", shard, copy_path, shard, copy_path);
    REQUIRE(system(cmd) == 0);
}

static void restore(void)
{
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "cp %s %s && cp %s.idx %s.idx", copy_path, shard, copy_path, shard);
    REQUIRE(system(cmd) == 0);
}

static void flip_byte(uint64_t at)
{
    int fd = open(shard, O_RDWR);
    REQUIRE(fd >= 0);
    uint8_t b;
    REQUIRE(pread(fd, &b, 1, (off_t)at) == 1);
    b ^= 0x5a;
    REQUIRE(pwrite(fd, &b, 1, (off_t)at) == 1);
    close(fd);
}

/* Reads the whole shard; returns good records, fills the problems seen. */
typedef struct Seen {
    int good;
    int n_problems;
    ShardProblem problems[8];
    int good_ids[N];
} Seen;

static Seen read_all(void)
{
    Seen seen = {0};
    TfError err = {{0}};
    ShardFile *f = shard_file_open(shard, &err);
    REQUIRE(f);
    ShardCursor c;
    shard_cursor_init(&c, f);
    const uint8_t *p;
    size_t len;
    ShardProblem prob;
    int rc;
    while ((rc = shard_cursor_next(&c, &p, &len, &prob)) != 0) {
        if (rc < 0) {
            if (seen.n_problems < 8)
                seen.problems[seen.n_problems] = prob;
            seen.n_problems++;
            continue;
        }
        Sample *s = sample_decode(p, len, NULL, NULL);
        if (!s) {
            if (seen.n_problems < 8) {
                seen.problems[seen.n_problems].record = c.record - 1;
                seen.problems[seen.n_problems].offset = (uint64_t)(p - shard_file_data(f)) - 12;
                snprintf(seen.problems[seen.n_problems].what, 256, "parse");
            }
            seen.n_problems++;
            continue;
        }
        seen.good_ids[seen.good++] = atoi(s->key + 1);
        sample_free(s);
    }
    shard_file_free(f);
    return seen;
}

/* One problem, at record `rec`, and every other record intact. */
static void expect_one_bad(const char *what, int rec, const char *needle)
{
    Seen s = read_all();
    CHECKF(s.n_problems == 1, "%s: %d problems", what, s.n_problems);
    CHECKF(s.good == N - 1, "%s: %d good records", what, s.good);
    if (s.n_problems >= 1) {
        CHECKF(s.problems[0].record == (uint64_t)rec && s.problems[0].offset == offsets[rec],
               "%s: reported record %llu at %llu, expected %d at %llu", what,
               (unsigned long long)s.problems[0].record, (unsigned long long)s.problems[0].offset, rec,
               (unsigned long long)offsets[rec]);
        CHECKF(strstr(s.problems[0].what, needle) != NULL, "%s: '%s' lacks '%s'", what, s.problems[0].what, needle);
    }
    for (int i = 0, k = 0; i < N && k < s.good; i++) {
        if (i == rec)
            continue;
        CHECKF(s.good_ids[k] == i, "%s: record %d missing", what, i);
        k++;
    }
}

int main(void)
{
    REQUIRE(mkdtemp(dir));
    write_dataset();
    Seen clean = read_all();
    CHECK(clean.good == N && clean.n_problems == 0);

    /* With the index, then without it (resynchronising by scanning). */
    for (int pass = 0; pass < 2; pass++) {
        const char *mode = pass ? "no index" : "index";
        char name[128];
        restore();
        if (pass) {
            char idx[4300];
            snprintf(idx, sizeof idx, "%s.idx", shard);
            REQUIRE(unlink(idx) == 0);
        }
#define CASE(label, rec, byte, needle)                                       \
    do {                                                                     \
        snprintf(name, sizeof name, "%s, %s", label, mode);                  \
        flip_byte(offsets[rec] + (byte));                                    \
        expect_one_bad(name, rec, needle);                                   \
        flip_byte(offsets[rec] + (byte)); /* flip back */                    \
    } while (0)
        CASE("length low byte", 5, 0, "length CRC");
        CASE("length high byte", 6, 7, "length CRC");
        CASE("length CRC", 7, 9, "length CRC");
        CASE("payload byte", 8, 12 + 3, "payload CRC");
        CASE("payload CRC", 9, 12 + lens[9] + 1, "payload CRC");
        CASE("first record", 0, 2, "length CRC");
        CASE("last record payload", N - 1, 12, "payload CRC");
    }

    /* A payload that frames fine but is not a Sample: a parse problem. */
    restore();
    {
        TfError err = {{0}};
        char d2[4200];
        snprintf(d2, sizeof d2, "%s/garbage", dir);
        ShardWriterOptions wo = {.no_fsync = 1};
        ShardWriter *w = shard_writer_open(d2, &wo, NULL, &err);
        REQUIRE(w);
        const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
        REQUIRE(shard_writer_append(w, junk, sizeof junk, "j", 1, &err) == 0);
        REQUIRE(shard_writer_close(w, &err) == 0);
        snprintf(d2, sizeof d2, "%s/garbage/shard-000000.tfrecord", dir);
        ShardFile *f = shard_file_open(d2, &err);
        REQUIRE(f);
        const uint8_t *p;
        size_t len;
        CHECK(shard_file_get(f, 0, &p, &len, NULL) == 1);
        CHECK(sample_decode(p, len, NULL, &err) == NULL && strstr(err.msg, "not a valid") != NULL);
        shard_file_free(f);
    }

    /* Truncated tail: everything before the cut is read, the cut record reported. */
    restore();
    REQUIRE(truncate(shard, (off_t)(offsets[N - 1] + 20)) == 0);
    {
        Seen s = read_all();
        CHECKF(s.good == N - 1 && s.n_problems == 1, "truncated: %d good %d problems", s.good, s.n_problems);
        CHECK(s.problems[0].record == N - 1 && s.problems[0].offset == offsets[N - 1] &&
              strstr(s.problems[0].what, "truncated"));
    }
    /* Cut inside a header. */
    restore();
    REQUIRE(truncate(shard, (off_t)(offsets[N - 1] + 5)) == 0);
    {
        Seen s = read_all();
        CHECK(s.good == N - 1 && s.n_problems == 1 && strstr(s.problems[0].what, "truncated"));
    }

    /* Damaged index: detected, not used, reading still works. */
    restore();
    {
        char idx[4300];
        snprintf(idx, sizeof idx, "%s.idx", shard);
        int fd = open(idx, O_RDWR);
        uint8_t b = 0x77;
        REQUIRE(fd >= 0 && pwrite(fd, &b, 1, 20) == 1);
        close(fd);
        TfError err = {{0}};
        ShardFile *f = shard_file_open(shard, &err);
        REQUIRE(f);
        CHECK(shard_file_index_count(f) == -1);
        CHECKF(strstr(shard_file_index_problem(f), "checksum") != NULL, "%s", shard_file_index_problem(f));
        shard_file_free(f);
        Seen s = read_all();
        CHECK(s.good == N && s.n_problems == 0);
    }

    /* Hostile in-memory bytes: a huge length with a valid CRC is refused. */
    {
        uint8_t bytes[64] = {0};
        shard_frame_header(bytes, (uint64_t)1 << 40);
        TfError err = {{0}};
        ShardFile *f = shard_file_from_memory(bytes, sizeof bytes, "hostile", &err);
        ShardCursor c;
        shard_cursor_init(&c, f);
        const uint8_t *p;
        size_t len;
        ShardProblem prob;
        CHECK(shard_cursor_next(&c, &p, &len, &prob) == -1 && strstr(prob.what, "limit"));
        shard_file_free(f);
    }

    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return test_main_end("test_shards_corruption");
}
