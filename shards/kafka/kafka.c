/* kafka.c: the parts of the Kafka transport that are not the consumer:
 * kafka:// addresses, librdkafka configuration, the position object that
 * trainers checkpoint, the producer sink (idempotent, headers, delivery
 * accounting per unit of work, flow control for the mock cluster's bounded
 * retention), and admin/inspection (topic creation, watermarks, committed
 * offsets of groups).
 *
 * Producer defaults (linger.ms=0, batch.size=1 MiB, compression none)
 * were chosen by bench/kafka_bench.sh on ~17 KB Sample records; see
 * docs/PERFORMANCE.md "Kafka" and docs/KAFKA.md. */
#include "kafka_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KAFKA_TAG "kafka"

/* Defaults of the producer, measured (see the file comment). */
static const char *const SINK_DEFAULTS[] = {
    "enable.idempotence=true",
    "allow.auto.create.topics=false",
    "acks=all",
    /* With librdkafka 2.0.2, pipelined requests (up to 5 in flight) lose
     * records after a failed request although every delivery report says
     * success (reproduced against the mock: tests/shards/kafka_faults.c);
     * one request in flight per broker keeps every record. Measured cost:
     * docs/PERFORMANCE.md "Kafka". */
    "max.in.flight.requests.per.connection=1",
    "linger.ms=0",
    "batch.size=1000000",
    "compression.codec=none",
    "queue.buffering.max.kbytes=65536",
    "message.timeout.ms=120000",
    NULL,
};

void kafka_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* ---- addresses ---------------------------------------------------------------- */

int kafka_url_is(const char *path)
{
    return path && !strncmp(path, "kafka://", 8);
}

int kafka_url_parse(const char *url, char *bootstrap, size_t bootstrap_cap, char *topic, size_t topic_cap,
                    TfError *err)
{
    if (!kafka_url_is(url))
        return tf_fail(err, "'%s' is not a kafka:// address (kafka://HOST:PORT/TOPIC)", url ? url : "");
    const char *hosts = url + 8;
    const char *slash = strchr(hosts, '/');
    if (!slash || slash == hosts)
        return tf_fail(err, "'%s': expected kafka://HOST:PORT[,HOST:PORT...]/TOPIC", url);
    size_t hl = (size_t)(slash - hosts);
    const char *t = slash + 1;
    size_t tl = strlen(t);
    if (tl == 0)
        return tf_fail(err, "'%s': no topic after the broker address", url);
    if (tl > 249 || tl >= topic_cap)
        return tf_fail(err, "'%s': topic name longer than Kafka's 249 characters", url);
    for (size_t i = 0; i < tl; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return tf_fail(err, "'%s': topic names may hold only letters, digits, '.', '_' and '-'", url);
    }
    if (hl >= bootstrap_cap)
        return tf_fail(err, "'%s': broker list too long", url);
    memcpy(bootstrap, hosts, hl);
    bootstrap[hl] = 0;
    memcpy(topic, t, tl + 1);
    return 0;
}

/* ---- configuration --------------------------------------------------------------- */

int kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, TfError *err)
{
    char es[512];
    if (rd_kafka_conf_set(conf, key, value, es, sizeof es) != RD_KAFKA_CONF_OK)
        return tf_fail(err, "kafka property %s=%s: %s", key, value, es);
    return 0;
}

int kafka_conf_apply(rd_kafka_conf_t *conf, const char *const *config, TfError *err)
{
    for (size_t i = 0; config && config[i]; i++) {
        const char *eq = strchr(config[i], '=');
        if (!eq || eq == config[i])
            return tf_fail(err, "kafka property '%s': expected key=value", config[i]);
        char key[256];
        size_t kl = (size_t)(eq - config[i]);
        if (kl >= sizeof key)
            return tf_fail(err, "kafka property '%s': key too long", config[i]);
        memcpy(key, config[i], kl);
        key[kl] = 0;
        if (kafka_conf_set(conf, key, eq + 1, err))
            return -1;
    }
    return 0;
}

/* librdkafka logs through this so its lines look like ours. */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    TfLogLevel l = level <= 3 ? TF_LOG_ERROR : level <= 4 ? TF_LOG_WARN : level <= 6 ? TF_LOG_INFO : TF_LOG_DEBUG;
    /* Connection churn (level 6 and below) is reported through error events. */
    /* AUTOCREATE: old-protocol brokers (the mock) cannot be told not to
     * auto-create; topic existence is checked on all-topics metadata. */
    if (!strcmp(fac, "AUTOCREATE"))
        l = TF_LOG_DEBUG;
    tf_log(l >= TF_LOG_WARN ? l : TF_LOG_DEBUG, "rdkafka", "%s: %s: %s", rd_kafka_name(rk), fac, buf);
}

