/* kafka_flow: the mock cluster keeps only ~5 MiB per partition and drops
 * older batches silently. Without flow control a producer that runs ahead
 * of its consumer loses data, and the consumer (auto.offset.reset=error)
 * reports it as an error, never a silent skip. With flow control on the
 * consumer group's committed offsets, a slow consumer receives every
 * record of ~20 MB through one partition, in order, with no error. */
#include "kafka_test_util.h"

#include <pthread.h>
#include <unistd.h>

#define N_RECORDS 1200u /* x ~17 KB = ~20 MB, four times the mock's retention */

typedef struct Reader {
    const char *bootstrap;
    const char *topic;
    uint64_t got;
    int rc;
    char err[512];
    KeyCounts *kc;
} Reader;

static void *slow_reader(void *arg)
{
    Reader *r = arg;
    TfError err = {{0}};
    KafkaSourceOptions o = {.bootstrap = r->bootstrap, .topic = r->topic, .group_id = "trainer",
                            .until = KAFKA_UNTIL_FOREVER, .commit_interval_ms = 50, .queue_records = 64};
    KafkaSource *src = kafka_source_new(&o, &err);
    if (!src) {
        snprintf(r->err, sizeof r->err, "%s", err.msg);
        r->rc = -1;
        return NULL;
    }
    double idle_since = tf_now();
    while (r->got < N_RECORDS && tf_now() - idle_since < 20) {
        KafkaRecord rec;
        int rc = kafka_source_next(src, &rec, 200, &err);
        if (rc < 0) {
            snprintf(r->err, sizeof r->err, "%s", err.msg);
            r->rc = -1;
            break;
        }
        if (rc != KAFKA_RECORD)
            continue;
        idle_since = tf_now();
        key_counts_add(r->kc, rec.key, rec.key_len);
        r->got++;
        if (r->got % 16 == 0)
            usleep(3000); /* slower than the producer */
    }
    kafka_source_free(src);
    return NULL;
}

int main(void)
{
    TestCluster c;
    test_cluster_start(&c, 1);
    test_topic_create(&c, "flow", 1, 1);
    test_topic_create(&c, "noflow", 1, 1);
    TfError err = {{0}};

    /* Flow control: the producer waits on group "trainer". */
    KeyCounts kc;
    key_counts_init(&kc, N_RECORDS);
    Reader rd = {.bootstrap = c.bootstrap, .topic = "flow", .kc = &kc};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, slow_reader, &rd) == 0);
    KafkaSinkOptions so = {.bootstrap = c.bootstrap, .topic = "flow", .flow_group = "trainer"};
    KafkaSink *sink = kafka_sink_new(&so, &err);
    REQUIRE(sink);
    for (uint32_t u = 0; u < N_RECORDS; u += 100)
        CHECKF(test_produce(sink, u, u + 100, -1, &err) == 0, "%s", err.msg);
    kafka_sink_free(sink);
    pthread_join(th, NULL);
    CHECKF(rd.rc == 0, "flow-controlled reader failed: %s", rd.err);
    CHECKF(rd.got == N_RECORDS, "read %llu", (unsigned long long)rd.got);
    CHECK(key_counts_bad(&kc) == 0);
    key_counts_deinit(&kc);
    KafkaTopicInfo info;
    REQUIRE(kafka_topic_describe(c.bootstrap, "flow", NULL, &info, &err) == 0);
    fprintf(stderr, "with flow control: log %lld..%lld, all %u records read\n", (long long)info.parts[0].low,
            (long long)info.parts[0].high, N_RECORDS);
    CHECK(info.parts[0].low > 0); /* the mock did drop old data: after it was read */
    kafka_topic_info_deinit(&info);

    /* No flow control, consumer starts late: the head of the log is gone
     * and reading from the saved position 0 is an error naming the loss. */
    KafkaSinkOptions so2 = {.bootstrap = c.bootstrap, .topic = "noflow"};
    sink = kafka_sink_new(&so2, &err);
    REQUIRE(sink);
    REQUIRE(test_produce(sink, 0, N_RECORDS, -1, &err) == 0);
    kafka_sink_free(sink);
    KafkaPosition *zero = kafka_position_new("noflow");
    kafka_position_set(zero, 0, 0, NULL);
    KafkaSourceOptions o = {.bootstrap = c.bootstrap, .topic = "noflow", .start = zero, .commit_interval_ms = -1};
    CHECK(kafka_source_new(&o, &err) == NULL);
    CHECKF(strstr(err.msg, "were deleted before they were read") != NULL, "%s", err.msg);
    fprintf(stderr, "without flow control: %s\n", err.msg);
    kafka_position_free(zero);

    /* A reader that falls behind while reading: the offset it needs next
     * disappears under it; auto.offset.reset=error turns that into an error. */
    test_topic_create(&c, "behind", 1, 1);
    KafkaSinkOptions so3 = {.bootstrap = c.bootstrap, .topic = "behind"};
    sink = kafka_sink_new(&so3, &err);
    REQUIRE(sink);
    REQUIRE(test_produce(sink, 0, 100, -1, &err) == 0);
    KafkaSourceOptions o3 = {.bootstrap = c.bootstrap, .topic = "behind", .group_id = "late", .commit_interval_ms = -1,
                             .queue_records = 1, .pause_after_ms = 1};
    KafkaSource *src = kafka_source_new(&o3, &err);
    REQUIRE(src);
    KafkaRecord rec;
    REQUIRE(kafka_source_next(src, &rec, 5000, &err) == KAFKA_RECORD);
    usleep(300 * 1000); /* the queue is full: fetching pauses */
    REQUIRE(test_produce(sink, 100, N_RECORDS, -1, &err) == 0);
    int rc;
    uint64_t n = 1;
    while ((rc = kafka_source_next(src, &rec, 5000, &err)) == KAFKA_RECORD)
        n++;
    CHECKF(rc == -1 && strstr(err.msg, "no longer on the broker"), "rc %d after %llu records: %s", rc,
           (unsigned long long)n, err.msg);
    fprintf(stderr, "reader fallen behind: %s\n", err.msg);
    kafka_source_free(src);
    kafka_sink_free(sink);

    test_cluster_stop(&c);
    return test_main_end("kafka_flow");
}
