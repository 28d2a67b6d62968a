/* kafka_group.c: a member of a Kafka consumer group that hands out one
 * unit of work at a time (an ingest job, a range of a partition) and
 * commits its offset only when the caller says the work is durable.
 *
 * The high-level consumer (group.id, subscribe) with manual commits
 * (enable.auto.commit=false, enable.auto.offset.store=false). After a
 * record is handed out every assigned partition is paused, so nothing more
 * is fetched while the work runs; kafka_group_serve keeps the member alive
 * meanwhile (max.poll.interval.ms counts calls to the consumer's poll) and
 * runs rebalance callbacks. A revocation first calls the caller's
 * on_revoke (which finishes or abandons the work in hand of those
 * partitions, committing what is durable), then gives the partitions up.
 * Assigned partitions start at the group's committed offset; a partition
 * the group never committed starts at the beginning; an offset that was
 * deleted (retention) is an error, never a silent skip. Eager (range,
 * roundrobin) and cooperative (cooperative-sticky) assignors both work. */
#include "kafka_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define GROUP_TAG "kafka-group"
#define GROUP_MAX_PENDING 64

struct KafkaGroup {
    rd_kafka_t *rk;
    KafkaGroupOptions opts;
    char topic[256];
    char group[256];
    int32_t *parts;             /* assigned, sorted */
    int64_t *committed;         /* start offset of each assigned partition at assignment */
    size_t n, cap;
    int holding;                /* a record is out: keep every partition paused */
    rd_kafka_message_t *current;
    rd_kafka_message_t *pending[GROUP_MAX_PENDING]; /* arrived while holding */
    size_t n_pending;
    int cooperative;
    int fatal;
    char fatal_what[320];
    uint64_t rebalances;
};

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static long part_index(const KafkaGroup *g, int32_t p)
{
    for (size_t i = 0; i < g->n; i++)
        if (g->parts[i] == p)
            return (long)i;
    return -1;
}

/* Pauses (pause = 1) or resumes every partition of the list. */
static void list_pause(KafkaGroup *g, const rd_kafka_topic_partition_list_t *l, int pause)
{
    if (!l || l->cnt == 0)
        return;
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(l);
    if (pause)
        rd_kafka_pause_partitions(g->rk, c);
    else
        rd_kafka_resume_partitions(g->rk, c);
    rd_kafka_topic_partition_list_destroy(c);
}

static rd_kafka_topic_partition_list_t *assigned_list(const KafkaGroup *g)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)(g->n ? g->n : 1));
    for (size_t i = 0; i < g->n; i++)
        rd_kafka_topic_partition_list_add(l, g->topic, g->parts[i]);
    return l;
}

static void set_all_paused(KafkaGroup *g, int pause)
{
    rd_kafka_topic_partition_list_t *l = assigned_list(g);
    list_pause(g, l, pause);
    rd_kafka_topic_partition_list_destroy(l);
}

/* Drops records that arrived while holding for partitions no longer ours. */
static void pending_prune(KafkaGroup *g)
{
    size_t k = 0;
    for (size_t i = 0; i < g->n_pending; i++) {
        if (part_index(g, g->pending[i]->partition) >= 0)
            g->pending[k++] = g->pending[i];
        else
            rd_kafka_message_destroy(g->pending[i]);
    }
    g->n_pending = k;
}