void kafka_conf_set_logging(rd_kafka_conf_t *conf)
{
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
}

rd_kafka_t *kafka_handle_new(rd_kafka_type_t type, const char *bootstrap, const char *group,
                             const char *const *config, TfError *err)
{
    char es[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;
    if (kafka_conf_set(conf, "bootstrap.servers", bootstrap, err) ||
        kafka_conf_set(conf, "client.id", "transfuse", err) ||
        kafka_conf_set(conf, "allow.auto.create.topics", "false", err))
        goto fail;
    if (group && kafka_conf_set(conf, "group.id", group, err))
        goto fail;
    if (type == RD_KAFKA_CONSUMER && (kafka_conf_set(conf, "auto.offset.reset", "error", err) ||
                                      kafka_conf_set(conf, "enable.auto.commit", "false", err) ||
                                      kafka_conf_set(conf, "enable.auto.offset.store", "false", err) ||
                                      kafka_conf_set(conf, "session.timeout.ms", "6000", err)))
        goto fail;
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    if (kafka_conf_apply(conf, config, err))
        goto fail;
    rk = rd_kafka_new(type, conf, es, sizeof es);
    if (!rk) {
        tf_fail(err, "cannot create Kafka client: %s", es);
        goto fail;
    }
    return rk; /* rk owns conf now */
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

int kafka_cluster_is_mock(const char *cluster_id)
{
    return cluster_id && !strncmp(cluster_id, "mockCluster", 11);
}

int kafka_topic_partition_count(rd_kafka_t *rk, const char *topic, char *cluster_id, size_t cap, int *brokers,
                                TfError *err)
{
    /* All-topics metadata: asking for one topic by name lets brokers that
     * ignore allow.auto.create.topics (the mock cluster) create it. */
    const struct rd_kafka_metadata *md = NULL;
    int n = -1;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    const struct rd_kafka_metadata_topic *mt = NULL;
    /* One budget of 10 s for the whole lookup, so an unreachable cluster
     * is reported promptly. */
    double deadline = tf_now() + 10;
    for (int attempt = 0; attempt < 6; attempt++) {
        if (md)
            rd_kafka_metadata_destroy(md);
        md = NULL;
        mt = NULL;
        int left_ms = (int)((deadline - tf_now()) * 1000);
        e = rd_kafka_metadata(rk, 1, NULL, &md, left_ms > 100 ? left_ms : 100);
        if (e == RD_KAFKA_RESP_ERR__TRANSPORT && attempt < 5 && tf_now() + 0.2 < deadline) {
            kafka_sleep_ms(200);
            continue;
        }
        if (e)
            break;
        for (int i = 0; i < md->topic_cnt; i++)
            if (!strcmp(md->topics[i].topic, topic))
                mt = &md->topics[i];
        /* Leaders may be briefly unknown while brokers come up. */
        if (mt && mt->err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE && attempt < 5) {
            kafka_sleep_ms(300);
            continue;
        }
        break;
    }
    if (e) {
        tf_fail(err, "cannot reach the Kafka cluster for topic %s: %s (is the broker address right and up?)", topic,
                rd_kafka_err2str(e));
        goto done;
    }
    if (!mt) {
        tf_fail(err,
                "topic %s does not exist (create it first: `transfuse shards create kafka://HOST:PORT/%s "
                "--partitions N`, or `transfuse broker --topic %s:N` for the embedded broker)",
                topic, topic, topic);
        goto done;
    }
    if (mt->err) {
        tf_fail(err, "topic %s: %s", topic, rd_kafka_err2str(mt->err));
        goto done;
    }
    n = mt->partition_cnt;
    if (brokers)
        *brokers = md->broker_cnt;
    if (cluster_id) {
        char *id = rd_kafka_clusterid(rk, 5000);
        snprintf(cluster_id, cap, "%s", id ? id : "");
        if (id)
            rd_kafka_mem_free(rk, id);
    }
done:
    if (md)
        rd_kafka_metadata_destroy(md);
    return n;
}

/* ---- position ----------------------------------------------------------------- */

KafkaPosition *kafka_position_new(const char *topic)
{
    KafkaPosition *p = calloc(1, sizeof *p);
    if (p)
        snprintf(p->topic, sizeof p->topic, "%s", topic ? topic : "");
    return p;
}

void kafka_position_free(KafkaPosition *p)
{
    if (!p)
        return;
    free(p->partition);
    free(p->offset);
    free(p);
}

int kafka_position_set(KafkaPosition *p, int32_t partition, int64_t offset, TfError *err)
{
    if (partition < 0 || partition >= KAFKA_MAX_PARTITIONS)
        return tf_fail(err, "partition %" PRId32 " out of range", partition);
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (p->partition[mid] < partition)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < p->n && p->partition[lo] == partition) {
        p->offset[lo] = offset;
        return 0;
    }
    int32_t *np = realloc(p->partition, (p->n + 1) * sizeof *np);
    if (!np)
        return tf_fail(err, "out of memory");
    p->partition = np;
    int64_t *no = realloc(p->offset, (p->n + 1) * sizeof *no);
    if (!no)
        return tf_fail(err, "out of memory");
    p->offset = no;
    memmove(p->partition + lo + 1, p->partition + lo, (p->n - lo) * sizeof *np);
    memmove(p->offset + lo + 1, p->offset + lo, (p->n - lo) * sizeof *no);
    p->partition[lo] = partition;
    p->offset[lo] = offset;
    p->n++;
    return 0;
}

int64_t kafka_position_get(const KafkaPosition *p, int32_t partition)
{
    size_t lo = 0, hi = p ? p->n : 0;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (p->partition[mid] < partition)
            lo = mid + 1;
        else
            hi = mid;
    }
    return p && lo < p->n && p->partition[lo] == partition ? p->offset[lo] : -1;
}

