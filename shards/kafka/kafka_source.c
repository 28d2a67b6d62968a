/* kafka_source.c: the consumer side of the Kafka transport, as a trainer
 * rank uses it. Partitions are assigned statically (p % world_size ==
 * rank; no group rebalancing, so a slow rank never stalls the others), a
 * background thread prefetches into a bounded queue and pauses fetching
 * when the queue is full, the position (next offset per partition) is
 * exactly what was handed out so a checkpoint resumes without loss or
 * repetition, and the same offsets are committed under a group id so lag
 * shows in standard tools and producers can flow-control on it.
 *
 * auto.offset.reset=error: when the offset to read was deleted (the mock
 * broker's bounded retention, or a real cluster's retention) the source
 * reports an error naming the partition and the lost range, never a skip. */
#include "kafka_internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KAFKA_TAG "kafka"

enum { ITEM_MSG, ITEM_EOF, ITEM_DONE, ITEM_ERROR };

typedef struct Item {
    struct Item *next;
    int kind;
    int32_t partition;
    int64_t offset;
    rd_kafka_message_t *msg;  /* ITEM_MSG */
    char what[320];           /* ITEM_ERROR */
} Item;

typedef struct PartState {
    int32_t partition;
    int64_t end;        /* exclusive; -1: none */
    int done;           /* reached end */
    int eof;            /* at the broker's end since eof_since */
    double eof_since;
} PartState;

struct KafkaSource {
    rd_kafka_t *rk;
    char topic[256];
    KafkaSourceOptions opts;
    KafkaPosition *pos;
    int32_t *assigned;
    PartState *parts;
    size_t n;
    ShardFacts expect;
    int have_expect;

    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;
    pthread_cond_t nonempty, space;
    Item *head, *tail;
    size_t q_records, q_bytes;
    atomic_int quit;              /* set by kafka_source_free, read by the fetch thread */

    rd_kafka_message_t *current;  /* handed out, destroyed on the next call */
    double last_commit;
    int committed_once;
    KafkaSourceStats stats;
    uint64_t pauses;              /* written by the thread under lock */
};

static PartState *part_find(KafkaSource *s, int32_t p)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->parts[i].partition == p)
            return &s->parts[i];
    return NULL;
}

static void item_free(Item *it)
{
    if (!it)
        return;
    if (it->msg)
        rd_kafka_message_destroy(it->msg);
    free(it);
}

/* Appends an item; the queue bound is checked by the fetch loop, so a
 * single item may exceed it (never deadlocks on a huge record). */
static void queue_push(KafkaSource *s, Item *it)
{
    pthread_mutex_lock(&s->lock);
    if (s->tail)
        s->tail->next = it;
    else
        s->head = it;
    s->tail = it;
    s->q_records++;
    s->q_bytes += it->msg ? it->msg->len : 0;
    pthread_cond_signal(&s->nonempty);
    pthread_mutex_unlock(&s->lock);
}

static void abs_deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Pauses or resumes every partition that is not done. */
static void set_paused(KafkaSource *s, int pause)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)s->n);
    for (size_t i = 0; i < s->n; i++)
        rd_kafka_topic_partition_list_add(l, s->topic, s->parts[i].partition);
    if (pause)
        rd_kafka_pause_partitions(s->rk, l);
    else
        rd_kafka_resume_partitions(s->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
}

static int error_is_fatal(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__RESOLVE:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NOT_COORDINATOR:
    case RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
        return 0;
    default:
        return 1;
    }
}

/* The prefetch thread: polls the consumer, keeps the queue within bounds
 * by pausing fetches, and turns librdkafka events into queue items. */
