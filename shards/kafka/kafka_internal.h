/* kafka_internal.h: helpers shared by the Kafka sources of shards/ (not
 * part of the public header): building librdkafka configurations with
 * errors in a TfError, and telling the mock cluster apart. */
#ifndef TRANSFUSE_KAFKA_INTERNAL_H
#define TRANSFUSE_KAFKA_INTERNAL_H

#include <librdkafka/rdkafka.h>

#include "shards.h"

/* Sets one property; on failure fills err with librdkafka's reason. */
int kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, TfError *err);

/* Applies a NULL-terminated "key=value" list (may be NULL). */
int kafka_conf_apply(rd_kafka_conf_t *conf, const char *const *config, TfError *err);

/* A new handle of `type` for `bootstrap` with defaults suited to short-lived
 * tools and tests, then `config` applied over them. Takes no ownership of
 * anything passed. Returns NULL with err filled. */
rd_kafka_t *kafka_handle_new(rd_kafka_type_t type, const char *bootstrap, const char *group,
                             const char *const *config, TfError *err);

/* Routes librdkafka's log lines through tf_log (as every handle of
 * kafka_handle_new does), for handles built on a conf of their own. */
void kafka_conf_set_logging(rd_kafka_conf_t *conf);

/* Partition count of `topic`, checked to exist (and not auto-created).
 * Fills cluster id (may be "") when cluster_id is not NULL. Returns the
 * count, or -1 with err filled. */
int kafka_topic_partition_count(rd_kafka_t *rk, const char *topic, char *cluster_id, size_t cap,
                                int *brokers, TfError *err);

/* 1 when the cluster id is that of librdkafka's mock cluster. */
int kafka_cluster_is_mock(const char *cluster_id);

/* Sleep for ms milliseconds. */
void kafka_sleep_ms(int ms);

#endif
