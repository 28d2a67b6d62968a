/* kafka_uneven: partitions of very different sizes (one empty) drained by
 * three ranks at once; every rank reports "no more data" (KAFKA_END)
 * instead of waiting forever, the static assignment is p % world == rank,
 * and together the ranks read every record once. More ranks than
 * partitions: the extra ranks end at once. */
#include "kafka_test_util.h"

#include <pthread.h>

#define TOPIC "uneven"
#define WORLD 3

static const uint32_t COUNTS[5] = {0, 1, 37, 120, 5};

typedef struct Rank {
    const char *bootstrap;
    int rank;
    KeyCounts *kc;
    pthread_mutex_t *lock;
    uint64_t got;
    int end_rc;
    double seconds;
    char err[512];
} Rank;

static void *rank_thread(void *arg)
{
    Rank *r = arg;
    TfError err = {{0}};
    KafkaSourceOptions o = {.bootstrap = r->bootstrap, .topic = TOPIC, .group_id = "uneven", .rank = r->rank,
                            .world_size = WORLD, .until = KAFKA_UNTIL_EOF, .eof_idle_ms = 200};
    double t0 = tf_now();
    KafkaSource *src = kafka_source_new(&o, &err);
    if (!src) {
        snprintf(r->err, sizeof r->err, "%s", err.msg);
        r->end_rc = -1;
        return NULL;
    }
    for (;;) {
        KafkaRecord rec;
        int rc = kafka_source_next(src, &rec, 500, &err);
        if (rc == KAFKA_RECORD) {
            pthread_mutex_lock(r->lock);
            key_counts_add(r->kc, rec.key, rec.key_len);
            pthread_mutex_unlock(r->lock);
            r->got++;
            continue;
        }
        if (rc == KAFKA_IDLE && tf_now() - t0 < 30)
            continue;
        r->end_rc = rc;
        if (rc < 0)
            snprintf(r->err, sizeof r->err, "%s", err.msg);
        break;
    }
    r->seconds = tf_now() - t0;
    kafka_source_free(src);
    return NULL;
}

int main(void)
{
    TestCluster c;
    test_cluster_start(&c, 2);
    test_topic_create(&c, TOPIC, 5, 2);
    TfError err = {{0}};
    KafkaSinkOptions so = {.bootstrap = c.bootstrap, .topic = TOPIC};
    KafkaSink *sink = kafka_sink_new(&so, &err);
    REQUIRE(sink);
    uint32_t total = 0;
    for (int p = 0; p < 5; p++) {
        REQUIRE(test_produce(sink, total, total + COUNTS[p], p, &err) == 0);
        total += COUNTS[p];
    }
    kafka_sink_free(sink);

    KeyCounts kc;
    key_counts_init(&kc, total);
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    Rank ranks[WORLD];
    pthread_t th[WORLD];
    for (int r = 0; r < WORLD; r++) {
        ranks[r] = (Rank){.bootstrap = c.bootstrap, .rank = r, .kc = &kc, .lock = &lock};
        REQUIRE(pthread_create(&th[r], NULL, rank_thread, &ranks[r]) == 0);
    }
    for (int r = 0; r < WORLD; r++)
        pthread_join(th[r], NULL);
    /* rank 0: partitions 0 and 3; rank 1: 1 and 4; rank 2: 2. */
    const uint64_t want[WORLD] = {COUNTS[0] + COUNTS[3], COUNTS[1] + COUNTS[4], COUNTS[2]};
    for (int r = 0; r < WORLD; r++) {
        CHECKF(ranks[r].end_rc == KAFKA_END, "rank %d ended with %d: %s", r, ranks[r].end_rc, ranks[r].err);
        CHECKF(ranks[r].got == want[r], "rank %d read %llu, want %llu", r, (unsigned long long)ranks[r].got,
               (unsigned long long)want[r]);
        fprintf(stderr, "rank %d: %llu records, end after %.2f s\n", r, (unsigned long long)ranks[r].got,
                ranks[r].seconds);
    }
    CHECK(key_counts_bad(&kc) == 0);
    key_counts_deinit(&kc);

    /* World larger than the partition count: ranks 5..7 own nothing. */
    for (int r = 5; r < 8; r++) {
        KafkaSourceOptions o = {.bootstrap = c.bootstrap, .topic = TOPIC, .rank = r, .world_size = 8,
                                .until = KAFKA_UNTIL_EOF};
        KafkaSource *src = kafka_source_new(&o, &err);
        REQUIRE(src);
        CHECK(kafka_source_partitions(src, NULL) == 0);
        KafkaRecord rec;
        CHECK(kafka_source_next(src, &rec, 100, &err) == KAFKA_END);
        kafka_source_free(src);
    }
    /* A rank outside the world is a usage error. */
    KafkaSourceOptions bad = {.bootstrap = c.bootstrap, .topic = TOPIC, .rank = 3, .world_size = 3};
    CHECK(kafka_source_new(&bad, &err) == NULL);

    test_cluster_stop(&c);
    return test_main_end("kafka_uneven");
}
