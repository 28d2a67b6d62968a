/* kafka_roundtrip: records through librdkafka's mock cluster come back
 * byte-identical, once each, with their identity headers; two ranks split
 * the partitions deterministically; watermarks and committed offsets read
 * back; kafka:// addresses, positions and admin refusals behave. */
#include "kafka_test_util.h"

#define N_RECORDS 400u
#define TOPIC "rt"

static ShardFacts test_facts(void)
{
    ShardFacts f;
    memset(&f, 0, sizeof f);
    snprintf(f.tokenizer_id, sizeof f.tokenizer_id, "tok-1234abcd");
    snprintf(f.vae_id, sizeof f.vae_id, "vae-feedbeef");
    return f;
}

/* Reads everything a source gives until the end; checks bytes and order. */
static uint64_t drain(KafkaSource *src, KeyCounts *kc)
{
    uint64_t n = 0;
    int64_t last[16];
    for (int i = 0; i < 16; i++)
        last[i] = -1;
    for (;;) {
        KafkaRecord r;
        TfError err = {{0}};
        int rc = kafka_source_next(src, &r, 10000, &err);
        if (rc == KAFKA_END)
            break;
        CHECKF(rc == KAFKA_RECORD, "rc %d: %s", rc, err.msg);
        if (rc != KAFKA_RECORD)
            break;
        long idx = key_counts_add(kc, r.key, r.key_len);
        CHECK(idx >= 0);
        if (idx >= 0) {
            size_t len;
            char key[32];
            uint8_t *want = test_record((uint32_t)idx, &len, key);
            CHECKF(len == r.len && !memcmp(want, r.payload, len), "record %ld differs", idx);
            free(want);
        }
        CHECK(r.partition >= 0 && r.partition < 16);
        if (r.partition >= 0 && r.partition < 16) {
            CHECK(r.offset == last[r.partition] + 1 || last[r.partition] < 0);
            last[r.partition] = r.offset;
        }
        n++;
    }
    return n;
}

static void test_url(void)
{
    char b[256], t[256];
    TfError err;
    CHECK(kafka_url_parse("kafka://127.0.0.1:9092/topic-1", b, sizeof b, t, sizeof t, &err) == 0);
    CHECK(!strcmp(b, "127.0.0.1:9092") && !strcmp(t, "topic-1"));
    CHECK(kafka_url_parse("kafka://a:1,b:2/x.y_z", b, sizeof b, t, sizeof t, &err) == 0);
    CHECK(!strcmp(b, "a:1,b:2") && !strcmp(t, "x.y_z"));
    CHECK(kafka_url_parse("kafka://host:1/", b, sizeof b, t, sizeof t, &err) == -1);
    CHECK(kafka_url_parse("kafka:///t", b, sizeof b, t, sizeof t, &err) == -1);
    CHECK(kafka_url_parse("kafka://h:1/bad topic", b, sizeof b, t, sizeof t, &err) == -1);
    CHECK(kafka_url_parse("/data/shards", b, sizeof b, t, sizeof t, &err) == -1);
    CHECK(kafka_url_is("kafka://x/y") && !kafka_url_is("kafkax"));
}

static void test_position_json(void)
{
    KafkaPosition *p = kafka_position_new("t");
    CHECK(kafka_position_set(p, 3, 40, NULL) == 0);
    CHECK(kafka_position_set(p, 0, 12, NULL) == 0);
    CHECK(kafka_position_set(p, 3, 41, NULL) == 0);
    CHECK(p->n == 2 && p->partition[0] == 0 && kafka_position_get(p, 3) == 41 && kafka_position_get(p, 1) == -1);
    json_t *j = kafka_position_to_json(p);
    char *text = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    CHECKF(!strcmp(text, "{\"offsets\":{\"0\":12,\"3\":41},\"topic\":\"t\"}"), "%s", text);
    TfError err;
    KafkaPosition *q = kafka_position_from_json(j, &err);
    CHECK(q && q->n == 2 && kafka_position_get(q, 0) == 12 && kafka_position_get(q, 3) == 41);
    json_t *bad = json_loads("{\"topic\":\"t\",\"offsets\":{\"x\":1}}", 0, NULL);
    CHECK(kafka_position_from_json(bad, &err) == NULL);
    json_t *neg = json_loads("{\"topic\":\"t\",\"offsets\":{\"1\":-5}}", 0, NULL);
    CHECK(kafka_position_from_json(neg, &err) == NULL);
    json_decref(bad);
    json_decref(neg);
    free(text);
    json_decref(j);
    kafka_position_free(p);
    kafka_position_free(q);
}