json_t *kafka_position_to_json(const KafkaPosition *p)
{
    json_t *offs = json_object();
    for (size_t i = 0; i < p->n; i++) {
        char k[16];
        snprintf(k, sizeof k, "%" PRId32, p->partition[i]);
        json_object_set_new(offs, k, json_integer(p->offset[i]));
    }
    return json_pack("{s:s, s:o}", "topic", p->topic, "offsets", offs);
}

KafkaPosition *kafka_position_from_json(const json_t *j, TfError *err)
{
    const json_t *t = json_object_get(j, "topic"), *offs = json_object_get(j, "offsets");
    if (!json_is_string(t) || !json_is_object(offs)) {
        tf_fail(err, "kafka position: expected {\"topic\": NAME, \"offsets\": {PARTITION: OFFSET}}");
        return NULL;
    }
    KafkaPosition *p = kafka_position_new(json_string_value(t));
    if (!p) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)offs, k, v)
    {
        char *end;
        errno = 0;
        long part = strtol(k, &end, 10);
        if (errno || *end || end == k || part < 0 || part >= KAFKA_MAX_PARTITIONS || !json_is_integer(v) ||
            json_integer_value(v) < 0) {
            tf_fail(err, "kafka position: bad entry \"%s\" (want a partition number and an offset >= 0)", k);
            kafka_position_free(p);
            return NULL;
        }
        if (kafka_position_set(p, (int32_t)part, (int64_t)json_integer_value(v), err)) {
            kafka_position_free(p);
            return NULL;
        }
    }
    return p;
}

KafkaPosition *kafka_position_copy(const KafkaPosition *src)
{
    KafkaPosition *p = kafka_position_new(src->topic);
    for (size_t i = 0; p && i < src->n; i++)
        if (kafka_position_set(p, src->partition[i], src->offset[i], NULL)) {
            kafka_position_free(p);
            return NULL;
        }
    return p;
}

/* ---- producer sink ---------------------------------------------------------------- */

/* Payload bytes delivered to one partition at one offset, kept until the
 * flow-control group has committed past it. */
typedef struct FlowEntry {
    int64_t offset;
    uint64_t bytes;
} FlowEntry;

typedef struct FlowPartition {
    FlowEntry *ring;
    size_t head, count, cap;
    uint64_t delivered_bytes;  /* sum over ring */
    uint64_t inflight_bytes;   /* sent, no delivery report yet */
    int64_t committed;         /* of the flow group; -1 none */
} FlowPartition;

struct KafkaSink {
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    rd_kafka_headers_t *headers;  /* template, copied per message */
    char topic[256];
    char bootstrap[1024];
    int32_t partitions;
    int is_mock;
    const TfStopFlag *stop;
    uint64_t delivered, failed;
    uint64_t unit_failed;         /* since the last flush */
    char first_failure[256];
    /* flow control */
    rd_kafka_t *flow_rk;          /* consumer handle in the flow group, never subscribed */
    rd_kafka_topic_partition_list_t *flow_list;
    uint64_t flow_max;
    FlowPartition *flow;
    double flow_checked;
    uint64_t flow_waits;
};

