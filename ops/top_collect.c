/* top_collect.c: what `transfuse top` knows about a deployment. Each scrape
 * round fetches every target's /metrics (ops_scrape), parses it
 * (prom_parse), and folds the series named in the metrics contract
 * (docs/OPERATIONS.md, notes of the metric names) into rows: one per ingest
 * worker, encode worker, trainer rank and shards operation. Rates come from
 * the difference of counters between two rounds (a counter that went down
 * was reset: its rate is its new value over the interval, as Prometheus'
 * rate() does). Kafka rounds read watermarks and group offsets from the
 * cluster itself (shards.h), since the processes only know their own side.
 *
 * Everything an endpoint sends is untrusted: rows per target, reasons per
 * row and label lengths are capped, and strings reach the JSON only through
 * jansson (valid UTF-8, checked by the parser). */
#include "top_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shards.h"

#define TOP_MAX_TARGETS 1024
#define TOP_MAX_ROWS_PER_TARGET 256
#define TOP_MAX_REASONS 24
#define TOP_MAX_TOPICS 64
#define TOP_MAX_GROUPS 16
#define TOP_ID_MAX 64
#define TOP_ETA_WINDOW 32      /* rounds of progress kept for the ETA's rate */
#define TOP_ROW_FORGET_S 300.0 /* rows not seen for this long are dropped */

typedef enum { ROW_INGEST = 0, ROW_ENCODE, ROW_TRAINER, ROW_SHARDS, ROW_KINDS } RowKind;

/* Raw values per kind; which index means what depends on the kind. */
enum { I_OK, I_FAILED, I_SKIPPED, I_BYTES, I_IN_FLIGHT, I_PLANNED, I_QUEUE, I_FETCH_SUM, I_FETCH_COUNT, I_N };
enum { E_IMAGES, E_BATCH_SUM, E_BATCH_COUNT, E_N };
enum { T_STEP, T_PLANNED, T_LOSS_LM, T_LOSS_DIFF, T_GRAD_NORM, T_LR, T_TOKENS, T_SAMPLES, T_DATA_POS, T_N };
enum { S_RECORDS, S_BYTES, S_BAD, S_N };
#define ROW_VALUES 10

typedef struct Reason {
    char name[TOP_ID_MAX];
    double v, pv;
    int has_prev;
} Reason;

typedef struct Ring {
    double *v;
    int cap, len, head; /* head: next slot to write */
} Ring;

typedef struct Row {
    RowKind kind;
    char target[300];
    char id[TOP_ID_MAX];     /* worker, rank or op ("" when the process has one) */
    double v[ROW_VALUES], pv[ROW_VALUES];
    unsigned has, phas;      /* bit i: v[i] was present this round / the previous one */
    double t, pt;            /* monotonic time of this round and the previous one */
    int updated;             /* seen in the latest round of its target */
    double last_seen;
    Reason reasons[TOP_MAX_REASONS];
    int n_reasons;
    Ring history;            /* the row's main figure per round */
    double eta_t[TOP_ETA_WINDOW], eta_v[TOP_ETA_WINDOW];
    int eta_n, eta_head;
    double progress_changed; /* when the progress counter last moved */
    double progress_last;
} Row;

typedef struct Target {
    char name[300];      /* HOST:PORT as shown */
    char url[340];
    const char *source;  /* "targets", "discover" */
    char command[64];
    int discovered;
    OpsRegistration reg; /* when discovered */
    int present;         /* listed in the latest refresh */
    char state[16];      /* "ok", "error", "stale", "waiting" */
    char error[300];
    size_t series;
    double scrape_s;
    double last_ok;      /* monotonic time of the last good scrape, 0 never */
    int rows_capped;
} Target;

typedef struct Group {
    char name[250];
    int from_flag;
    int64_t *committed;  /* per partition (n of the topic), -1 none */
    size_t n;
    double lag;          /* -1 unknown */
    int has_lag;
    Ring history;
    double trend_t[TOP_ETA_WINDOW], trend_v[TOP_ETA_WINDOW];
    int trend_n, trend_head;
    char error[256];
} Group;

typedef struct Topic {
    char bootstrap[512];
    char topic[250];
    char source[16];     /* "broker", "flag", "consumer" */
    KafkaPartitionInfo *parts;
    size_t n;
    int is_mock;
    char error[256];
    Group groups[TOP_MAX_GROUPS];
    int n_groups;
    double queried;      /* monotonic time of the last answer */
} Topic;

struct TopCollector {
    TopConfig cfg;
    pthread_mutex_t lock;
    Target *targets;
    size_t n_targets;
    Row *rows;
    size_t n_rows, cap_rows;
    Topic topics[TOP_MAX_TOPICS];
    int n_topics;
    char discover_error[300];
    size_t discover_bad, discover_stale;
    unsigned long rounds, kafka_rounds;
    double listed_groups_at;
    char **listed_groups;
};

/* ---- small helpers ---- */

static int ring_init(Ring *r, int cap)
{
    r->cap = cap > 0 ? cap : 1;
    r->len = r->head = 0;
    r->v = calloc((size_t)r->cap, sizeof *r->v);
    return r->v ? 0 : -1;
}

static void ring_push(Ring *r, double v)
{
    r->v[r->head] = v;
    r->head = (r->head + 1) % r->cap;
    if (r->len < r->cap)
        r->len++;
}

/* The ring oldest first as a JSON array (null for NaN). */
static json_t *ring_json(const Ring *r)
{
    json_t *a = json_array();
    for (int i = 0; a && i < r->len; i++) {
        double v = r->v[(r->head - r->len + i + r->cap) % r->cap];
        json_array_append_new(a, isfinite(v) ? json_real(v) : json_null());
    }
    return a;
}

static json_t *num_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static void copy_id(char *out, const char *in)
{
    snprintf(out, TOP_ID_MAX, "%s", in ? in : "");
}

static char **strv_copy(char **v, size_t n)
{
    char **out = calloc(n + 1, sizeof *out);
    for (size_t i = 0; out && i < n; i++)
        if (!(out[i] = strdup(v[i]))) {
            for (size_t j = 0; j < i; j++)
                free(out[j]);
            free(out);
            return NULL;
        }
    return out;
}