static void on_assign(KafkaGroup *g, rd_kafka_topic_partition_list_t *l)
{
    /* Start where the group committed; never committed: the beginning. */
    rd_kafka_resp_err_t e = rd_kafka_committed(g->rk, l, 10000);
    if (e)
        tf_log(TF_LOG_WARN, GROUP_TAG, "group %s: cannot read committed offsets (%s); starting at the beginning",
               g->group, rd_kafka_err2str(e));
    for (int i = 0; i < l->cnt; i++)
        if (e || l->elems[i].offset < 0)
            l->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_error_t *ce = NULL;
    if (g->cooperative)
        ce = rd_kafka_incremental_assign(g->rk, l);
    else
        e = rd_kafka_assign(g->rk, l);
    if (ce || e) {
        snprintf(g->fatal_what, sizeof g->fatal_what, "group %s: cannot take the assigned partitions: %s", g->group,
                 ce ? rd_kafka_error_string(ce) : rd_kafka_err2str(e));
        g->fatal = 1;
        if (ce)
            rd_kafka_error_destroy(ce);
        return;
    }
    if (!g->cooperative)
        g->n = 0;
    for (int i = 0; i < l->cnt; i++) {
        if (part_index(g, l->elems[i].partition) >= 0)
            continue;
        if (g->n == g->cap) {
            size_t nc = g->cap ? 2 * g->cap : 16;
            int32_t *p = realloc(g->parts, nc * sizeof *p);
            if (p)
                g->parts = p;
            int64_t *o = realloc(g->committed, nc * sizeof *o);
            if (o)
                g->committed = o;
            if (!p || !o) {
                snprintf(g->fatal_what, sizeof g->fatal_what, "out of memory");
                g->fatal = 1;
                return;
            }
            g->cap = nc;
        }
        g->parts[g->n] = l->elems[i].partition;
        g->committed[g->n] = l->elems[i].offset == RD_KAFKA_OFFSET_BEGINNING ? 0 : l->elems[i].offset;
        g->n++;
    }
    /* Sort parts with their offsets. */
    for (size_t i = 1; i < g->n; i++)
        for (size_t j = i; j > 0 && g->parts[j - 1] > g->parts[j]; j--) {
            int32_t tp = g->parts[j];
            g->parts[j] = g->parts[j - 1];
            g->parts[j - 1] = tp;
            int64_t to = g->committed[j];
            g->committed[j] = g->committed[j - 1];
            g->committed[j - 1] = to;
        }
    /* Say the pause state of every new partition: librdkafka keeps a
     * partition's application pause across an unassign, so a partition
     * paused by kafka_group_serve before a rebalance would otherwise come
     * back paused with nothing left to resume it. */
    list_pause(g, l, g->holding || g->opts.no_fetch || g->n_pending > 0);
    tf_log(TF_LOG_INFO, GROUP_TAG, "group %s: assigned %d partition(s) of %s, %zu in all", g->group, l->cnt, g->topic,
           g->n);
    if (g->opts.on_assign) {
        int32_t *ps = malloc(((size_t)l->cnt + 1) * sizeof *ps);
        if (ps) {
            for (int i = 0; i < l->cnt; i++)
                ps[i] = l->elems[i].partition;
            qsort(ps, (size_t)l->cnt, sizeof *ps, cmp_i32);
            g->opts.on_assign(g->opts.ctx, ps, (size_t)l->cnt);
            free(ps);
        }
    }
}