static void sink_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    KafkaSink *s = opaque;
    FlowPartition *fp = s->flow && m->partition >= 0 && m->partition < s->partitions ? &s->flow[m->partition] : NULL;
    if (fp)
        fp->inflight_bytes -= fp->inflight_bytes >= m->len ? m->len : fp->inflight_bytes;
    if (m->err) {
        s->failed++;
        s->unit_failed++;
        if (!s->first_failure[0])
            snprintf(s->first_failure, sizeof s->first_failure, "partition %" PRId32 ", key %.*s: %s",
                     m->partition, (int)(m->key_len > 80 ? 80 : m->key_len), m->key ? (const char *)m->key : "",
                     rd_kafka_err2str(m->err));
        return;
    }
    s->delivered++;
    if (fp) {
        if (fp->count == fp->cap) {
            size_t ncap = fp->cap ? fp->cap * 2 : 256;
            FlowEntry *nr = malloc(ncap * sizeof *nr);
            if (!nr)
                return; /* flow control then under-counts this record; never fatal */
            for (size_t i = 0; i < fp->count; i++)
                nr[i] = fp->ring[(fp->head + i) % fp->cap];
            free(fp->ring);
            fp->ring = nr;
            fp->head = 0;
            fp->cap = ncap;
        }
        fp->ring[(fp->head + fp->count) % fp->cap] = (FlowEntry){m->offset, m->len};
        fp->count++;
        fp->delivered_bytes += m->len;
    }
}

static void sink_error_cb(rd_kafka_t *rk, int code, const char *reason, void *opaque)
{
    /* Transport errors are retried by librdkafka; fatal ones are read in flush. */
    static TfRateLimit limit = {.burst = 5, .period_s = 10};
    tf_log_limited(&limit, code == RD_KAFKA_RESP_ERR__FATAL ? TF_LOG_ERROR : TF_LOG_WARN, KAFKA_TAG,
                   "producer: %s", reason);
}

static int header_add(rd_kafka_headers_t *h, const char *name, const char *value)
{
    if (!value || !value[0])
        return 0;
    return rd_kafka_header_add(h, name, -1, value, -1) ? -1 : 0;
}

/* Refreshes the flow group's committed offsets and forgets what they cover. */
static void sink_flow_refresh(KafkaSink *s)
{
    rd_kafka_resp_err_t e = rd_kafka_committed(s->flow_rk, s->flow_list, 5000);
    if (e) {
        tf_log(TF_LOG_WARN, KAFKA_TAG, "flow control: cannot read committed offsets: %s", rd_kafka_err2str(e));
        return;
    }
    for (int i = 0; i < s->flow_list->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &s->flow_list->elems[i];
        if (tp->partition < 0 || tp->partition >= s->partitions || tp->err)
            continue;
        FlowPartition *fp = &s->flow[tp->partition];
        fp->committed = tp->offset >= 0 ? tp->offset : -1;
        while (fp->count && fp->committed >= 0 && fp->ring[fp->head].offset < fp->committed) {
            fp->delivered_bytes -= fp->ring[fp->head].bytes;
            fp->head = (fp->head + 1) % fp->cap;
            fp->count--;
        }
    }
    s->flow_checked = tf_now();
}

/* Blocks until `len` more bytes fit into partition p's window. */
static int sink_flow_wait(KafkaSink *s, int32_t p, size_t len, TfError *err)
{
    FlowPartition *fp = &s->flow[p];
    double started = tf_now(), last_note = started;
    int waited = 0;
    for (;;) {
        uint64_t ahead = fp->delivered_bytes + fp->inflight_bytes;
        /* One record always goes through an empty window, whatever its size. */
        if (ahead == 0 || ahead + len <= s->flow_max)
            break;
        if (tf_stop_requested(s->stop))
            return tf_fail(err, "stopped while waiting for consumers (flow control)");
        rd_kafka_poll(s->rk, 50);
        if (tf_now() - s->flow_checked > 0.1)
            sink_flow_refresh(s);
        waited = 1;
        if (tf_now() - last_note > 10) {
            tf_log(TF_LOG_INFO, KAFKA_TAG,
                   "flow control: partition %" PRId32 " has %.1f MiB not yet committed by the consumers; waiting "
                   "(%.0f s so far)",
                   p, (double)ahead / (1 << 20), tf_now() - started);
            last_note = tf_now();
        }
    }
    s->flow_waits += (uint64_t)waited;
    return 0;
}