static void *fetch_thread(void *arg)
{
    KafkaSource *s = arg;
    int paused = 0;
    double full_since = 0;
    while (!atomic_load(&s->quit)) {
        pthread_mutex_lock(&s->lock);
        int full = s->q_records >= s->opts.queue_records || s->q_bytes >= s->opts.queue_bytes;
        int low = s->q_records <= s->opts.queue_records / 2 && s->q_bytes <= s->opts.queue_bytes / 2;
        if (full || (paused && !low)) {
            /* A full queue first just stops polling: librdkafka's own queue
             * (queued.max.messages.kbytes) fills and its fetcher waits. When
             * the reader stays away longer (a checkpoint, an evaluation),
             * fetching is paused so the broker stops sending; it resumes
             * once the queue has drained to half. A resume costs librdkafka
             * a fetch round trip (about 0.5 s measured with 2.0.2), hence
             * not on every brief stall. */
            if (full && !full_since)
                full_since = tf_now();
            if (!paused && full && (tf_now() - full_since) * 1000 >= s->opts.pause_after_ms) {
                pthread_mutex_unlock(&s->lock);
                set_paused(s, 1);
                paused = 1;
                pthread_mutex_lock(&s->lock);
                s->pauses++;
            }
            struct timespec ts;
            abs_deadline(&ts, 50);
            pthread_cond_timedwait(&s->space, &s->lock, &ts);
            pthread_mutex_unlock(&s->lock);
            continue;
        }
        full_since = 0;
        pthread_mutex_unlock(&s->lock);
        if (paused) {
            /* librdkafka restarts each partition at the offset after the
             * last message polled, so nothing is skipped or repeated. */
            set_paused(s, 0);
            paused = 0;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(s->rk, 100);
        if (!m)
            continue;
        Item *it = calloc(1, sizeof *it);
        if (!it) {
            rd_kafka_message_destroy(m);
            continue;
        }
        it->partition = m->partition;
        it->offset = m->offset;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            it->kind = ITEM_EOF;
            rd_kafka_message_destroy(m);
        } else if (m->err) {
            if (!error_is_fatal(m->err)) {
                static TfRateLimit limit = {.burst = 5, .period_s = 10};
                tf_log_limited(&limit, TF_LOG_WARN, KAFKA_TAG, "consumer: %s (retrying)", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                free(it);
                continue;
            }
            it->kind = ITEM_ERROR;
            if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET || m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE)
                snprintf(it->what, sizeof it->what,
                         "partition %" PRId32 ": the offset to read is no longer on the broker (%s): records were "
                         "deleted before this consumer read them (retention; the embedded broker keeps only "
                         "~5 MiB per partition, so its producers need flow control)",
                         m->partition, rd_kafka_message_errstr(m));
            else
                snprintf(it->what, sizeof it->what, "partition %" PRId32 ": %s", m->partition,
                         rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
        } else {
            it->kind = ITEM_MSG;
            it->msg = m;
        }
        queue_push(s, it);
    }
    return NULL;
}

static const char *header_value(rd_kafka_message_t *m, const char *name, char *buf, size_t cap)
{
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t len = 0;
    if (rd_kafka_message_headers(m, &h) || rd_kafka_header_get_last(h, name, &v, &len) || !v)
        return NULL;
    if (len >= cap)
        len = cap - 1;
    memcpy(buf, v, len);
    buf[len] = 0;
    return buf;
}

/* Refuses a record whose headers name another tokenizer or VAE. */
static int check_identity(KafkaSource *s, rd_kafka_message_t *m, TfError *err)
{
    char buf[128];
    const char *v;
    if (s->expect.tokenizer_id[0] && (v = header_value(m, KAFKA_HEADER_TOKENIZER, buf, sizeof buf)) &&
        strcmp(v, s->expect.tokenizer_id))
        return tf_fail(err,
                       "partition %" PRId32 " offset %" PRId64 ": record was tokenized with %s, this reader expects %s",
                       m->partition, m->offset, v, s->expect.tokenizer_id);
    if (s->expect.vae_id[0] && (v = header_value(m, KAFKA_HEADER_VAE, buf, sizeof buf)) && strcmp(v, s->expect.vae_id))
        return tf_fail(err, "partition %" PRId32 " offset %" PRId64 ": record was encoded with VAE %s, this reader expects %s",
                       m->partition, m->offset, v, s->expect.vae_id);
    return 0;
}

static int commit_position(KafkaSource *s, int async, TfError *err)
{
    if (!s->rk || s->n == 0)
        return 0;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)s->n);
    for (size_t i = 0; i < s->pos->n; i++)
        rd_kafka_topic_partition_list_add(l, s->topic, s->pos->partition[i])->offset = s->pos->offset[i];
    rd_kafka_resp_err_t e = rd_kafka_commit(s->rk, l, async);
    rd_kafka_topic_partition_list_destroy(l);
    s->last_commit = tf_now();
    if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
        return tf_fail(err, "committing offsets of group %s: %s", s->opts.group_id, rd_kafka_err2str(e));
    return 0;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