static void on_revoke(KafkaGroup *g, rd_kafka_topic_partition_list_t *l)
{
    /* The caller finishes or abandons its work on these first. */
    if (g->opts.on_revoke && l->cnt > 0) {
        int32_t *ps = malloc((size_t)l->cnt * sizeof *ps);
        if (ps) {
            for (int i = 0; i < l->cnt; i++)
                ps[i] = l->elems[i].partition;
            qsort(ps, (size_t)l->cnt, sizeof *ps, cmp_i32);
            g->opts.on_revoke(g->opts.ctx, ps, (size_t)l->cnt);
            free(ps);
        }
    }
    if (g->cooperative) {
        rd_kafka_error_t *ce = rd_kafka_incremental_unassign(g->rk, l);
        if (ce)
            rd_kafka_error_destroy(ce);
        size_t k = 0;
        for (size_t i = 0; i < g->n; i++) {
            int gone = 0;
            for (int j = 0; j < l->cnt; j++)
                gone |= l->elems[j].partition == g->parts[i];
            if (!gone) {
                g->parts[k] = g->parts[i];
                g->committed[k] = g->committed[i];
                k++;
            }
        }
        g->n = k;
    } else {
        rd_kafka_assign(g->rk, NULL);
        g->n = 0;
    }
    pending_prune(g);
    tf_log(TF_LOG_INFO, GROUP_TAG, "group %s: %d partition(s) of %s revoked, %zu left", g->group, l->cnt, g->topic,
           g->n);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e, rd_kafka_topic_partition_list_t *l, void *opaque)
{
    (void)rk;
    KafkaGroup *g = opaque;
    g->rebalances++;
    if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        on_assign(g, l);
    else if (e == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        on_revoke(g, l);
    else {
        tf_log(TF_LOG_WARN, GROUP_TAG, "group %s: rebalance error: %s", g->group, rd_kafka_err2str(e));
        if (g->cooperative) {
            rd_kafka_error_t *ce = rd_kafka_incremental_unassign(g->rk, l);
            if (ce)
                rd_kafka_error_destroy(ce);
        } else
            rd_kafka_assign(g->rk, NULL);
        g->n = 0;
        pending_prune(g);
    }
}

KafkaGroup *kafka_group_new(const KafkaGroupOptions *opts, TfError *err)
{
    KafkaGroup *g = calloc(1, sizeof *g);
    rd_kafka_topic_partition_list_t *sub = NULL;
    if (!g) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    if (!opts->bootstrap || !opts->topic || !opts->group_id || !*opts->group_id) {
        tf_fail(err, "kafka group: bootstrap, topic and group id are required");
        goto fail;
    }
    g->opts = *opts;
    g->opts.config = NULL;
    snprintf(g->topic, sizeof g->topic, "%s", opts->topic);
    snprintf(g->group, sizeof g->group, "%s", opts->group_id);
    char sess[64], poll[64];
    snprintf(sess, sizeof sess, "session.timeout.ms=%d", opts->session_timeout_ms > 0 ? opts->session_timeout_ms : 6000);
    snprintf(poll, sizeof poll, "max.poll.interval.ms=%d",
             opts->max_poll_interval_ms > 0 ? opts->max_poll_interval_ms : 300000);
    /* Our settings first, the caller's -X list over them. */
    size_t n_extra = 0;
    while (opts->config && opts->config[n_extra])
        n_extra++;
    const char **cfg = calloc(n_extra + 6, sizeof *cfg);
    if (!cfg) {
        tf_fail(err, "out of memory");
        goto fail;
    }
    size_t k = 0;
    cfg[k++] = sess;
    cfg[k++] = poll;
    cfg[k++] = "heartbeat.interval.ms=1000";
    cfg[k++] = "fetch.wait.max.ms=100";
    for (size_t i = 0; i < n_extra; i++)
        cfg[k++] = opts->config[i];
    cfg[k] = NULL;
    char es[512];
    /* As kafka_handle_new, but the rebalance callback must be on the conf
     * before the handle exists. */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (kafka_conf_set(conf, "bootstrap.servers", opts->bootstrap, err) ||
        kafka_conf_set(conf, "client.id", "transfuse", err) ||
        kafka_conf_set(conf, "allow.auto.create.topics", "false", err) ||
        kafka_conf_set(conf, "group.id", opts->group_id, err) ||
        kafka_conf_set(conf, "auto.offset.reset", "error", err) ||
        kafka_conf_set(conf, "enable.auto.commit", "false", err) ||
        kafka_conf_set(conf, "enable.auto.offset.store", "false", err) || kafka_conf_apply(conf, cfg, err)) {
        rd_kafka_conf_destroy(conf);
        free(cfg);
        goto fail;
    }
    free(cfg);
    kafka_conf_set_logging(conf);
    rd_kafka_conf_set_opaque(conf, g);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    g->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, es, sizeof es);
    if (!g->rk) {
        rd_kafka_conf_destroy(conf);
        tf_fail(err, "cannot create Kafka consumer: %s", es);
        goto fail;
    }
    rd_kafka_poll_set_consumer(g->rk);
    if (kafka_topic_partition_count(g->rk, g->topic, NULL, 0, NULL, err) < 0)
        goto fail;
    const char *proto = rd_kafka_rebalance_protocol(g->rk);
    g->cooperative = proto && !strcmp(proto, "COOPERATIVE");
    sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, g->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(g->rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (e) {
        tf_fail(err, "group %s: cannot subscribe to %s: %s", g->group, g->topic, rd_kafka_err2str(e));
        goto fail;
    }
    return g;
fail:
    if (g->rk)
        rd_kafka_destroy(g->rk);
    free(g->parts);
    free(g->committed);
    free(g);
    return NULL;
}

static int consumer_error(KafkaGroup *g, rd_kafka_message_t *m, TfError *err)
{
    rd_kafka_resp_err_t e = m->err;
    if (e == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        rd_kafka_message_destroy(m);
        return 0;
    }
    if (e == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET || e == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) {
        tf_fail(err,
                "group %s, %s partition %" PRId32 ": the committed offset is no longer on the broker (%s): "
                "records were deleted before the group read them (retention)",
                g->group, g->topic, m->partition, rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
        return -1;
    }
    if (e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || e == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
        e == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED || e == RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED ||
        e == RD_KAFKA_RESP_ERR__FATAL) {
        tf_fail(err, "group %s, topic %s: %s", g->group, g->topic, rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
        return -1;
    }
    static TfRateLimit limit = {.burst = 5, .period_s = 10};
    tf_log_limited(&limit, TF_LOG_WARN, GROUP_TAG, "group %s: %s (retrying)", g->group, rd_kafka_message_errstr(m));
    rd_kafka_message_destroy(m);
    return 0;
}

/* One poll of the consumer: a record (returned), nothing (NULL, 0) or an
 * error (NULL, -1). */
static rd_kafka_message_t *poll_once(KafkaGroup *g, int timeout_ms, int *rc, TfError *err)
{
    *rc = 0;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(g->rk, timeout_ms);
    if (g->fatal) {
        if (m)
            rd_kafka_message_destroy(m);
        *rc = tf_fail(err, "%s", g->fatal_what);
        return NULL;
    }
    if (!m)
        return NULL;
    if (m->err) {
        *rc = consumer_error(g, m, err);
        return NULL;
    }
    if (part_index(g, m->partition) < 0) { /* stale: revoked meanwhile */
        rd_kafka_message_destroy(m);
        return NULL;
    }
    return m;
}

int kafka_group_serve(KafkaGroup *g, int timeout_ms, TfError *err)
{
    int rc;
    rd_kafka_message_t *m = poll_once(g, timeout_ms, &rc, err);
    if (m) {
        /* Fetched before the pause took effect: keep it for later, in order. */
        if (g->n_pending < GROUP_MAX_PENDING) {
            g->pending[g->n_pending++] = m;
        } else {
            /* Never skipped: the partition goes back to this record. */
            rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(l, g->topic, m->partition)->offset = m->offset;
            rd_kafka_error_t *se = rd_kafka_seek_partitions(g->rk, l, 5000);
            if (se)
                rd_kafka_error_destroy(se);
            rd_kafka_topic_partition_list_destroy(l);
            rd_kafka_message_destroy(m);
        }
        set_all_paused(g, 1);
    }
    return rc;
}

int kafka_group_next(KafkaGroup *g, KafkaRecord *rec, int timeout_ms, TfError *err)
{
    if (g->current) {
        rd_kafka_message_destroy(g->current);
        g->current = NULL;
    }
    rd_kafka_message_t *m = NULL;
    pending_prune(g);
    if (g->n_pending) {
        m = g->pending[0];
        memmove(g->pending, g->pending + 1, (g->n_pending - 1) * sizeof *g->pending);
        g->n_pending--;
    } else {
        if (g->holding && !g->opts.no_fetch) {
            g->holding = 0;
            set_all_paused(g, 0);
        }
        int rc;
        m = poll_once(g, timeout_ms, &rc, err);
        if (!m)
            return rc < 0 ? -1 : KAFKA_IDLE;
    }
    g->current = m;
    g->holding = 1;
    set_all_paused(g, 1);
    memset(rec, 0, sizeof *rec);
    rec->payload = m->payload;
    rec->len = m->len;
    rec->key = m->key;
    rec->key_len = m->key_len;
    rec->partition = m->partition;
    rec->offset = m->offset;
    return KAFKA_RECORD;
}

int kafka_group_commit(KafkaGroup *g, int32_t partition, int64_t next_offset, TfError *err)
{
    if (part_index(g, partition) < 0)
        return tf_fail(err, "group %s: partition %" PRId32 " of %s is no longer assigned to this member; not committed",
                       g->group, partition, g->topic);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, g->topic, partition)->offset = next_offset;
    rd_kafka_resp_err_t e = rd_kafka_commit(g->rk, l, 0);
    if (!e && l->elems[0].err)
        e = l->elems[0].err;
    rd_kafka_topic_partition_list_destroy(l);
    if (e)
        return tf_fail(err, "group %s: committing %s partition %" PRId32 " offset %" PRId64 ": %s", g->group, g->topic,
                       partition, next_offset, rd_kafka_err2str(e));
    long i = part_index(g, partition);
    if (i >= 0)
        g->committed[i] = next_offset;
    return 0;
}

int kafka_group_owns(const KafkaGroup *g, int32_t partition)
{
    return part_index(g, partition) >= 0;
}

size_t kafka_group_assignment(const KafkaGroup *g, const int32_t **partitions, const int64_t **start)
{
    if (partitions)
        *partitions = g->parts;
    if (start)
        *start = g->committed;
    return g->n;
}

uint64_t kafka_group_rebalances(const KafkaGroup *g)
{
    return g->rebalances;
}

const char *kafka_group_member_id(KafkaGroup *g, char *out, size_t cap)
{
    char *id = rd_kafka_memberid(g->rk);
    snprintf(out, cap, "%s", id ? id : "");
    if (id)
        rd_kafka_mem_free(g->rk, id);
    return out;
}

void kafka_group_free(KafkaGroup *g)
{
    if (!g)
        return;
    if (g->current)
        rd_kafka_message_destroy(g->current);
    g->current = NULL;
    for (size_t i = 0; i < g->n_pending; i++)
        rd_kafka_message_destroy(g->pending[i]);
    g->n_pending = 0;
    /* Leaves the group (revocation callbacks run), so the others take over at once. */
    rd_kafka_consumer_close(g->rk);
    rd_kafka_destroy(g->rk);
    free(g->parts);
    free(g->committed);
    free(g);
}