KafkaSink *kafka_sink_new(const KafkaSinkOptions *opts, TfError *err)
{
    KafkaSink *s = calloc(1, sizeof *s);
    rd_kafka_conf_t *conf = NULL;
    char es[512], cluster[128];
    if (!s) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    if (!opts->bootstrap || !opts->topic) {
        tf_fail(err, "kafka sink: bootstrap and topic are required");
        goto fail;
    }
    snprintf(s->topic, sizeof s->topic, "%s", opts->topic);
    snprintf(s->bootstrap, sizeof s->bootstrap, "%s", opts->bootstrap);
    s->stop = opts->stop;

    conf = rd_kafka_conf_new();
    if (kafka_conf_set(conf, "bootstrap.servers", opts->bootstrap, err) ||
        kafka_conf_set(conf, "client.id", "transfuse-producer", err) ||
        kafka_conf_apply(conf, SINK_DEFAULTS, err) || kafka_conf_apply(conf, opts->config, err))
        goto fail;
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    rd_kafka_conf_set_dr_msg_cb(conf, sink_dr_cb);
    rd_kafka_conf_set_error_cb(conf, sink_error_cb);
    rd_kafka_conf_set_opaque(conf, s);
    s->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof es);
    if (!s->rk) {
        tf_fail(err, "cannot create Kafka producer: %s", es);
        goto fail;
    }
    conf = NULL; /* owned by rk */

    int n = kafka_topic_partition_count(s->rk, s->topic, cluster, sizeof cluster, NULL, err);
    if (n < 0)
        goto fail;
    if (n == 0) {
        tf_fail(err, "topic %s has no partitions", s->topic);
        goto fail;
    }
    s->partitions = n;
    s->is_mock = kafka_cluster_is_mock(cluster);
    rd_kafka_topic_conf_t *tconf = rd_kafka_topic_conf_new();
    if (rd_kafka_topic_conf_set(tconf, "partitioner", "murmur2_random", es, sizeof es) != RD_KAFKA_CONF_OK) {
        rd_kafka_topic_conf_destroy(tconf);
        tf_fail(err, "partitioner: %s", es);
        goto fail;
    }
    s->rkt = rd_kafka_topic_new(s->rk, s->topic, tconf); /* takes tconf */
    if (!s->rkt) {
        tf_fail(err, "topic %s: %s", s->topic, rd_kafka_err2str(rd_kafka_last_error()));
        goto fail;
    }

    s->headers = rd_kafka_headers_new(3);
    if (header_add(s->headers, KAFKA_HEADER_SCHEMA, KAFKA_SCHEMA_NAME) ||
        (opts->facts && (header_add(s->headers, KAFKA_HEADER_TOKENIZER, opts->facts->tokenizer_id) ||
                         header_add(s->headers, KAFKA_HEADER_VAE, opts->facts->vae_id)))) {
        tf_fail(err, "cannot build message headers");
        goto fail;
    }

    if (opts->flow_group) {
        s->flow_max = opts->flow_max_bytes ? opts->flow_max_bytes : (uint64_t)3 << 20;
        s->flow = calloc((size_t)n, sizeof *s->flow);
        s->flow_list = rd_kafka_topic_partition_list_new(n);
        if (!s->flow || !s->flow_list) {
            tf_fail(err, "out of memory");
            goto fail;
        }
        for (int i = 0; i < n; i++) {
            rd_kafka_topic_partition_list_add(s->flow_list, s->topic, i);
            s->flow[i].committed = -1;
        }
        s->flow_rk = kafka_handle_new(RD_KAFKA_CONSUMER, opts->bootstrap, opts->flow_group, opts->config, err);
        if (!s->flow_rk)
            goto fail;
        sink_flow_refresh(s);
    } else if (s->is_mock) {
        tf_log(TF_LOG_WARN, KAFKA_TAG,
               "%s is librdkafka's mock cluster, which keeps only about 5 MiB per partition and drops older "
               "data silently; without flow control (a consumer group to wait for) records a slow consumer "
               "has not read yet can be lost",
               opts->bootstrap);
    }
    return s;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    kafka_sink_free(s);
    return NULL;
}