KafkaSource *kafka_source_new(const KafkaSourceOptions *opts, TfError *err)
{
    KafkaSource *s = calloc(1, sizeof *s);
    rd_kafka_topic_partition_list_t *list = NULL;
    if (!s) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->nonempty, NULL);
    pthread_cond_init(&s->space, NULL);
    s->opts = *opts;
    if (!s->opts.group_id)
        s->opts.group_id = "transfuse";
    if (s->opts.world_size <= 0)
        s->opts.world_size = 1;
    if (!s->opts.queue_records)
        s->opts.queue_records = 1024;
    if (!s->opts.queue_bytes)
        s->opts.queue_bytes = (size_t)64 << 20;
    if (!s->opts.commit_interval_ms)
        s->opts.commit_interval_ms = 1000;
    if (!s->opts.pause_after_ms)
        s->opts.pause_after_ms = 1000;
    if (!opts->bootstrap || !opts->topic) {
        tf_fail(err, "kafka source: bootstrap and topic are required");
        goto fail;
    }
    if (s->opts.rank < 0 || s->opts.rank >= s->opts.world_size) {
        tf_fail(err, "kafka source: rank %d is not in [0, %d)", s->opts.rank, s->opts.world_size);
        goto fail;
    }
    if (opts->expect) {
        s->expect = *opts->expect;
        s->have_expect = 1;
    }
    /* The source keeps no pointers into opts beyond the call. */
    s->opts.start = s->opts.end = NULL;
    s->opts.partitions = NULL;
    s->opts.expect = NULL;
    s->opts.config = NULL;
    snprintf(s->topic, sizeof s->topic, "%s", opts->topic);
    s->pos = kafka_position_new(opts->topic);

    /* Bounded librdkafka-side prefetch, so pausing bounds memory. */
    char qkb[32];
    size_t kb = s->opts.queue_bytes / 1024 / 2;
    snprintf(qkb, sizeof qkb, "%zu", kb < 1024 ? (size_t)1024 : kb > 1048576 ? (size_t)1048576 : kb);
    const char *base[] = {"enable.partition.eof=true", NULL, "fetch.wait.max.ms=100", NULL};
    char qkv[64];
    snprintf(qkv, sizeof qkv, "queued.max.messages.kbytes=%s", qkb);
    base[1] = qkv;
    /* User config goes last so it wins; merge the two lists. */
    size_t nuser = 0;
    while (opts->config && opts->config[nuser])
        nuser++;
    const char **all = calloc(nuser + 4, sizeof *all);
    if (!s->pos || !all) {
        free(all);
        tf_fail(err, "out of memory");
        goto fail;
    }
    all[0] = base[0];
    all[1] = base[1];
    all[2] = base[2];
    for (size_t i = 0; i < nuser; i++)
        all[3 + i] = opts->config[i];
    s->rk = kafka_handle_new(RD_KAFKA_CONSUMER, opts->bootstrap, s->opts.group_id, all, err);
    free(all);
    if (!s->rk)
        goto fail;
    rd_kafka_poll_set_consumer(s->rk);

    int np = kafka_topic_partition_count(s->rk, s->topic, NULL, 0, NULL, err);
    if (np < 0)
        goto fail;
    s->assigned = calloc((size_t)np + 1, sizeof *s->assigned);
    s->parts = calloc((size_t)np + 1, sizeof *s->parts);
    if (!s->assigned || !s->parts) {
        tf_fail(err, "out of memory");
        goto fail;
    }
    if (opts->partitions) {
        for (size_t i = 0; i < opts->n_partitions; i++) {
            if (opts->partitions[i] < 0 || opts->partitions[i] >= np) {
                tf_fail(err, "topic %s has no partition %" PRId32 " (it has %d)", s->topic, opts->partitions[i], np);
                goto fail;
            }
            int dup = 0;
            for (size_t j = 0; j < s->n; j++)
                dup |= s->assigned[j] == opts->partitions[i];
            if (!dup)
                s->assigned[s->n++] = opts->partitions[i];
        }
        qsort(s->assigned, s->n, sizeof *s->assigned, cmp_i32);
    } else {
        for (int p = 0; p < np; p++)
            if (p % s->opts.world_size == s->opts.rank)
                s->assigned[s->n++] = p;
    }
    if (s->n == 0) {
        tf_log(TF_LOG_INFO, KAFKA_TAG, "rank %d of %d: topic %s has %d partition(s), none for this rank", s->opts.rank,
               s->opts.world_size, s->topic, np);
        return s;
    }

    /* Starting offsets: the saved position, else the group's committed
     * offset, else the log start. Always numeric, so the position is. */
    list = rd_kafka_topic_partition_list_new((int)s->n);
    for (size_t i = 0; i < s->n; i++)
        rd_kafka_topic_partition_list_add(list, s->topic, s->assigned[i]);
    rd_kafka_resp_err_t e = rd_kafka_committed(s->rk, list, 10000);
    if (e) {
        tf_fail(err, "group %s: cannot read committed offsets: %s", s->opts.group_id, rd_kafka_err2str(e));
        goto fail;
    }
    for (size_t i = 0; i < s->n; i++) {
        int32_t p = s->assigned[i];
        int64_t lo = -1, hi = -1;
        e = rd_kafka_query_watermark_offsets(s->rk, s->topic, p, &lo, &hi, 10000);
        if (e) {
            tf_fail(err, "topic %s partition %" PRId32 ": cannot read watermarks: %s", s->topic, p, rd_kafka_err2str(e));
            goto fail;
        }
        int64_t start = opts->start ? kafka_position_get(opts->start, p) : -1;
        const char *from = "saved position";
        if (start < 0 && list->elems[i].offset >= 0) {
            start = list->elems[i].offset;
            from = "committed offset";
        }
        if (start < 0) {
            start = lo;
            from = "log start";
        }
        if (start < lo) {
            tf_fail(err,
                    "topic %s partition %" PRId32 ": %s %" PRId64 " is before the log start %" PRId64
                    ": records %" PRId64 "..%" PRId64 " were deleted before they were read",
                    s->topic, p, from, start, lo, start, lo - 1);
            goto fail;
        }
        if (start > hi) {
            tf_fail(err, "topic %s partition %" PRId32 ": %s %" PRId64 " is past the end %" PRId64, s->topic, p, from,
                    start, hi);
            goto fail;
        }
        list->elems[i].offset = start;
        if (kafka_position_set(s->pos, p, start, err))
            goto fail;
        PartState *ps = &s->parts[i];
        ps->partition = p;
        ps->end = opts->end ? kafka_position_get(opts->end, p) : -1;
        if (s->opts.until == KAFKA_UNTIL_SNAPSHOT && (ps->end < 0 || ps->end > hi))
            ps->end = hi;
        if (ps->end >= 0 && start >= ps->end)
            ps->done = 1;
    }
    e = rd_kafka_assign(s->rk, list);
    if (e) {
        tf_fail(err, "assigning partitions of %s: %s", s->topic, rd_kafka_err2str(e));
        goto fail;
    }
    rd_kafka_topic_partition_list_destroy(list);
    list = NULL;
    s->last_commit = tf_now();
    if (pthread_create(&s->thread, NULL, fetch_thread, s)) {
        tf_fail(err, "cannot start the prefetch thread");
        goto fail;
    }
    s->thread_started = 1;
    return s;