int main(void)
{
    test_url();
    test_position_json();

    TestCluster c;
    test_cluster_start(&c, 3);
    test_topic_create(&c, TOPIC, 4, 3);
    TfError err = {{0}};
    ShardFacts facts = test_facts();

    /* A missing topic is an error, never auto-created. */
    KafkaSinkOptions bad = {.bootstrap = c.bootstrap, .topic = "no-such-topic"};
    CHECK(kafka_sink_new(&bad, &err) == NULL);
    CHECKF(strstr(err.msg, "does not exist") != NULL, "%s", err.msg);

    KafkaSinkOptions so = {.bootstrap = c.bootstrap, .topic = TOPIC, .facts = &facts};
    KafkaSink *sink = kafka_sink_new(&so, &err);
    REQUIRE(sink);
    CHECK(kafka_sink_partitions(sink) == 4);
    CHECK(kafka_sink_is_mock(sink) == 1);
    CHECKF(test_produce(sink, 0, N_RECORDS, -1, &err) == 0, "%s", err.msg);
    CHECK(kafka_sink_delivered(sink) == N_RECORDS && kafka_sink_failed(sink) == 0);
    kafka_sink_free(sink);

    /* Watermarks add up and every partition got records (keys spread). */
    KafkaTopicInfo info;
    CHECKF(kafka_topic_describe(c.bootstrap, TOPIC, NULL, &info, &err) == 0, "%s", err.msg);
    int64_t total = 0;
    for (size_t i = 0; i < info.n; i++) {
        CHECK(info.parts[i].partition == (int32_t)i && info.parts[i].low == 0 && info.parts[i].high > 0);
        total += info.parts[i].high - info.parts[i].low;
    }
    CHECK(info.n == 4 && total == N_RECORDS && info.is_mock && info.brokers == 3);
    kafka_topic_info_deinit(&info);

    /* One reader sees everything, byte-identical, once. */
    KeyCounts kc;
    key_counts_init(&kc, N_RECORDS);
    KafkaSourceOptions o1 = {.bootstrap = c.bootstrap, .topic = TOPIC, .group_id = "all", .until = KAFKA_UNTIL_SNAPSHOT,
                             .expect = &facts};
    KafkaSource *src = kafka_source_new(&o1, &err);
    REQUIRE(src);
    CHECK(drain(src, &kc) == N_RECORDS);
    CHECK(key_counts_bad(&kc) == 0);
    kafka_source_free(src); /* commits */
    key_counts_deinit(&kc);

    KafkaPosition *committed = kafka_group_committed(c.bootstrap, TOPIC, "all", NULL, &err);
    REQUIRE(committed);
    int64_t csum = 0;
    for (size_t i = 0; i < committed->n; i++)
        csum += committed->offset[i];
    CHECKF(csum == N_RECORDS, "committed sum %lld", (long long)csum);
    kafka_position_free(committed);
    KafkaPosition *none = kafka_group_committed(c.bootstrap, TOPIC, "never-used", NULL, &err);
    REQUIRE(none);
    CHECK(none->n == 4 && none->offset[0] == -1);
    kafka_position_free(none);

    /* Two ranks: disjoint partitions p % 2 == rank, together everything. */
    key_counts_init(&kc, N_RECORDS);
    uint64_t got = 0;
    for (int rank = 0; rank < 2; rank++) {
        KafkaSourceOptions o = {.bootstrap = c.bootstrap, .topic = TOPIC, .group_id = "ranks", .rank = rank,
                                .world_size = 2, .until = KAFKA_UNTIL_EOF};
        KafkaSource *s = kafka_source_new(&o, &err);
        REQUIRE(s);
        const int32_t *parts;
        size_t np = kafka_source_partitions(s, &parts);
        CHECK(np == 2 && parts[0] == rank && parts[1] == rank + 2);
        got += drain(s, &kc);
        kafka_source_free(s);
    }
    CHECK(got == N_RECORDS && key_counts_bad(&kc) == 0);
    key_counts_deinit(&kc);

    /* A reader configured for another VAE refuses the records. */
    ShardFacts other = facts;
    snprintf(other.vae_id, sizeof other.vae_id, "vae-other");
    KafkaSourceOptions o2 = {.bootstrap = c.bootstrap, .topic = TOPIC, .group_id = "wrong", .until = KAFKA_UNTIL_SNAPSHOT,
                             .expect = &other, .commit_interval_ms = -1};
    src = kafka_source_new(&o2, &err);
    REQUIRE(src);
    KafkaRecord r;
    int rc = kafka_source_next(src, &r, 10000, &err);
    CHECKF(rc == -1 && strstr(err.msg, "vae-feedbeef") && strstr(err.msg, "vae-other"), "rc %d %s", rc, err.msg);
    kafka_source_free(src);

    /* A position before the log start is refused with the lost range. */
    KafkaPosition *early = kafka_position_new(TOPIC);
    kafka_position_set(early, 0, 999999, NULL);
    KafkaSourceOptions o3 = {.bootstrap = c.bootstrap, .topic = TOPIC, .start = early, .partitions = (int32_t[]){0},
                             .n_partitions = 1, .commit_interval_ms = -1};
    CHECK(kafka_source_new(&o3, &err) == NULL);
    CHECKF(strstr(err.msg, "past the end") != NULL, "%s", err.msg);
    kafka_position_free(early);

    /* The mock cannot create topics over the protocol: the refusal says so. */
    rc = kafka_topic_create(c.bootstrap, "new-topic", 3, 1, NULL, &err);
    CHECKF(rc == -1 && strstr(err.msg, "refused") && strstr(err.msg, "--topic"), "rc %d: %s", rc, err.msg);
    fprintf(stderr, "create refusal: %s\n", err.msg);

    /* Nor list groups: the error is an error, not an empty list. */
    char **groups = kafka_group_list(c.bootstrap, NULL, &err);
    if (groups) {
        kafka_strings_free(groups);
    } else {
        fprintf(stderr, "group listing: %s\n", err.msg);
        CHECK(err.msg[0] != 0);
    }

    test_cluster_stop(&c);
    return test_main_end("kafka_roundtrip");
}