int kafka_sink_send(KafkaSink *s, int32_t partition, const void *payload, size_t len, const char *key,
                    size_t key_len, TfError *err)
{
    if (partition >= s->partitions)
        return tf_fail(err, "partition %" PRId32 " does not exist (topic %s has %" PRId32 ")", partition, s->topic,
                       s->partitions);
    if (partition < 0)
        partition = key_len ? rd_kafka_msg_partitioner_murmur2_random(s->rkt, key, key_len, s->partitions, NULL, NULL)
                            : (int32_t)(rand() % s->partitions);
    if (s->flow && sink_flow_wait(s, partition, len, err))
        return -1;
    for (;;) {
        rd_kafka_headers_t *h = rd_kafka_headers_copy(s->headers);
        rd_kafka_resp_err_t e = rd_kafka_producev(
            s->rk, RD_KAFKA_V_RKT(s->rkt), RD_KAFKA_V_PARTITION(partition), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_VALUE((void *)payload, len), RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_HEADERS(h),
            RD_KAFKA_V_END);
        if (!e)
            break;
        rd_kafka_headers_destroy(h); /* not taken on failure */
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            if (tf_stop_requested(s->stop))
                return tf_fail(err, "stopped while the producer queue was full");
            rd_kafka_poll(s->rk, 100);
            continue;
        }
        if (e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
            return tf_fail(err, "record %.*s (%zu bytes) is larger than the producer's message.max.bytes",
                           (int)(key_len > 80 ? 80 : key_len), key ? key : "", len);
        return tf_fail(err, "cannot queue record for %s: %s", s->topic, rd_kafka_err2str(e));
    }
    if (s->flow)
        s->flow[partition].inflight_bytes += len;
    rd_kafka_poll(s->rk, 0);
    return 0;
}

int kafka_sink_flush(KafkaSink *s, int timeout_ms, TfError *err)
{
    double deadline = tf_now() + (timeout_ms < 0 ? 1e9 : timeout_ms / 1000.0);
    while (rd_kafka_outq_len(s->rk) > 0) {
        if (tf_now() > deadline) {
            s->unit_failed = 0;
            s->first_failure[0] = 0;
            return tf_fail(err, "%d record(s) still undelivered after %d ms", rd_kafka_outq_len(s->rk), timeout_ms);
        }
        if (tf_stop_requested(s->stop)) {
            s->unit_failed = 0;
            s->first_failure[0] = 0;
            return tf_fail(err, "stopped with %d record(s) undelivered", rd_kafka_outq_len(s->rk));
        }
        rd_kafka_flush(s->rk, 100);
    }
    rd_kafka_poll(s->rk, 0);
    char fes[256];
    rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(s->rk, fes, sizeof fes);
    int rc = 0;
    if (s->unit_failed) {
        tf_fail(err, "%" PRIu64 " record(s) were not delivered (first: %s)", s->unit_failed, s->first_failure);
        rc = -1;
    } else if (fatal) {
        tf_fail(err, "producer failed: %s", fes);
        rc = -1;
    }
    s->unit_failed = 0;
    s->first_failure[0] = 0;
    return rc;
}

uint64_t kafka_sink_delivered(const KafkaSink *s)
{
    return s->delivered;
}
uint64_t kafka_sink_failed(const KafkaSink *s)
{
    return s->failed;
}
int32_t kafka_sink_partitions(const KafkaSink *s)
{
    return s->partitions;
}
int kafka_sink_is_mock(const KafkaSink *s)
{
    return s->is_mock;
}

void kafka_sink_free(KafkaSink *s)
{
    if (!s)
        return;
    if (s->rk) {
        if (rd_kafka_outq_len(s->rk) > 0) {
            rd_kafka_flush(s->rk, 30000);
            if (rd_kafka_outq_len(s->rk) > 0)
                tf_log(TF_LOG_ERROR, KAFKA_TAG, "producer closed with %d record(s) undelivered",
                       rd_kafka_outq_len(s->rk));
        }
        rd_kafka_poll(s->rk, 0);
    }
    if (s->rkt)
        rd_kafka_topic_destroy(s->rkt);
    if (s->headers)
        rd_kafka_headers_destroy(s->headers);
    if (s->rk)
        rd_kafka_destroy(s->rk);
    if (s->flow_list)
        rd_kafka_topic_partition_list_destroy(s->flow_list);
    if (s->flow_rk) {
        rd_kafka_consumer_close(s->flow_rk);
        rd_kafka_destroy(s->flow_rk);
    }
    for (int32_t i = 0; s->flow && i < s->partitions; i++)
        free(s->flow[i].ring);
    free(s->flow);
    free(s);
}

/* ---- admin and inspection ----------------------------------------------------------- */

/* What to tell a user when the cluster refuses to create a topic. */
static const char *create_hint(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR:
        return "the replication factor is larger than the number of brokers";
    case RD_KAFKA_RESP_ERR_INVALID_PARTITIONS:
        return "the partition count must be at least 1";
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
        return "a create-topic policy on the cluster refused it; ask its operators";
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
        return "this client is not allowed to create topics (ACLs); ask the operators or use an existing topic";
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
        return "the name is not a valid topic name";
    case RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE:
    case RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION:
        return "the broker does not support CreateTopics; librdkafka's mock cluster (`transfuse broker`) "
               "cannot create topics over the protocol: pass --topic NAME:PARTITIONS when starting it";
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
        return "the cluster did not answer; check the address";
    default:
        return "";
    }
}