fail:
    if (list)
        rd_kafka_topic_partition_list_destroy(list);
    s->opts.commit_interval_ms = -1; /* nothing was read: commit nothing */
    kafka_source_free(s);
    return NULL;
}

/* 1 when every assigned partition is finished for the chosen `until`. */
static int source_at_end(KafkaSource *s)
{
    if (s->opts.until == KAFKA_UNTIL_FOREVER)
        return 0;
    double now = tf_now();
    for (size_t i = 0; i < s->n; i++) {
        PartState *ps = &s->parts[i];
        if (ps->done)
            continue;
        if (ps->end >= 0 && kafka_position_get(s->pos, ps->partition) >= ps->end) {
            ps->done = 1;
            continue;
        }
        if (s->opts.until == KAFKA_UNTIL_EOF && ps->eof && (now - ps->eof_since) * 1000 >= s->opts.eof_idle_ms)
            continue;
        return 0;
    }
    return 1;
}

int kafka_source_next(KafkaSource *s, KafkaRecord *rec, int timeout_ms, TfError *err)
{
    if (s->current) {
        rd_kafka_message_destroy(s->current);
        s->current = NULL;
    }
    if (s->opts.commit_interval_ms > 0 && s->n && tf_now() - s->last_commit > s->opts.commit_interval_ms / 1000.0)
        commit_position(s, 1, NULL);
    double deadline = tf_now() + (timeout_ms < 0 ? 1e9 : timeout_ms / 1000.0);
    for (;;) {
        pthread_mutex_lock(&s->lock);
        Item *it = s->head;
        if (it) {
            s->head = it->next;
            if (!s->head)
                s->tail = NULL;
            s->q_records--;
            s->q_bytes -= it->msg ? it->msg->len : 0;
            pthread_cond_signal(&s->space);
        }
        pthread_mutex_unlock(&s->lock);
        if (it) {
            PartState *ps = part_find(s, it->partition);
            int64_t next = kafka_position_get(s->pos, it->partition);
            if (it->kind == ITEM_ERROR) {
                tf_fail(err, "topic %s %s", s->topic, it->what);
                item_free(it);
                return -1;
            }
            if (!ps) { /* not ours: cannot happen with assign(), but never trust */
                item_free(it);
                continue;
            }
            if (it->kind == ITEM_EOF) {
                if (it->offset >= next && !ps->eof) {
                    ps->eof = 1;
                    ps->eof_since = tf_now();
                }
                item_free(it);
                continue;
            }
            rd_kafka_message_t *m = it->msg;
            it->msg = NULL;
            item_free(it);
            if (ps->done || (ps->end >= 0 && m->offset >= ps->end)) {
                ps->done = 1;
                rd_kafka_message_destroy(m);
                continue;
            }
            if (m->offset < next) { /* already handed out (a refetch) */
                rd_kafka_message_destroy(m);
                continue;
            }
            if (m->offset > next) {
                s->stats.gaps++;
                tf_log(TF_LOG_WARN, KAFKA_TAG,
                       "topic %s partition %" PRId32 ": offsets %" PRId64 "..%" PRId64 " were skipped by the broker "
                       "(compaction or transaction markers)",
                       s->topic, m->partition, next, m->offset - 1);
            }
            if (s->have_expect && check_identity(s, m, err)) {
                rd_kafka_message_destroy(m);
                return -1;
            }
            kafka_position_set(s->pos, m->partition, m->offset + 1, NULL);
            ps->eof = 0;
            s->current = m;
            s->stats.records++;
            s->stats.bytes += m->len;
            rec->payload = m->payload;
            rec->len = m->len;
            rec->key = m->key;
            rec->key_len = m->key_len;
            rec->partition = m->partition;
            rec->offset = m->offset;
            return KAFKA_RECORD;
        }
        if (source_at_end(s))
            return KAFKA_END;
        double now = tf_now();
        if (now >= deadline)
            return KAFKA_IDLE;
        int wait_ms = (int)((deadline - now) * 1000) + 1;
        if (wait_ms > 50)
            wait_ms = 50;
        struct timespec ts;
        abs_deadline(&ts, wait_ms);
        pthread_mutex_lock(&s->lock);
        if (!s->head)
            pthread_cond_timedwait(&s->nonempty, &s->lock, &ts);
        pthread_mutex_unlock(&s->lock);
    }
}