static void strv_free(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* ---- targets ---- */

static void target_set(Target *t, const char *spec, const char *source)
{
    memset(t, 0, sizeof *t);
    t->source = source;
    if (!strncmp(spec, "http://", 7) || !strncmp(spec, "https://", 8)) {
        const char *hp = strstr(spec, "://") + 3;
        size_t n = strcspn(hp, "/");
        snprintf(t->name, sizeof t->name, "%.*s", (int)n, hp);
        snprintf(t->url, sizeof t->url, "%s%s", spec, hp[n] ? "" : "/metrics");
    } else {
        snprintf(t->name, sizeof t->name, "%s", spec);
        snprintf(t->url, sizeof t->url, "http://%s/metrics", spec);
    }
    snprintf(t->state, sizeof t->state, "waiting");
}

static Target *target_find(TopCollector *c, const char *name)
{
    for (size_t i = 0; i < c->n_targets; i++)
        if (!strcmp(c->targets[i].name, name))
            return &c->targets[i];
    return NULL;
}

/* Re-reads the discovery folder: new registrations become targets, gone
 * ones stop being listed. Called with the lock held. */
static void targets_refresh(TopCollector *c)
{
    if (!c->cfg.discover_dir)
        return;
    OpsRegistration *regs = NULL;
    size_t n = 0;
    TfError err = {{0}};
    for (size_t i = 0; i < c->n_targets; i++)
        if (c->targets[i].discovered)
            c->targets[i].present = 0;
    if (ops_registry_scan(c->cfg.discover_dir, &regs, &n, &err)) {
        snprintf(c->discover_error, sizeof c->discover_error, "%s", err.msg);
        return;
    }
    c->discover_error[0] = 0;
    c->discover_bad = c->discover_stale = 0;
    for (size_t i = 0; i < n; i++) {
        OpsRegistration *r = &regs[i];
        if (r->state == OPS_REG_BAD) {
            c->discover_bad++;
            continue;
        }
        Target *t = target_find(c, r->target);
        if (!t) {
            if (c->n_targets == TOP_MAX_TARGETS)
                continue;
            t = &c->targets[c->n_targets++];
            target_set(t, r->target, "discover");
        }
        t->discovered = 1;
        t->present = 1;
        t->reg = *r;
        snprintf(t->command, sizeof t->command, "%s", r->command);
        if (r->state == OPS_REG_STALE) {
            c->discover_stale++;
            snprintf(t->state, sizeof t->state, "stale");
            snprintf(t->error, sizeof t->error, "%s (registration %s)", r->why, r->file);
        }
    }
    /* Drop discovered targets whose file went away (a clean exit). */
    size_t w = 0;
    for (size_t i = 0; i < c->n_targets; i++)
        if (!c->targets[i].discovered || c->targets[i].present)
            c->targets[w++] = c->targets[i];
    c->n_targets = w;
    free(regs);
}

/* ---- rows ---- */

static Row *row_get(TopCollector *c, RowKind kind, const char *target, const char *id, Target *t)
{
    char idc[TOP_ID_MAX];
    copy_id(idc, id);
    size_t per_target = 0;
    for (size_t i = 0; i < c->n_rows; i++) {
        Row *r = &c->rows[i];
        if (strcmp(r->target, target))
            continue;
        if (r->kind == kind && !strcmp(r->id, idc))
            return r;
        per_target++;
    }
    if (per_target >= TOP_MAX_ROWS_PER_TARGET) {
        t->rows_capped = 1;
        return NULL;
    }
    if (c->n_rows == c->cap_rows) {
        size_t nc = c->cap_rows ? c->cap_rows * 2 : 32;
        Row *nr = realloc(c->rows, nc * sizeof *nr);
        if (!nr)
            return NULL;
        c->rows = nr;
        c->cap_rows = nc;
    }
    Row *r = &c->rows[c->n_rows];
    memset(r, 0, sizeof *r);
    if (ring_init(&r->history, c->cfg.history))
        return NULL;
    c->n_rows++;
    r->kind = kind;
    snprintf(r->target, sizeof r->target, "%s", target);
    snprintf(r->id, sizeof r->id, "%s", idc);
    r->progress_changed = tf_now();
    r->progress_last = NAN;
    return r;
}

static void row_set(Row *r, int i, double v, int add)
{
    if (!(r->has & (1u << i))) {
        r->v[i] = 0;
        r->has |= 1u << i;
    }
    r->v[i] = add ? r->v[i] + v : v;
}

static void row_reason(Row *r, const char *reason, double v)
{
    char name[TOP_ID_MAX];
    copy_id(name, reason && *reason ? reason : "unknown");
    for (int i = 0; i < r->n_reasons; i++)
        if (!strcmp(r->reasons[i].name, name)) {
            r->reasons[i].v += v;
            return;
        }
    if (r->n_reasons == TOP_MAX_REASONS) {
        /* hostile or very varied reasons: fold the rest into "other" */
        for (int i = 0; i < r->n_reasons; i++)
            if (!strcmp(r->reasons[i].name, "(other)")) {
                r->reasons[i].v += v;
                return;
            }
        snprintf(r->reasons[TOP_MAX_REASONS - 1].name, TOP_ID_MAX, "(other)");
        r->reasons[TOP_MAX_REASONS - 1].v += v;
        return;
    }
    Reason *x = &r->reasons[r->n_reasons++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    x->v = v;
}

/* Starts a round for a row: current values become previous ones. */
static void row_begin(Row *r, double now)
{
    if (r->updated)
        return;
    r->updated = 1;
    memcpy(r->pv, r->v, sizeof r->v);
    r->phas = r->has;
    r->has = 0;
    r->pt = r->t;
    r->t = now;
    for (int i = 0; i < r->n_reasons; i++) {
        r->reasons[i].pv = r->reasons[i].v;
        r->reasons[i].has_prev = 1;
        r->reasons[i].v = 0;
    }
    r->last_seen = now;
}

/* Rate of value i per second between the last two rounds; NaN when one
 * of them lacks it. */
static double row_rate(const Row *r, int i)
{
    unsigned bit = 1u << i;
    if (!(r->has & bit) || !(r->phas & bit) || !(r->t > r->pt) || r->pt <= 0)
        return NAN;
    double d = r->v[i] - r->pv[i];
    if (d < 0)
        d = r->v[i]; /* reset */
    return d / (r->t - r->pt);
}

static double row_val(const Row *r, int i)
{
    return (r->has & (1u << i)) ? r->v[i] : NAN;
}

/* What a row's progress counter is (rows done, images, step, records). */
static double row_progress(const Row *r)
{
    switch (r->kind) {
    case ROW_INGEST:
        return ((r->has >> I_OK) & 1 || (r->has >> I_FAILED) & 1)
                   ? r->v[I_OK] + r->v[I_FAILED] + r->v[I_SKIPPED]
                   : NAN;
    case ROW_ENCODE: return row_val(r, E_IMAGES);
    case ROW_TRAINER: return row_val(r, T_STEP);
    case ROW_SHARDS: return row_val(r, S_RECORDS);
    default: return NAN;
    }
}

/* Progress per second over the last TOP_ETA_WINDOW rounds. */
static double row_window_rate(const Row *r)
{
    if (r->eta_n < 2)
        return NAN;
    int last = (r->eta_head - 1 + TOP_ETA_WINDOW) % TOP_ETA_WINDOW;
    int first = (r->eta_head - r->eta_n + TOP_ETA_WINDOW) % TOP_ETA_WINDOW;
    double dt = r->eta_t[last] - r->eta_t[first], dv = r->eta_v[last] - r->eta_v[first];
    return dt > 0 && dv >= 0 ? dv / dt : NAN;
}

/* Ends a round for a row: the history and the ETA window get this
 * round's figures. */
static void row_end(Row *r)
{
    double main;
    switch (r->kind) {
    case ROW_INGEST: {
        double a = row_rate(r, I_OK), b = row_rate(r, I_FAILED), s = row_rate(r, I_SKIPPED);
        main = (isnan(a) ? 0 : a) + (isnan(b) ? 0 : b) + (isnan(s) ? 0 : s);
        if (isnan(a) && isnan(b) && isnan(s))
            main = NAN;
        break;
    }
    case ROW_ENCODE: main = row_rate(r, E_IMAGES); break;
    case ROW_TRAINER: main = row_val(r, T_LOSS_LM); break;
    case ROW_SHARDS: main = row_rate(r, S_RECORDS); break;
    default: main = NAN;
    }
    ring_push(&r->history, main);
    double p = row_progress(r);
    if (isfinite(p)) {
        if (p < r->progress_last) /* a restart: the window starts again */
            r->eta_n = 0;
        if (p != r->progress_last)
            r->progress_changed = r->t;
        r->progress_last = p;
        r->eta_t[r->eta_head] = r->t;
        r->eta_v[r->eta_head] = p;
        r->eta_head = (r->eta_head + 1) % TOP_ETA_WINDOW;
        if (r->eta_n < TOP_ETA_WINDOW)
            r->eta_n++;
    }
}

static int name_is(const char *name, const char *want)
{
    return !strcmp(name, want);
}

static void topic_note(TopCollector *c, const char *bootstrap, const char *topic, const char *source,
                       const char *group);

/* Folds one parsed document into the rows of target t. Lock held. */
static void fold_doc(TopCollector *c, Target *t, const PromDoc *d, double now)
{
    size_t n = prom_doc_count(d);
    const char *bootstrap = NULL;
    for (size_t i = 0; i < n; i++) {
        const PromSample *s = prom_doc_at(d, i);
        if (name_is(s->name, "transfuse_broker_info"))
            bootstrap = prom_sample_label(s, "bootstrap");
    }
    for (size_t i = 0; i < n; i++) {
        const PromSample *s = prom_doc_at(d, i);
        const char *nm = s->name;
        if (strncmp(nm, "transfuse_", 10)) {
            continue;
        }
        nm += 10;
        Row *r = NULL;
        double v = s->value;
        if (!strncmp(nm, "ingest_", 7) || name_is(nm, "fetch_seconds_sum") || name_is(nm, "fetch_seconds_count")) {
            if (!strncmp(nm, "ingest_", 7) && !name_is(nm, "ingest_rows_total") && !name_is(nm, "ingest_failures_total") &&
                !name_is(nm, "ingest_bytes_total") && !name_is(nm, "ingest_in_flight") &&
                !name_is(nm, "ingest_queue_depth") && !name_is(nm, "ingest_rows_planned"))
                continue;
            r = row_get(c, ROW_INGEST, t->name, prom_sample_label(s, "worker"), t);
            if (!r)
                continue;
            row_begin(r, now);
            if (name_is(nm, "ingest_rows_total")) {
                const char *o = prom_sample_label(s, "outcome");
                int idx = o && !strcmp(o, "ok") ? I_OK : o && !strcmp(o, "skipped") ? I_SKIPPED : I_FAILED;
                row_set(r, I_OK, 0, 1);
                row_set(r, I_FAILED, 0, 1);
                row_set(r, I_SKIPPED, 0, 1);
                row_set(r, idx, v, 1);
            } else if (name_is(nm, "ingest_failures_total")) {
                row_reason(r, prom_sample_label(s, "reason"), v);
            } else if (name_is(nm, "ingest_bytes_total")) {
                row_set(r, I_BYTES, v, 1);
            } else if (name_is(nm, "ingest_in_flight")) {
                row_set(r, I_IN_FLIGHT, v, 1);
            } else if (name_is(nm, "ingest_queue_depth")) {
                row_set(r, I_QUEUE, v, 1);
            } else if (name_is(nm, "ingest_rows_planned")) {
                row_set(r, I_PLANNED, v, 1);
            } else if (name_is(nm, "fetch_seconds_sum")) {
                row_set(r, I_FETCH_SUM, v, 1);
            } else {
                row_set(r, I_FETCH_COUNT, v, 1);
            }
        } else if (name_is(nm, "encode_images_total") || name_is(nm, "encode_batch_seconds_sum") ||
                   name_is(nm, "encode_batch_seconds_count")) {
            r = row_get(c, ROW_ENCODE, t->name, prom_sample_label(s, "worker"), t);
            if (!r)
                continue;
            row_begin(r, now);
            row_set(r, nm[7] == 'i' ? E_IMAGES : name_is(nm, "encode_batch_seconds_sum") ? E_BATCH_SUM : E_BATCH_COUNT,
                    v, 1);
        } else if (!strncmp(nm, "train_", 6)) {
            static const struct {
                const char *name;
                int idx, add;
            } tm[] = {{"train_step", T_STEP, 0},          {"train_steps_planned", T_PLANNED, 0},
                      {"train_loss_lm", T_LOSS_LM, 0},    {"train_loss_diffusion", T_LOSS_DIFF, 0},
                      {"train_grad_norm", T_GRAD_NORM, 0}, {"train_lr", T_LR, 0},
                      {"train_tokens_total", T_TOKENS, 1}, {"train_samples_total", T_SAMPLES, 1},
                      {"train_data_position", T_DATA_POS, 0}};
            for (size_t k = 0; k < sizeof tm / sizeof tm[0]; k++) {
                if (!name_is(nm, tm[k].name))
                    continue;
                const char *rank = prom_sample_label(s, "rank");
                r = row_get(c, ROW_TRAINER, t->name, rank ? rank : "0", t);
                if (!r)
                    break;
                row_begin(r, now);
                row_set(r, tm[k].idx, v, tm[k].add);
                break;
            }
        } else if (name_is(nm, "shards_records_total") || name_is(nm, "shards_bytes_total") ||
                   name_is(nm, "shards_bad_records_total")) {
            r = row_get(c, ROW_SHARDS, t->name, prom_sample_label(s, "op"), t);
            if (!r)
                continue;
            row_begin(r, now);
            row_set(r, nm[7] == 'r' ? S_RECORDS : nm[7] == 'b' && nm[8] == 'y' ? S_BYTES : S_BAD, v, 1);
        } else if (name_is(nm, "broker_high_watermark") && bootstrap) {
            const char *topic = prom_sample_label(s, "topic");
            if (topic)
                topic_note(c, bootstrap, topic, "broker", NULL);
        } else if (name_is(nm, "kafka_consumer_info")) {
            const char *b = prom_sample_label(s, "bootstrap"), *topic = prom_sample_label(s, "topic"),
                       *g = prom_sample_label(s, "group");
            if (b && topic)
                topic_note(c, b, topic, "consumer", g);
        } else if (name_is(nm, "build_info") && !t->command[0]) {
            const char *cmd = prom_sample_label(s, "command");
            if (cmd)
                snprintf(t->command, sizeof t->command, "%s", cmd);
        }
    }
}

/* ---- kafka topics ---- */

static Group *topic_group(Topic *tp, const char *name, int cap_history)
{
    for (int i = 0; i < tp->n_groups; i++)
        if (!strcmp(tp->groups[i].name, name))
            return &tp->groups[i];
    if (tp->n_groups == TOP_MAX_GROUPS)
        return NULL;
    Group *g = &tp->groups[tp->n_groups];
    memset(g, 0, sizeof *g);
    if (ring_init(&g->history, cap_history))
        return NULL;
    snprintf(g->name, sizeof g->name, "%s", name);
    tp->n_groups++;
    return g;
}

static void topic_note(TopCollector *c, const char *bootstrap, const char *topic, const char *source,
                       const char *group)
{
    if (strlen(bootstrap) >= sizeof c->topics[0].bootstrap || strlen(topic) >= sizeof c->topics[0].topic)
        return;
    Topic *tp = NULL;
    for (int i = 0; i < c->n_topics; i++)
        if (!strcmp(c->topics[i].bootstrap, bootstrap) && !strcmp(c->topics[i].topic, topic))
            tp = &c->topics[i];
    if (!tp) {
        if (c->n_topics == TOP_MAX_TOPICS)
            return;
        tp = &c->topics[c->n_topics++];
        memset(tp, 0, sizeof *tp);
        snprintf(tp->bootstrap, sizeof tp->bootstrap, "%s", bootstrap);
        snprintf(tp->topic, sizeof tp->topic, "%s", topic);
        snprintf(tp->source, sizeof tp->source, "%s", source);
        for (size_t i = 0; i < c->cfg.n_groups; i++) {
            Group *g = topic_group(tp, c->cfg.groups[i], c->cfg.history);
            if (g)
                g->from_flag = 1;
        }
    }
    if (group && *group && strlen(group) < sizeof tp->groups[0].name)
        topic_group(tp, group, c->cfg.history);
}

/* ---- the collector ---- */

TopCollector *top_collector_new(const TopConfig *cfg, TfError *err)
{
    TopCollector *c = calloc(1, sizeof *c);
    if (!c)
        return tf_fail(err, "out of memory"), NULL;
    pthread_mutex_init(&c->lock, NULL);
    c->cfg = *cfg;
    if (c->cfg.history < 2)
        c->cfg.history = 600;
    if (c->cfg.timeout_ms <= 0)
        c->cfg.timeout_ms = 2000;
    if (!c->cfg.max_bytes)
        c->cfg.max_bytes = PROM_DEFAULT_MAX_BYTES;
    c->cfg.targets = strv_copy(cfg->targets, cfg->n_targets);
    c->cfg.kafka = strv_copy(cfg->kafka, cfg->n_kafka);
    c->cfg.groups = strv_copy(cfg->groups, cfg->n_groups);
    c->cfg.discover_dir = cfg->discover_dir ? strdup(cfg->discover_dir) : NULL;
    c->targets = calloc(TOP_MAX_TARGETS, sizeof *c->targets);
    if (!c->cfg.targets || !c->cfg.kafka || !c->cfg.groups || (cfg->discover_dir && !c->cfg.discover_dir) ||
        !c->targets) {
        top_collector_free(c);
        return tf_fail(err, "out of memory"), NULL;
    }
    if (cfg->n_targets > TOP_MAX_TARGETS) {
        top_collector_free(c);
        return tf_fail(err, "at most %d targets", TOP_MAX_TARGETS), NULL;
    }
    for (size_t i = 0; i < cfg->n_targets; i++) {
        Target t;
        target_set(&t, cfg->targets[i], "targets");
        if (!target_find(c, t.name))
            c->targets[c->n_targets++] = t;
    }
    for (size_t i = 0; i < cfg->n_kafka; i++) {
        char bootstrap[512], topic[250];
        if (kafka_url_parse(cfg->kafka[i], bootstrap, sizeof bootstrap, topic, sizeof topic, err)) {
            top_collector_free(c);
            return NULL;
        }
        topic_note(c, bootstrap, topic, "flag", NULL);
    }
    return c;
}

void top_collector_free(TopCollector *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_rows; i++)
        free(c->rows[i].history.v);
    for (int i = 0; i < c->n_topics; i++) {
        free(c->topics[i].parts);
        for (int g = 0; g < c->topics[i].n_groups; g++) {
            free(c->topics[i].groups[g].committed);
            free(c->topics[i].groups[g].history.v);
        }
    }
    kafka_strings_free(c->listed_groups);
    strv_free(c->cfg.targets, c->cfg.n_targets);
    strv_free(c->cfg.kafka, c->cfg.n_kafka);
    strv_free(c->cfg.groups, c->cfg.n_groups);
    free((char *)c->cfg.discover_dir);
    free(c->rows);
    free(c->targets);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void top_collector_scrape(TopCollector *c)
{
    pthread_mutex_lock(&c->lock);
    targets_refresh(c);
    size_t kept = 0;
    for (size_t i = 0; i < c->n_rows; i++) {
        if (target_find(c, c->rows[i].target))
            c->rows[kept++] = c->rows[i];
        else
            free(c->rows[i].history.v);
    }
    c->n_rows = kept;
    size_t n = c->n_targets;
    OpsScrape *items = calloc(n ? n : 1, sizeof *items);
    char (*urls)[340] = calloc(n ? n : 1, sizeof *urls);
    size_t *which = calloc(n ? n : 1, sizeof *which);
    size_t m = 0;
    for (size_t i = 0; items && urls && which && i < n; i++) {
        Target *t = &c->targets[i];
        if (t->discovered && t->reg.state == OPS_REG_STALE)
            continue;
        snprintf(urls[m], sizeof urls[m], "%s", t->url);
        items[m].url = urls[m];
        which[m++] = i;
    }
    int timeout_ms = c->cfg.timeout_ms;
    size_t max_bytes = c->cfg.max_bytes;
    pthread_mutex_unlock(&c->lock);

    TfError err = {{0}};
    int rc = items && urls && which ? ops_scrape(items, m, timeout_ms, max_bytes, &err) : tf_fail(&err, "out of memory");
    /* Parse outside the lock too: a big document takes a while. */
    PromDoc **docs = calloc(m ? m : 1, sizeof *docs);
    TfError *perr = calloc(m ? m : 1, sizeof *perr);
    for (size_t k = 0; !rc && docs && perr && k < m; k++)
        if (!items[k].error[0])
            docs[k] = prom_parse(items[k].body, items[k].len, NULL, &perr[k]);
    double now = tf_now();

    pthread_mutex_lock(&c->lock);
    c->rounds++;
    for (size_t i = 0; i < c->n_rows; i++)
        c->rows[i].updated = 0;
    for (size_t k = 0; k < m && k < c->n_targets; k++) {
        Target *t = &c->targets[which[k]];
        if (strcmp(t->url, urls[k]))
            continue; /* the list changed meanwhile */
        t->scrape_s = items[k].seconds;
        t->series = 0;
        if (rc) {
            snprintf(t->state, sizeof t->state, "error");
            snprintf(t->error, sizeof t->error, "%s", err.msg);
        } else if (items[k].error[0] || !docs || !docs[k]) {
            int remote_old = t->discovered && t->reg.state == OPS_REG_REMOTE && t->reg.age_s > c->cfg.stale_after_s &&
                             (!t->last_ok || now - t->last_ok > c->cfg.stale_after_s);
            snprintf(t->state, sizeof t->state, "%s", remote_old ? "stale" : "error");
            if (items[k].error[0])
                snprintf(t->error, sizeof t->error, "%s", items[k].error);
            else
                snprintf(t->error, sizeof t->error, "bad metrics: %s", perr ? perr[k].msg : "out of memory");
        } else {
            snprintf(t->state, sizeof t->state, "ok");
            t->error[0] = 0;
            t->series = prom_doc_count(docs[k]);
            t->last_ok = now;
            t->rows_capped = 0;
            fold_doc(c, t, docs[k], now);
            if (t->rows_capped)
                snprintf(t->error, sizeof t->error, "more than %d rows: the rest are not shown",
                         TOP_MAX_ROWS_PER_TARGET);
        }
    }
    size_t w = 0;
    for (size_t i = 0; i < c->n_rows; i++) {
        Row *r = &c->rows[i];
        if (r->updated)
            row_end(r);
        if (!r->updated && now - r->last_seen > TOP_ROW_FORGET_S) {
            free(r->history.v);
            continue;
        }
        c->rows[w++] = *r;
    }
    c->n_rows = w;
    pthread_mutex_unlock(&c->lock);
    for (size_t k = 0; docs && k < m; k++)
        prom_doc_free(docs[k]);
    free(docs);
    free(perr);
    if (items)
        ops_scrape_clear(items, m);
    free(items);
    free(urls);
    free(which);
}

/* One topic's answer, gathered without the lock. */
typedef struct KafkaAnswer {
    KafkaTopicInfo info;
    int ok;
    char error[256];
    char groups[TOP_MAX_GROUPS][250];
    KafkaPosition *committed[TOP_MAX_GROUPS];
    char group_error[TOP_MAX_GROUPS][256];
    int n_groups;
} KafkaAnswer;

void top_collector_kafka(TopCollector *c)
{
    pthread_mutex_lock(&c->lock);
    int n = c->n_topics;
    char (*boot)[512] = calloc(n ? (size_t)n : 1, sizeof *boot);
    char (*name)[250] = calloc(n ? (size_t)n : 1, sizeof *name);
    KafkaAnswer *ans = calloc(n ? (size_t)n : 1, sizeof *ans);
    for (int i = 0; boot && name && ans && i < n; i++) {
        snprintf(boot[i], sizeof boot[i], "%s", c->topics[i].bootstrap);
        snprintf(name[i], sizeof name[i], "%s", c->topics[i].topic);
        for (int g = 0; g < c->topics[i].n_groups; g++)
            snprintf(ans[i].groups[ans[i].n_groups++], sizeof ans[i].groups[0], "%s", c->topics[i].groups[g].name);
    }
    int list_groups = c->cfg.n_groups == 0 && tf_now() - c->listed_groups_at > 30;
    pthread_mutex_unlock(&c->lock);
    if (!boot || !name || !ans) {
        free(boot);
        free(name);
        free(ans);
        return;
    }
    /* A real cluster can list its groups; the mock cannot (it says so). */
    char **listed = NULL;
    for (int i = 0; i < n; i++) {
        TfError err = {{0}};
        KafkaAnswer *a = &ans[i];
        if (kafka_topic_describe(boot[i], name[i], NULL, &a->info, &err)) {
            snprintf(a->error, sizeof a->error, "%s", err.msg);
            continue;
        }
        a->ok = 1;
        if (list_groups && !a->info.is_mock && !listed) {
            listed = kafka_group_list(boot[i], NULL, &err);
        }
        for (int g = 0; listed && listed[g] && a->n_groups < TOP_MAX_GROUPS; g++) {
            int dup = 0;
            for (int k = 0; k < a->n_groups; k++)
                dup |= !strcmp(a->groups[k], listed[g]);
            if (!dup && strlen(listed[g]) < sizeof a->groups[0])
                snprintf(a->groups[a->n_groups++], sizeof a->groups[0], "%s", listed[g]);
        }
        for (int g = 0; g < a->n_groups; g++) {
            a->committed[g] = kafka_group_committed(boot[i], name[i], a->groups[g], NULL, &err);
            if (!a->committed[g])
                snprintf(a->group_error[g], sizeof a->group_error[g], "%s", err.msg);
        }
    }
    double now = tf_now();
    pthread_mutex_lock(&c->lock);
    c->kafka_rounds++;
    if (list_groups)
        c->listed_groups_at = now;
    for (int i = 0; i < n && i < c->n_topics; i++) {
        Topic *tp = &c->topics[i];
        KafkaAnswer *a = &ans[i];
        if (strcmp(tp->bootstrap, boot[i]) || strcmp(tp->topic, name[i]))
            continue;
        if (!a->ok) {
            snprintf(tp->error, sizeof tp->error, "%s", a->error);
            continue;
        }
        tp->error[0] = 0;
        free(tp->parts);
        tp->parts = a->info.parts;
        tp->n = a->info.n;
        tp->is_mock = a->info.is_mock;
        a->info.parts = NULL;
        tp->queried = now;
        for (int g = 0; g < a->n_groups; g++) {
            int listed_only = 1;
            for (int k = 0; k < tp->n_groups; k++)
                if (!strcmp(tp->groups[k].name, a->groups[g]))
                    listed_only = 0;
            /* A listed group that never committed on this topic is not its consumer. */
            int committed_any = 0;
            for (size_t p = 0; a->committed[g] && p < a->committed[g]->n; p++)
                committed_any |= a->committed[g]->offset[p] >= 0;
            if (listed_only && !committed_any)
                continue;
            Group *gr = topic_group(tp, a->groups[g], c->cfg.history);
            if (!gr)
                continue;
            snprintf(gr->error, sizeof gr->error, "%s", a->group_error[g]);
            free(gr->committed);
            gr->committed = calloc(tp->n ? tp->n : 1, sizeof *gr->committed);
            gr->n = gr->committed ? tp->n : 0;
            gr->has_lag = 0;
            if (!a->committed[g] || !gr->committed)
                continue;
            double lag = 0;
            for (size_t p = 0; p < tp->n; p++) {
                int64_t off = kafka_position_get(a->committed[g], tp->parts[p].partition);
                gr->committed[p] = off;
                int64_t from = off >= 0 ? off : tp->parts[p].low;
                if (tp->parts[p].high >= 0 && from >= 0 && tp->parts[p].high > from)
                    lag += (double)(tp->parts[p].high - from);
            }
            gr->lag = lag;
            gr->has_lag = 1;
            /* Exported too, so that Prometheus can alert on lag (a watcher
             * with --metrics-port is the deployment's lag exporter). */
            tf_gauge_set(tf_gauge("transfuse_kafka_group_lag",
                                  "Records of the topic not yet committed by the group (high watermark minus "
                                  "committed offset, summed over partitions), as transfuse top reads it",
                                  "bootstrap", tp->bootstrap, "topic", tp->topic, "group", gr->name, NULL),
                         lag);
            ring_push(&gr->history, lag);
            gr->trend_t[gr->trend_head] = now;
            gr->trend_v[gr->trend_head] = lag;
            gr->trend_head = (gr->trend_head + 1) % TOP_ETA_WINDOW;
            if (gr->trend_n < TOP_ETA_WINDOW)
                gr->trend_n++;
        }
    }
    pthread_mutex_unlock(&c->lock);
    for (int i = 0; i < n; i++) {
        kafka_topic_info_deinit(&ans[i].info);
        for (int g = 0; g < ans[i].n_groups; g++)
            kafka_position_free(ans[i].committed[g]);
    }
    kafka_strings_free(listed);
    free(boot);
    free(name);
    free(ans);
}

int top_collector_write_sd(TopCollector *c, const char *path, TfError *err)
{
    if (!c->cfg.discover_dir)
        return tf_fail(err, "--prometheus-sd needs --discover DIR");
    OpsRegistration *regs = NULL;
    size_t n = 0;
    if (ops_registry_scan(c->cfg.discover_dir, &regs, &n, err))
        return -1;
    int rc = ops_registry_write_sd(path, regs, n, err);
    free(regs);
    return rc;
}

/* ---- snapshot ---- */

static json_t *reasons_json(const Row *r, int rates)
{
    json_t *o = json_object();
    for (int i = 0; o && i < r->n_reasons; i++) {
        const Reason *x = &r->reasons[i];
        double v = x->v;
        if (rates) {
            if (!x->has_prev || !(r->t > r->pt) || r->pt <= 0)
                continue;
            double d = x->v - x->pv;
            v = (d < 0 ? x->v : d) / (r->t - r->pt);
        }
        json_object_set_new(o, x->name, json_real(v));
    }
    return o;
}

static double eta_of(double done, double planned, double rate)
{
    if (!isfinite(done) || !isfinite(planned) || planned <= 0 || !isfinite(rate))
        return NAN;
    if (done >= planned)
        return 0;
    return rate > 0 ? (planned - done) / rate : NAN;
}

static json_t *row_json(const Row *r, double now)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "target", json_string(r->target));
    json_object_set_new(o, "fresh", json_boolean(r->updated));
    double idle = isfinite(r->progress_last) ? now - r->progress_changed : NAN;
    json_object_set_new(o, "idle_s", num_or_null(idle));
    json_object_set_new(o, "history", ring_json(&r->history));
    double wrate = row_window_rate(r);
    switch (r->kind) {
    case ROW_INGEST: {
        json_object_set_new(o, "worker", json_string(r->id));
        double ok = row_rate(r, I_OK), failed = row_rate(r, I_FAILED), skipped = row_rate(r, I_SKIPPED);
        double rows = isnan(ok) ? NAN : ok + failed + skipped;
        json_object_set_new(o, "rows_per_s", num_or_null(rows));
        json_object_set_new(o, "ok_per_s", num_or_null(ok));
        json_object_set_new(o, "failed_per_s", num_or_null(failed));
        double sr = ok + failed > 0 ? ok / (ok + failed)
                    : r->v[I_OK] + r->v[I_FAILED] > 0 ? r->v[I_OK] / (r->v[I_OK] + r->v[I_FAILED])
                                                      : NAN;
        json_object_set_new(o, "success_rate", num_or_null(sr));
        json_object_set_new(o, "rows_ok", num_or_null(row_val(r, I_OK)));
        json_object_set_new(o, "rows_failed", num_or_null(row_val(r, I_FAILED)));
        json_object_set_new(o, "rows_skipped", num_or_null(row_val(r, I_SKIPPED)));
        double done = row_progress(r);
        json_object_set_new(o, "rows_done", num_or_null(done));
        double planned = row_val(r, I_PLANNED);
        json_object_set_new(o, "rows_planned", planned > 0 ? json_real(planned) : json_null());
        json_object_set_new(o, "bytes_per_s", num_or_null(row_rate(r, I_BYTES)));
        json_object_set_new(o, "bytes_total", num_or_null(row_val(r, I_BYTES)));
        json_object_set_new(o, "in_flight", num_or_null(row_val(r, I_IN_FLIGHT)));
        json_object_set_new(o, "queue_depth", num_or_null(row_val(r, I_QUEUE)));
        double fc = row_rate(r, I_FETCH_COUNT), fs = row_rate(r, I_FETCH_SUM);
        json_object_set_new(o, "fetch_seconds_mean", fc > 0 ? num_or_null(fs / fc) : json_null());
        json_object_set_new(o, "failures", reasons_json(r, 0));
        json_object_set_new(o, "failures_per_s", reasons_json(r, 1));
        json_object_set_new(o, "eta_s", num_or_null(eta_of(done, planned, wrate)));
        break;
    }
    case ROW_ENCODE: {
        json_object_set_new(o, "worker", json_string(r->id));
        json_object_set_new(o, "images_per_s", num_or_null(row_rate(r, E_IMAGES)));
        json_object_set_new(o, "images_total", num_or_null(row_val(r, E_IMAGES)));
        double bc = row_rate(r, E_BATCH_COUNT), bs = row_rate(r, E_BATCH_SUM);
        json_object_set_new(o, "batch_seconds_mean", bc > 0 ? num_or_null(bs / bc) : json_null());
        break;
    }
    case ROW_TRAINER: {
        json_object_set_new(o, "rank", json_string(r->id));
        json_object_set_new(o, "step", num_or_null(row_val(r, T_STEP)));
        double planned = row_val(r, T_PLANNED);
        json_object_set_new(o, "steps_planned", planned > 0 ? json_real(planned) : json_null());
        json_object_set_new(o, "steps_per_s", num_or_null(wrate));
        json_object_set_new(o, "loss_lm", num_or_null(row_val(r, T_LOSS_LM)));
        json_object_set_new(o, "loss_diffusion", num_or_null(row_val(r, T_LOSS_DIFF)));
        /* a NaN loss is news, not a missing value: say so */
        json_object_set_new(o, "loss_nan", json_boolean((r->has & (1u << T_LOSS_LM) && isnan(r->v[T_LOSS_LM])) ||
                                                        (r->has & (1u << T_LOSS_DIFF) && isnan(r->v[T_LOSS_DIFF]))));
        json_object_set_new(o, "grad_norm", num_or_null(row_val(r, T_GRAD_NORM)));
        json_object_set_new(o, "lr", num_or_null(row_val(r, T_LR)));
        json_object_set_new(o, "tokens_per_s", num_or_null(row_rate(r, T_TOKENS)));
        json_object_set_new(o, "samples_per_s", num_or_null(row_rate(r, T_SAMPLES)));
        json_object_set_new(o, "tokens_total", num_or_null(row_val(r, T_TOKENS)));
        json_object_set_new(o, "data_position", num_or_null(row_val(r, T_DATA_POS)));
        json_object_set_new(o, "eta_s", num_or_null(eta_of(row_val(r, T_STEP), planned, wrate)));
        break;
    }
    case ROW_SHARDS: {
        json_object_set_new(o, "op", json_string(r->id));
        json_object_set_new(o, "records_per_s", num_or_null(row_rate(r, S_RECORDS)));
        json_object_set_new(o, "records_total", num_or_null(row_val(r, S_RECORDS)));
        json_object_set_new(o, "bytes_per_s", num_or_null(row_rate(r, S_BYTES)));
        json_object_set_new(o, "bad_records_total", num_or_null(row_val(r, S_BAD)));
        break;
    }
    default: break;
    }
    return o;
}