int kafka_topic_create(const char *bootstrap, const char *topic, int partitions, int replication,
                       const char *const *config, TfError *err)
{
    char es[512];
    int rc = -1;
    rd_kafka_NewTopic_t *nt = NULL;
    rd_kafka_AdminOptions_t *ao = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_t *rk = kafka_handle_new(RD_KAFKA_PRODUCER, bootstrap, NULL, config, err);
    if (!rk)
        return -1;
    /* The mock cluster never answers CreateTopics (the request waits for a
     * controller until it times out): say so at once. */
    char *cid = rd_kafka_clusterid(rk, 10000);
    int mock = kafka_cluster_is_mock(cid);
    if (cid)
        rd_kafka_mem_free(rk, cid);
    if (mock) {
        tf_fail(err, "the cluster at %s refused to create topic %s: %s", bootstrap, topic,
                create_hint(RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE));
        goto done;
    }
    nt = rd_kafka_NewTopic_new(topic, partitions, replication, es, sizeof es);
    if (!nt) {
        tf_fail(err, "topic %s: %s", topic, es);
        goto done;
    }
    ao = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(ao, 15000, es, sizeof es);
    rd_kafka_AdminOptions_set_request_timeout(ao, 20000, es, sizeof es);
    q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, ao, q);
    ev = rd_kafka_queue_poll(q, 30000);
    if (!ev) {
        tf_fail(err, "create topic %s: no answer from %s within 30 s", topic, bootstrap);
        goto done;
    }
    rd_kafka_resp_err_t e = rd_kafka_event_error(ev);
    const char *emsg = rd_kafka_event_error_string(ev);
    if (!e) {
        const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
        size_t cnt = 0;
        const rd_kafka_topic_result_t **tr = res ? rd_kafka_CreateTopics_result_topics(res, &cnt) : NULL;
        if (cnt == 1) {
            e = rd_kafka_topic_result_error(tr[0]);
            emsg = rd_kafka_topic_result_error_string(tr[0]);
        }
    }
    if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        rc = 1;
    } else if (e) {
        const char *hint = create_hint(e);
        tf_fail(err, "the cluster at %s refused to create topic %s (%d partitions, replication %d): %s%s%s",
                bootstrap, topic, partitions, replication, emsg && emsg[0] ? emsg : rd_kafka_err2str(e),
                hint[0] ? ": " : "", hint);
    } else {
        rc = 0;
    }
done:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (q)
        rd_kafka_queue_destroy(q);
    if (ao)
        rd_kafka_AdminOptions_destroy(ao);
    if (nt)
        rd_kafka_NewTopic_destroy(nt);
    rd_kafka_destroy(rk);
    return rc;
}

