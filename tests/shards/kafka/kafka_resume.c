/* kafka_resume: a consumer killed mid-stream (SIGKILL, a separate process
 * that saves its position after every record like a trainer's checkpoint)
 * is resumed from the saved position: every record is read exactly once
 * across the two runs, counted by key. Also: resuming from the group's
 * committed offsets, and a tiny prefetch queue that must pause fetching
 * without losing or repeating records.
 *   kafka_resume                 the test
 *   kafka_resume child BS DIR    the consumer that gets killed */
#include "kafka_test_util.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_RECORDS 600u
#define TOPIC "resume"

static int child(const char *bootstrap, const char *dir)
{
    TfError err = {{0}};
    /* A small prefetch queue that is full most of the time. */
    KafkaSourceOptions o = {.bootstrap = bootstrap, .topic = TOPIC, .group_id = "trainer", .until = KAFKA_UNTIL_FOREVER,
                            .queue_records = 8, .commit_interval_ms = -1};
    KafkaSource *src = kafka_source_new(&o, &err);
    if (!src) {
        fprintf(stderr, "child: %s\n", err.msg);
        return 1;
    }
    char log_path[4096], pos_path[4096];
    snprintf(log_path, sizeof log_path, "%s/read.log", dir);
    snprintf(pos_path, sizeof pos_path, "%s/position.json", dir);
    FILE *log = fopen(log_path, "w");
    for (;;) {
        KafkaRecord r;
        int rc = kafka_source_next(src, &r, 1000, &err);
        if (rc < 0) {
            fprintf(stderr, "child: %s\n", err.msg);
            return 1;
        }
        if (rc != KAFKA_RECORD)
            continue;
        /* A "training step": note what was consumed, then checkpoint. */
        fprintf(log, "%d %lld %.*s\n", r.partition, (long long)r.offset, (int)r.key_len, r.key);
        fflush(log);
        /* Replaced by rename (no fsync: a killed process loses nothing
         * the kernel already has). */
        json_t *j = kafka_position_to_json(kafka_source_position(src));
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", pos_path);
        if (json_dump_file(j, tmp, JSON_COMPACT) || rename(tmp, pos_path)) {
            fprintf(stderr, "child: cannot write %s\n", pos_path);
            return 1;
        }
        json_decref(j);
        usleep(2000);
    }
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "child"))
        return child(argv[2], argv[3]);

    TestCluster c;
    test_cluster_start(&c, 1);
    test_topic_create(&c, TOPIC, 3, 1);
    TfError err = {{0}};
    KafkaSinkOptions so = {.bootstrap = c.bootstrap, .topic = TOPIC};
    KafkaSink *sink = kafka_sink_new(&so, &err);
    REQUIRE(sink);
    REQUIRE(test_produce(sink, 0, N_RECORDS, -1, &err) == 0);
    kafka_sink_free(sink);

    char dir[] = "/tmp/kafka_resume_XXXXXX";
    REQUIRE(mkdtemp(dir));
    char pos_path[4096], log_path[4096];
    snprintf(pos_path, sizeof pos_path, "%s/position.json", dir);
    snprintf(log_path, sizeof log_path, "%s/read.log", dir);

    /* Run the child until it has checkpointed a good part, then kill it. */
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        execl("/proc/self/exe", argv[0], "child", c.bootstrap, dir, (char *)NULL);
        _exit(127);
    }
    double t0 = tf_now();
    for (;;) {
        usleep(50 * 1000);
        size_t len = 0;
        char *text = tf_read_file(log_path, 1 << 24, &len, NULL);
        size_t lines = 0;
        for (size_t i = 0; text && i < len; i++)
            lines += text[i] == '\n';
        free(text);
        if (lines >= 250 || tf_now() - t0 > 30)
            break;
    }
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status));

    json_t *pj = tf_json_load_file(pos_path, 1 << 20, &err);
    REQUIRE(pj);
    KafkaPosition *saved = kafka_position_from_json(pj, &err);
    json_decref(pj);
    REQUIRE(saved && saved->n == 3);
    int64_t before = 0;
    for (size_t i = 0; i < saved->n; i++)
        before += saved->offset[i];
    fprintf(stderr, "killed after %lld records were checkpointed (%.1f s)\n", (long long)before, tf_now() - t0);
    CHECK(before >= 250 && before < N_RECORDS);

    /* What the checkpoint covers: the records the child read below the
     * saved offsets (it may have read one more and died before saving). */
    KeyCounts kc;
    key_counts_init(&kc, N_RECORDS);
    FILE *log = fopen(log_path, "r");
    REQUIRE(log);
    int part;
    long long off;
    char key[64];
    while (fscanf(log, "%d %lld %63s", &part, &off, key) == 3)
        if (off < kafka_position_get(saved, part))
            key_counts_add(&kc, key, strlen(key));
    fclose(log);

    /* Resume exactly there. */
    KafkaSourceOptions o = {.bootstrap = c.bootstrap, .topic = TOPIC, .group_id = "trainer", .start = saved,
                            .until = KAFKA_UNTIL_EOF, .queue_records = 4, .pause_after_ms = 200};
    KafkaSource *src = kafka_source_new(&o, &err);
    REQUIRE(src);
    CHECK(kafka_position_get(kafka_source_position(src), 0) == kafka_position_get(saved, 0));
    uint64_t after = 0;
    for (;;) {
        KafkaRecord r;
        int rc = kafka_source_next(src, &r, 10000, &err);
        if (rc != KAFKA_RECORD) {
            CHECKF(rc == KAFKA_END, "rc %d: %s", rc, err.msg);
            break;
        }
        CHECK(r.offset >= kafka_position_get(saved, r.partition));
        key_counts_add(&kc, r.key, r.key_len);
        if (after++ == 10)
            usleep(600 * 1000); /* a stalled step: the full queue pauses fetching */
    }
    KafkaSourceStats st;
    kafka_source_stats(src, &st);
    CHECKF(st.pauses > 0, "the stalled reader's queue never paused fetching");
    CHECK(st.gaps == 0);
    CHECK((int64_t)after + before == N_RECORDS);
    CHECK(key_counts_bad(&kc) == 0);
    key_counts_deinit(&kc);
    fprintf(stderr, "resumed and drained (%.1f s)\n", tf_now() - t0);
    kafka_source_free(src); /* commits the end */

    /* The committed offsets are where a restart without a position goes:
     * here the end, so nothing is left. */
    KafkaSourceOptions o2 = {.bootstrap = c.bootstrap, .topic = TOPIC, .group_id = "trainer", .until = KAFKA_UNTIL_EOF};
    src = kafka_source_new(&o2, &err);
    REQUIRE(src);
    KafkaRecord r;
    CHECK(kafka_source_next(src, &r, 10000, &err) == KAFKA_END);
    kafka_source_free(src);

    kafka_position_free(saved);
    unlink(pos_path);
    unlink(log_path);
    rmdir(dir);
    test_cluster_stop(&c);
    return test_main_end("kafka_resume");
}