int kafka_source_record_header(const KafkaSource *s, const char *name, char *out, size_t cap)
{
    if (cap)
        out[0] = 0;
    return s->current && cap && header_value(s->current, name, out, cap) ? 1 : 0;
}

const KafkaPosition *kafka_source_position(const KafkaSource *s)
{
    return s->pos;
}

size_t kafka_source_partitions(const KafkaSource *s, const int32_t **partitions)
{
    if (partitions)
        *partitions = s->assigned;
    return s->n;
}

int kafka_source_commit(KafkaSource *s, TfError *err)
{
    return commit_position(s, 0, err);
}

void kafka_source_stats(const KafkaSource *s, KafkaSourceStats *out)
{
    *out = s->stats;
    pthread_mutex_lock((pthread_mutex_t *)&s->lock);
    out->pauses = s->pauses;
    pthread_mutex_unlock((pthread_mutex_t *)&s->lock);
}

void kafka_source_free(KafkaSource *s)
{
    if (!s)
        return;
    if (s->thread_started) {
        atomic_store(&s->quit, 1);
        pthread_mutex_lock(&s->lock);
        pthread_cond_broadcast(&s->space);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
    }
    if (s->current)
        rd_kafka_message_destroy(s->current);
    while (s->head) {
        Item *it = s->head;
        s->head = it->next;
        item_free(it);
    }
    if (s->rk) {
        if (s->opts.commit_interval_ms >= 0 && s->thread_started) {
            TfError e;
            if (commit_position(s, 0, &e))
                tf_log(TF_LOG_WARN, KAFKA_TAG, "%s", e.msg);
        }
        rd_kafka_consumer_close(s->rk);
        rd_kafka_destroy(s->rk);
    }
    kafka_position_free(s->pos);
    free(s->assigned);
    free(s->parts);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->nonempty);
    pthread_cond_destroy(&s->space);
    free(s);
}