static double json_num(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static void add_total(json_t *totals, const char *k, double v)
{
    if (!isfinite(v))
        return;
    double cur = json_num(totals, k);
    json_object_set_new(totals, k, json_real(isfinite(cur) ? cur + v : v));
}

json_t *top_collector_snapshot(TopCollector *c)
{
    static const char *kind_names[ROW_KINDS] = {"ingest", "encode", "trainer", "shards"};
    json_t *snap = json_object();
    if (!snap)
        return NULL;
    pthread_mutex_lock(&c->lock);
    double now = tf_now();
    json_object_set_new(snap, "time", json_integer((json_int_t)time(NULL)));
    json_object_set_new(snap, "rounds", json_integer((json_int_t)c->rounds));
    json_t *targets = json_array();
    int errors = 0;
    for (size_t i = 0; i < c->n_targets; i++) {
        const Target *t = &c->targets[i];
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:f}", "target", t->name, "source", t->source, "command",
                              t->command[0] ? t->command : "", "state", t->state, "series", (json_int_t)t->series,
                              "scrape_s", t->scrape_s);
        if (!o)
            continue;
        if (t->error[0])
            json_object_set_new(o, "error", json_string(t->error));
        if (t->discovered) {
            json_object_set_new(o, "pid", json_integer(t->reg.pid));
            json_object_set_new(o, "host", json_string(t->reg.host));
            json_object_set_new(o, "registration", json_string(t->reg.file));
            json_object_set_new(o, "age_s", json_real(t->reg.age_s));
        }
        errors += strcmp(t->state, "ok") && strcmp(t->state, "waiting");
        json_array_append_new(targets, o);
    }
    json_object_set_new(snap, "targets", targets);
    if (c->cfg.discover_dir) {
        json_t *d = json_pack("{s:s, s:I, s:I}", "dir", c->cfg.discover_dir, "bad_files", (json_int_t)c->discover_bad,
                              "stale", (json_int_t)c->discover_stale);
        if (d && c->discover_error[0])
            json_object_set_new(d, "error", json_string(c->discover_error));
        json_object_set_new(snap, "discover", d);
    }
    json_t *sections[ROW_KINDS];
    for (int k = 0; k < ROW_KINDS; k++)
        sections[k] = json_array();
    json_t *totals = json_object();
    double max_step = NAN;
    for (size_t i = 0; i < c->n_rows; i++) {
        const Row *r = &c->rows[i];
        if (r->kind == ROW_TRAINER && (r->has & (1u << T_STEP)) && !(r->v[T_STEP] <= max_step))
            max_step = r->v[T_STEP];
    }
    for (size_t i = 0; i < c->n_rows; i++) {
        const Row *r = &c->rows[i];
        json_t *o = row_json(r, now);
        if (!o)
            continue;
        if (r->kind == ROW_TRAINER && isfinite(max_step) && (r->has & (1u << T_STEP)))
            json_object_set_new(o, "behind_steps", json_real(max_step - r->v[T_STEP]));
        switch (r->kind) {
        case ROW_INGEST:
            add_total(totals, "ingest_rows_per_s", json_num(o, "rows_per_s"));
            add_total(totals, "ingest_bytes_per_s", json_num(o, "bytes_per_s"));
            add_total(totals, "ingest_rows_done", json_num(o, "rows_done"));
            add_total(totals, "ingest_rows_planned", json_num(o, "rows_planned"));
            break;
        case ROW_ENCODE: add_total(totals, "encode_images_per_s", json_num(o, "images_per_s")); break;
        case ROW_TRAINER:
            add_total(totals, "train_tokens_per_s", json_num(o, "tokens_per_s"));
            add_total(totals, "train_samples_per_s", json_num(o, "samples_per_s"));
            break;
        case ROW_SHARDS: add_total(totals, "shards_records_per_s", json_num(o, "records_per_s")); break;
        default: break;
        }
        json_array_append_new(sections[r->kind], o);
    }
    for (int k = 0; k < ROW_KINDS; k++)
        json_object_set_new(snap, kind_names[k], sections[k]);

    json_t *topics = json_array();
    double total_lag = NAN;
    for (int i = 0; i < c->n_topics; i++) {
        const Topic *tp = &c->topics[i];
        json_t *o = json_pack("{s:s, s:s, s:s, s:b}", "bootstrap", tp->bootstrap, "topic", tp->topic, "source",
                              tp->source, "mock", tp->is_mock);
        if (!o)
            continue;
        if (tp->error[0])
            json_object_set_new(o, "error", json_string(tp->error));
        json_t *parts = json_array();
        double high = 0;
        for (size_t p = 0; p < tp->n; p++) {
            json_array_append_new(parts, json_pack("{s:i, s:I, s:I}", "partition", tp->parts[p].partition, "low",
                                                   (json_int_t)tp->parts[p].low, "high", (json_int_t)tp->parts[p].high));
            high += tp->parts[p].high > 0 ? (double)tp->parts[p].high : 0;
        }
        json_object_set_new(o, "partitions", parts);
        json_object_set_new(o, "high_total", json_real(high));
        json_t *groups = json_array();
        for (int g = 0; g < tp->n_groups; g++) {
            const Group *gr = &tp->groups[g];
            json_t *go = json_pack("{s:s}", "group", gr->name);
            if (!go)
                continue;
            if (gr->error[0])
                json_object_set_new(go, "error", json_string(gr->error));
            json_object_set_new(go, "lag", gr->has_lag ? json_real(gr->lag) : json_null());
            double trend = NAN;
            if (gr->trend_n >= 2) {
                int last = (gr->trend_head - 1 + TOP_ETA_WINDOW) % TOP_ETA_WINDOW;
                int first = (gr->trend_head - gr->trend_n + TOP_ETA_WINDOW) % TOP_ETA_WINDOW;
                double dt = gr->trend_t[last] - gr->trend_t[first];
                if (dt > 0)
                    trend = (gr->trend_v[last] - gr->trend_v[first]) / dt;
            }
            json_object_set_new(go, "lag_trend_per_s", num_or_null(trend));
            json_object_set_new(go, "history", ring_json(&gr->history));
            json_t *gp = json_array();
            double committed_total = 0;
            for (size_t p = 0; p < gr->n && p < tp->n; p++) {
                int64_t off = gr->committed[p];
                int64_t from = off >= 0 ? off : tp->parts[p].low;
                int64_t lag = tp->parts[p].high >= 0 && from >= 0 && tp->parts[p].high > from ? tp->parts[p].high - from : 0;
                json_array_append_new(gp, json_pack("{s:i, s:I, s:I}", "partition", tp->parts[p].partition,
                                                    "committed", (json_int_t)off, "lag", (json_int_t)lag));
                committed_total += off > 0 ? (double)off : 0;
            }
            json_object_set_new(go, "committed_total", json_real(committed_total));
            json_object_set_new(go, "partitions", gp);
            if (gr->has_lag)
                total_lag = isfinite(total_lag) ? total_lag + gr->lag : gr->lag;
            json_array_append_new(groups, go);
        }
        json_object_set_new(o, "groups", groups);
        json_array_append_new(topics, o);
    }
    json_object_set_new(snap, "topics", topics);
    if (isfinite(total_lag))
        json_object_set_new(totals, "kafka_lag", json_real(total_lag));
    json_object_set_new(totals, "targets", json_integer((json_int_t)c->n_targets));
    json_object_set_new(totals, "targets_failing", json_integer(errors));
    json_t *ingest = json_object_get(snap, "ingest");
    double eta = NAN;
    size_t idx;
    json_t *row;
    json_array_foreach(ingest, idx, row)
    {
        double e = json_num(row, "eta_s");
        if (isfinite(e) && !(e <= eta))
            eta = e;
    }
    json_object_set_new(totals, "ingest_eta_s", num_or_null(eta));
    json_object_set_new(snap, "totals", totals);
    pthread_mutex_unlock(&c->lock);
    return snap;
}