int kafka_topic_describe(const char *bootstrap, const char *topic, const char *const *config, KafkaTopicInfo *info,
                         TfError *err)
{
    memset(info, 0, sizeof *info);
    snprintf(info->topic, sizeof info->topic, "%s", topic);
    const struct rd_kafka_metadata *md = NULL;
    int rc = -1;
    rd_kafka_t *rk = kafka_handle_new(RD_KAFKA_PRODUCER, bootstrap, NULL, config, err);
    if (!rk)
        return -1;
    int n = kafka_topic_partition_count(rk, topic, info->cluster_id, sizeof info->cluster_id, &info->brokers, err);
    if (n < 0)
        goto done;
    info->is_mock = kafka_cluster_is_mock(info->cluster_id);
    const struct rd_kafka_metadata_topic *mt = NULL;
    if (rd_kafka_metadata(rk, 1, NULL, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        for (int i = 0; i < md->topic_cnt; i++)
            if (!strcmp(md->topics[i].topic, topic))
                mt = &md->topics[i];
    if (!mt) {
        tf_fail(err, "topic %s: metadata unavailable", topic);
        goto done;
    }
    info->parts = calloc((size_t)mt->partition_cnt + 1, sizeof *info->parts);
    if (!info->parts) {
        tf_fail(err, "out of memory");
        goto done;
    }
    info->n = (size_t)mt->partition_cnt;
    for (size_t i = 0; i < info->n; i++) {
        const struct rd_kafka_metadata_partition *mp = &mt->partitions[i];
        KafkaPartitionInfo *pi = &info->parts[i];
        pi->partition = mp->id;
        pi->leader = mp->leader;
        pi->low = pi->high = -1;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, topic, mp->id, &pi->low, &pi->high, 10000);
        if (e) {
            tf_fail(err, "topic %s partition %" PRId32 ": cannot read watermarks: %s", topic, mp->id,
                    rd_kafka_err2str(e));
            goto done;
        }
    }
    /* Metadata lists partitions in no promised order. */
    for (size_t i = 1; i < info->n; i++)
        for (size_t j = i; j > 0 && info->parts[j - 1].partition > info->parts[j].partition; j--) {
            KafkaPartitionInfo t = info->parts[j];
            info->parts[j] = info->parts[j - 1];
            info->parts[j - 1] = t;
        }
    rc = 0;
done:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    if (rc)
        kafka_topic_info_deinit(info);
    return rc;
}

void kafka_topic_info_deinit(KafkaTopicInfo *info)
{
    free(info->parts);
    info->parts = NULL;
    info->n = 0;
}

KafkaPosition *kafka_group_committed(const char *bootstrap, const char *topic, const char *group,
                                     const char *const *config, TfError *err)
{
    KafkaPosition *pos = NULL;
    rd_kafka_topic_partition_list_t *list = NULL;
    rd_kafka_t *rk = kafka_handle_new(RD_KAFKA_CONSUMER, bootstrap, group, config, err);
    if (!rk)
        return NULL;
    int n = kafka_topic_partition_count(rk, topic, NULL, 0, NULL, err);
    if (n < 0)
        goto done;
    list = rd_kafka_topic_partition_list_new(n > 0 ? n : 1);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(list, topic, i);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, list, 10000);
    if (e) {
        tf_fail(err, "group %s: cannot read committed offsets: %s", group, rd_kafka_err2str(e));
        goto done;
    }
    pos = kafka_position_new(topic);
    if (!pos) {
        tf_fail(err, "out of memory");
        goto done;
    }
    for (int i = 0; i < list->cnt; i++)
        if (kafka_position_set(pos, list->elems[i].partition, list->elems[i].offset >= 0 ? list->elems[i].offset : -1,
                               err)) {
            kafka_position_free(pos);
            pos = NULL;
            break;
        }
done:
    if (list)
        rd_kafka_topic_partition_list_destroy(list);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return pos;
}

char **kafka_group_list(const char *bootstrap, const char *const *config, TfError *err)
{
    char **out = NULL;
    rd_kafka_AdminOptions_t *ao = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;
    char es[256];
    rd_kafka_t *rk = kafka_handle_new(RD_KAFKA_PRODUCER, bootstrap, NULL, config, err);
    if (!rk)
        return NULL;
    /* The mock cluster has no ListGroups (and librdkafka 2.0.2 leaks the
     * failed request's error object): say so without asking. */
    char *cid = rd_kafka_clusterid(rk, 10000);
    int mock = kafka_cluster_is_mock(cid);
    if (cid)
        rd_kafka_mem_free(rk, cid);
    if (mock) {
        tf_fail(err, "listing consumer groups: librdkafka's mock cluster has no ListGroups");
        goto done;
    }
    ao = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS);
    rd_kafka_AdminOptions_set_request_timeout(ao, 10000, es, sizeof es);
    q = rd_kafka_queue_new(rk);
    rd_kafka_ListConsumerGroups(rk, ao, q);
    ev = rd_kafka_queue_poll(q, 15000);
    if (!ev) {
        tf_fail(err, "listing consumer groups: no answer within 15 s");
        goto done;
    }
    if (rd_kafka_event_error(ev)) {
        tf_fail(err, "listing consumer groups: %s", rd_kafka_event_error_string(ev));
        goto done;
    }
    const rd_kafka_ListConsumerGroups_result_t *res = rd_kafka_event_ListConsumerGroups_result(ev);
    size_t n = 0, nerr = 0;
    const rd_kafka_ConsumerGroupListing_t **gl = rd_kafka_ListConsumerGroups_result_valid(res, &n);
    const rd_kafka_error_t **errs = rd_kafka_ListConsumerGroups_result_errors(res, &nerr);
    if (nerr > 0 && n == 0) {
        tf_fail(err, "listing consumer groups: %s", rd_kafka_error_string(errs[0]));
        goto done;
    }
    out = calloc(n + 1, sizeof *out);
    for (size_t i = 0; out && i < n; i++) {
        out[i] = strdup(rd_kafka_ConsumerGroupListing_group_id(gl[i]));
        if (!out[i]) {
            kafka_strings_free(out);
            out = NULL;
        }
    }
    if (!out)
        tf_fail(err, "out of memory");
done:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (q)
        rd_kafka_queue_destroy(q);
    if (ao)
        rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_destroy(rk);
    return out;
}

void kafka_strings_free(char **list)
{
    for (size_t i = 0; list && list[i]; i++)
        free(list[i]);
    free(list);
}
