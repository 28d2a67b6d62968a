/* kafka_test_util.h: what the Kafka tests share: an in-process mock
 * cluster, deterministic ~17 KB Sample records (key, caption, tokens, an
 * f32 4x32x32 latent, provenance), and a key-count table to check that
 * every record arrived exactly once. */
#ifndef TRANSFUSE_KAFKA_TEST_UTIL_H
#define TRANSFUSE_KAFKA_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "shards.h"
#include "test.h"

typedef struct TestCluster {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    const char *bootstrap;
} TestCluster;

static inline void test_cluster_start(TestCluster *c, int brokers)
{
    char es[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", es, sizeof es);
    c->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof es);
    REQUIRE(c->rk);
    c->mc = rd_kafka_mock_cluster_new(c->rk, brokers);
    REQUIRE(c->mc);
    c->bootstrap = rd_kafka_mock_cluster_bootstraps(c->mc);
}

static inline void test_topic_create(TestCluster *c, const char *topic, int partitions, int replication)
{
    REQUIRE(rd_kafka_mock_topic_create(c->mc, topic, partitions, replication) == RD_KAFKA_RESP_ERR_NO_ERROR);
}

static inline void test_cluster_stop(TestCluster *c)
{
    rd_kafka_mock_cluster_destroy(c->mc);
    rd_kafka_destroy(c->rk);
}

/* Deterministic record i: returns malloc'd Sample bytes and its key. */
static inline uint8_t *test_record(uint32_t i, size_t *len, char key[32])
{
    static const uint32_t shape[3] = {4, 32, 32};
    float *lat = malloc(4 * 32 * 32 * sizeof *lat);
    uint32_t tokens[48];
    uint64_t x = 0x9E3779B97F4A7C15ull * (i + 1);
    for (size_t k = 0; k < 4 * 32 * 32; k++) {
        /* A VAE mean looks roughly normal: sum of uniforms. */
        double acc = 0;
        for (int r = 0; r < 4; r++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            acc += (double)(x >> 11) / 9007199254740992.0;
        }
        lat[k] = (float)((acc - 2.0) * 1.7);
    }
    for (int k = 0; k < 48; k++)
        tokens[k] = (uint32_t)(128000 + (i * 31 + (uint32_t)k * 7) % 4000);
    snprintf(key, 32, "sample-%07u", i);
    char caption[160];
    snprintf(caption, sizeof caption, "a photograph of item %u on a wooden table, soft light, 35mm", i);
    char url[96];
    snprintf(url, sizeof url, "https://example.org/images/%u.jpg", i);

    Transfuse__V1__Tensor t = TRANSFUSE__V1__TENSOR__INIT;
    t.dtype = TRANSFUSE__V1__DTYPE__DTYPE_F32;
    t.n_shape = 3;
    t.shape = (uint32_t *)shape;
    t.data.len = 4 * 32 * 32 * sizeof *lat;
    t.data.data = (uint8_t *)lat;
    Transfuse__V1__Provenance pv = TRANSFUSE__V1__PROVENANCE__INIT;
    pv.source_url = url;
    pv.original_width = 640 + i % 100;
    pv.original_height = 480;
    pv.original_format = "jpeg";
    Transfuse__V1__Sample s = TRANSFUSE__V1__SAMPLE__INIT;
    s.key = key;
    s.caption = caption;
    s.n_tokens = 48;
    s.tokens = tokens;
    s.latent_mean = &t;
    s.provenance = &pv;
    *len = transfuse__v1__sample__get_packed_size(&s);
    uint8_t *out = malloc(*len);
    transfuse__v1__sample__pack(&s, out);
    free(lat);
    return out;
}

/* Counts how often each record index was seen. */
typedef struct KeyCounts {
    uint32_t n;
    int *seen;
} KeyCounts;

static inline void key_counts_init(KeyCounts *k, uint32_t n)
{
    k->n = n;
    k->seen = calloc(n, sizeof *k->seen);
}

/* Records one key of the form sample-NNNNNNN; returns the index or -1. */
static inline long key_counts_add(KeyCounts *k, const char *key, size_t len)
{
    if (len != 14 || memcmp(key, "sample-", 7))
        return -1;
    long v = 0;
    for (size_t i = 7; i < 14; i++)
        v = v * 10 + (key[i] - '0');
    if (v < 0 || v >= (long)k->n)
        return -1;
    k->seen[v]++;
    return v;
}

/* Number of indices not seen exactly once; prints the first few. */
static inline int key_counts_bad(const KeyCounts *k)
{
    int bad = 0;
    for (uint32_t i = 0; i < k->n; i++)
        if (k->seen[i] != 1) {
            if (bad < 5)
                fprintf(stderr, "record %u seen %d times\n", i, k->seen[i]);
            bad++;
        }
    return bad;
}

static inline void key_counts_deinit(KeyCounts *k)
{
    free(k->seen);
}

/* Produces records [from, to) through a sink; returns the flush status. */
static inline int test_produce(KafkaSink *sink, uint32_t from, uint32_t to, int32_t partition, TfError *err)
{
    for (uint32_t i = from; i < to; i++) {
        size_t len;
        char key[32];
        uint8_t *rec = test_record(i, &len, key);
        int rc = kafka_sink_send(sink, partition, rec, len, key, strlen(key), err);
        free(rec);
        if (rc)
            return -1;
    }
    return kafka_sink_flush(sink, 60000, err);
}

#endif
