/* source.c: the record source, the one loop that reads records from either
 * home: a dataset folder (or one shard file) through the shard reader, or a
 * Kafka topic through the consumer source. It owns the order, the rank
 * split, the position and its JSON form, the identity checks and the
 * reporting of damaged records; see "record source" in shards.h. */
#include "file_internal.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAG "shards"
#define TO_END UINT64_MAX

/* One stretch of one shard this rank reads: records [first, end). */
typedef struct PlanItem {
    size_t shard;
    uint64_t first, end; /* end TO_END: to the end of the file */
} PlanItem;

struct RecordSource {
    RecordSourceOptions opts; /* pointers into the caller's options cleared after open */
    int is_kafka;
    ShardFacts facts;
    int have_facts;
    ShardFacts expect;
    int have_expect;
    ShardArena arena;
    uint64_t records_read;
    /* problems found outside any record, handed out before the next record */
    ShardProblem *pending;
    size_t n_pending, pending_head, pending_cap;

    /* folders */
    char dir[4096];
    int is_dir;
    ShardManifest *manifest;
    RecordShard *shards;
    size_t n_shards, n_owned; /* n_owned: names allocated (a position may cut n_shards) */
    PlanItem *plan;
    size_t n_plan, plan_pos;
    uint64_t resume_record; /* for plan[plan_pos] before its file is open */
    ShardFile *file;
    ShardCursor cur;
    int checking;           /* whole-shard checks for the open item */
    uint32_t file_crc;
    uint64_t covered;

    /* topics */
    KafkaSource *ks;
    char topic[256];
};

/* ---- small helpers ---- */

static int pending_add(RecordSource *s, const char *shard, uint64_t record, uint64_t offset, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int pending_add(RecordSource *s, const char *shard, uint64_t record, uint64_t offset, const char *fmt, ...)
{
    if (s->n_pending == s->pending_cap) {
        size_t cap = s->pending_cap ? s->pending_cap * 2 : 16;
        ShardProblem *p = realloc(s->pending, cap * sizeof *p);
        if (!p)
            return -1;
        s->pending = p;
        s->pending_cap = cap;
    }
    ShardProblem *p = &s->pending[s->n_pending++];
    memset(p, 0, sizeof *p);
    snprintf(p->shard, sizeof p->shard, "%s", shard);
    p->record = record;
    p->offset = offset;
    p->partition = -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->what, sizeof p->what, fmt, ap);
    va_end(ap);
    return 0;
}

static int problem_fill(ShardProblem *p, const char *shard, int32_t partition, uint64_t record, uint64_t offset,
                        const char *what)
{
    if (p) {
        snprintf(p->shard, sizeof p->shard, "%s", shard);
        p->partition = partition;
        p->record = record;
        p->offset = offset;
        snprintf(p->what, sizeof p->what, "%s", what);
    }
    return RECORD_SOURCE_PROBLEM;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* NAME.tfrecord files of a folder (not hidden), sorted; NULL and *n = 0
 * when there are none or the folder cannot be read. */
static char **list_shard_files(const char *dir, size_t *n)
{
    *n = 0;
    DIR *dp = opendir(dir);
    if (!dp)
        return NULL;
    char **out = NULL;
    size_t cap = 0;
    struct dirent *e;
    size_t sl = strlen(SHARD_FILE_SUFFIX);
    while ((e = readdir(dp))) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l <= sl || strcmp(e->d_name + l - sl, SHARD_FILE_SUFFIX))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(out, cap * sizeof *out);
            if (!grown)
                break;
            out = grown;
        }
        if (!(out[*n] = strdup(e->d_name)))
            break;
        (*n)++;
    }
    closedir(dp);
    if (out)
        qsort(out, *n, sizeof *out, cmp_str);
    return out;
}

static void free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

static int shard_add(RecordSource *s, const char *name, const ShardEntry *entry)
{
    RecordShard *grown = realloc(s->shards, (s->n_shards + 1) * sizeof *grown);
    if (!grown)
        return -1;
    s->shards = grown;
    char path[4096];
    if (tf_path_join(path, sizeof path, s->dir, name))
        return -1;
    RecordShard *r = &s->shards[s->n_shards];
    r->name = strdup(name);
    r->path = strdup(path);
    r->entry = entry;
    if (!r->name || !r->path) {
        free((char *)r->name);
        free((char *)r->path);
        return -1;
    }
    s->n_shards++;
    s->n_owned = s->n_shards;
    return 0;
}

static int plan_add(RecordSource *s, size_t shard, uint64_t first, uint64_t end)
{
    PlanItem *grown = realloc(s->plan, (s->n_plan + 1) * sizeof *grown);
    if (!grown)
        return -1;
    s->plan = grown;
    s->plan[s->n_plan++] = (PlanItem){shard, first, end};
    return 0;
}

static int shard_wanted(const RecordSource *s, size_t i)
{
    return !s->opts.shard_filter || s->opts.shard_filter(s->opts.filter_ctx, s->shards[i].name, i);
}

/* Records in shard i as the split counts them: the manifest's count, else
 * the index's, else a scan. */
static uint64_t shard_count(const RecordSource *s, size_t i)
{
    if (s->shards[i].entry)
        return s->shards[i].entry->records;
    ShardFile *f = shard_file_open(s->shards[i].path, NULL);
    if (!f)
        return 0;
    int64_t n = shard_file_index_count(f);
    if (n < 0) {
        ShardCursor c;
        shard_cursor_init(&c, f);
        shard_cursor_seek(&c, TO_END);
        n = (int64_t)c.record;
    }
    shard_file_free(f);
    return (uint64_t)n;
}

static int plan_build(RecordSource *s, TfError *err)
{
    uint64_t w = (uint64_t)s->opts.world_size, r = (uint64_t)s->opts.rank;
    if (s->opts.split == RECORD_SPLIT_SHARDS) {
        for (size_t i = 0; i < s->n_shards; i++)
            if (i % w == r && shard_wanted(s, i) && plan_add(s, i, 0, TO_END))
                return tf_fail(err, "out of memory");
        return 0;
    }
    uint64_t *counts = calloc(s->n_shards + 1, sizeof *counts), total = 0;
    if (!counts)
        return tf_fail(err, "out of memory");
    for (size_t i = 0; i < s->n_shards; i++) {
        counts[i] = shard_count(s, i);
        total += counts[i];
    }
    uint64_t lo = r * (total / w) + (r < total % w ? r : total % w);
    uint64_t hi = lo + total / w + (r < total % w);
    uint64_t cum = 0;
    int rc = 0;
    for (size_t i = 0; i < s->n_shards && !rc; i++) {
        uint64_t a = cum, b = cum + counts[i];
        cum = b;
        if (b <= lo || a >= hi || !shard_wanted(s, i))
            continue;
        if (plan_add(s, i, (lo > a ? lo : a) - a, (hi < b ? hi : b) - a))
            rc = tf_fail(err, "out of memory");
    }
    free(counts);
    return rc;
}

static const char *split_name(RecordSplit split)
{
    return split == RECORD_SPLIT_BLOCKS ? "blocks" : "shards";
}

/* ---- opening ---- */

static int check_position_common(const RecordSource *s, const json_t *pos, const char *kind, TfError *err)
{
    const char *k = json_string_value(json_object_get(pos, "kind"));
    if (!json_is_object(pos) || !k || strcmp(k, kind))
        return tf_fail(err, "position: not a %s position (kind is %s)", kind, k ? k : "missing");
    json_int_t rank = json_integer_value(json_object_get(pos, "rank"));
    json_int_t world = json_integer_value(json_object_get(pos, "world"));
    if (rank != s->opts.rank || world != s->opts.world_size)
        return tf_fail(err, "position was saved by rank %lld of %lld; this reader is rank %d of %d", (long long)rank,
                       (long long)world, s->opts.rank, s->opts.world_size);
    return 0;
}

static int open_folder(RecordSource *s, TfError *err)
{
    const char *path = s->opts.path;
    struct stat st;
    if (stat(path, &st) != 0)
        return tf_fail(err, "%s: no such file or folder", path);
    if (!S_ISDIR(st.st_mode)) {
        const char *slash = strrchr(path, '/');
        snprintf(s->dir, sizeof s->dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
        if (slash && slash == path)
            snprintf(s->dir, sizeof s->dir, "/");
        if (shard_add(s, slash ? slash + 1 : path, NULL))
            return tf_fail(err, "out of memory");
    } else {
        s->is_dir = 1;
        snprintf(s->dir, sizeof s->dir, "%s", path);
        TfError merr = {{0}};
        s->manifest = shard_manifest_load(path, &merr);
        size_t n_files = 0;
        char **files = NULL;
        if (s->manifest || s->opts.check_shards)
            files = list_shard_files(path, &n_files);
        if (s->manifest) {
            for (size_t i = 0; i < s->manifest->n_shards; i++)
                if (shard_add(s, s->manifest->shards[i].name, &s->manifest->shards[i])) {
                    free_list(files, n_files);
                    return tf_fail(err, "out of memory");
                }
            s->facts = s->manifest->facts;
            s->have_facts = 1;
            if (s->opts.check_shards) {
                for (size_t i = 0; i < n_files; i++) {
                    size_t listed = 0;
                    for (size_t k = 0; k < s->n_shards; k++)
                        listed += !strcmp(files[i], s->shards[k].name);
                    if (!listed)
                        pending_add(s, files[i], 0, 0, "shard file is not listed in the manifest");
                }
                for (size_t i = 0; i < s->n_shards; i++)
                    for (size_t k = 0; k < i; k++)
                        if (!strcmp(s->shards[i].name, s->shards[k].name)) {
                            pending_add(s, SHARD_MANIFEST_NAME, 0, 0, "manifest lists %s twice", s->shards[i].name);
                            break;
                        }
            }
            free_list(files, n_files);
        } else {
            free_list(files, n_files);
            files = list_shard_files(path, &n_files);
            for (size_t i = 0; i < n_files; i++)
                if (shard_add(s, files[i], NULL)) {
                    free_list(files, n_files);
                    return tf_fail(err, "out of memory");
                }
            free_list(files, n_files);
            if (!s->n_shards)
                return tf_fail(err, "%s: no manifest and no shard files (%s)", path, merr.msg);
            if (s->opts.check_shards)
                pending_add(s, SHARD_MANIFEST_NAME, 0, 0, "%s", merr.msg);
            else
                tf_log(TF_LOG_WARN, TAG, "%s; using the %zu shard files found", merr.msg, s->n_shards);
        }
    }
    if (s->have_expect && s->have_facts && shard_facts_check(&s->expect, &s->facts, err))
        return tf_fail_context(err, "%s", path);

    /* A saved position pins the shards read and the next record. */
    const json_t *pos = s->opts.position;
    size_t next_shard = 0;
    uint64_t next_record = 0;
    if (pos) {
        if (check_position_common(s, pos, "dataset", err))
            return -1;
        const char *split = json_string_value(json_object_get(pos, "split"));
        json_int_t n = json_integer_value(json_object_get(pos, "shards"));
        json_int_t idx = json_integer_value(json_object_get(pos, "shard_index"));
        json_int_t rec = json_integer_value(json_object_get(pos, "record"));
        const char *name = json_string_value(json_object_get(pos, "shard"));
        if (!split || strcmp(split, split_name(s->opts.split)))
            return tf_fail(err, "position was saved with split %s; this reader splits by %s", split ? split : "?",
                           split_name(s->opts.split));
        if (n < 0 || (size_t)n > s->n_shards || idx < 0 || idx > n || rec < 0)
            return tf_fail(err, "position names %lld shards; %s has %zu: the dataset is not the one it was saved on",
                           (long long)n, path, s->n_shards);
        if (idx < n && (!name || strcmp(name, s->shards[idx].name)))
            return tf_fail(err, "position names shard %s at index %lld; %s has %s there", name ? name : "?",
                           (long long)idx, path, s->shards[idx].name);
        s->n_shards = (size_t)n; /* later shards are not read (their entries stay owned by the manifest) */
        next_shard = (size_t)idx;
        next_record = (uint64_t)rec;
        s->records_read = (uint64_t)json_integer_value(json_object_get(pos, "records_read"));
    }
    if (plan_build(s, err))
        return -1;
    while (s->plan_pos < s->n_plan && s->plan[s->plan_pos].shard < next_shard)
        s->plan_pos++;
    if (s->plan_pos < s->n_plan && s->plan[s->plan_pos].shard == next_shard)
        s->resume_record = next_record;
    return 0;
}

static int open_kafka(RecordSource *s, TfError *err)
{
    char bootstrap[1024];
    if (kafka_url_parse(s->opts.path, bootstrap, sizeof bootstrap, s->topic, sizeof s->topic, err))
        return -1;
    KafkaSourceOptions ko = {0};
    if (s->opts.kafka)
        ko = *s->opts.kafka;
    ko.bootstrap = bootstrap;
    ko.topic = s->topic;
    ko.rank = s->opts.rank;
    ko.world_size = s->opts.world_size;
    ko.expect = s->have_expect ? &s->expect : NULL;
    KafkaPosition *start = NULL;
    if (s->opts.position) {
        if (check_position_common(s, s->opts.position, "kafka", err))
            return -1;
        if (!(start = kafka_position_from_json(s->opts.position, err)))
            return tf_fail_context(err, "position");
        if (strcmp(start->topic, s->topic)) {
            tf_fail(err, "position is for topic %s, not %s", start->topic, s->topic);
            kafka_position_free(start);
            return -1;
        }
        ko.start = start;
    }
    s->ks = kafka_source_new(&ko, err);
    kafka_position_free(start);
    return s->ks ? 0 : -1;
}

RecordSource *record_source_open(const RecordSourceOptions *opts, TfError *err)
{
    if (!opts || !opts->path) {
        tf_fail(err, "record source: no path");
        return NULL;
    }
    RecordSource *s = calloc(1, sizeof *s);
    if (!s) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    s->opts = *opts;
    if (s->opts.world_size <= 0)
        s->opts.world_size = 1;
    if (s->opts.check_shards)
        s->opts.check = 1;
    if (s->opts.check)
        s->opts.decode = 1;
    if (opts->expect) {
        s->expect = *opts->expect;
        s->have_expect = 1;
    }
    shard_arena_init(&s->arena, 1 << 20);
    int rc;
    if (s->opts.rank < 0 || s->opts.rank >= s->opts.world_size) {
        rc = tf_fail(err, "rank %d is not in [0, %d)", s->opts.rank, s->opts.world_size);
    } else if (kafka_url_is(opts->path)) {
        s->is_kafka = 1;
        rc = open_kafka(s, err);
    } else {
        rc = open_folder(s, err);
    }
    /* Nothing the caller passed is kept beyond the call, except the
     * filter (called while reading). */
    s->opts.path = NULL;
    s->opts.position = NULL;
    s->opts.expect = NULL;
    s->opts.kafka = NULL;
    if (rc) {
        record_source_free(s);
        return NULL;
    }
    return s;
}

/* ---- reading a folder ---- */

/* Ends the open plan item: whole-shard checks, then on to the next item. */
static void item_finish(RecordSource *s)
{
    if (s->checking) {
        const RecordShard *sh = &s->shards[s->plan[s->plan_pos].shard];
        const ShardEntry *e = sh->entry;
        uint64_t size = shard_file_size(s->file), records = s->cur.record;
        if (s->covered < size)
            s->file_crc = shard_crc32c(s->file_crc, shard_file_data(s->file) + s->covered, size - s->covered);
        if (e && s->file_crc != e->crc32c)
            pending_add(s, sh->name, 0, 0, "file CRC-32C %08x differs from manifest %08x", s->file_crc, e->crc32c);
        if (e && records != e->records)
            pending_add(s, sh->name, records, size, "shard holds %llu records, manifest says %llu",
                        (unsigned long long)records, (unsigned long long)e->records);
        int64_t indexed = shard_file_index_count(s->file);
        if (indexed >= 0 && (uint64_t)indexed != records)
            pending_add(s, sh->name, records, size, "shard holds %llu records, index lists %lld",
                        (unsigned long long)records, (long long)indexed);
    }
    shard_file_free(s->file);
    s->file = NULL;
    s->checking = 0;
    s->plan_pos++;
    s->resume_record = 0;
}

/* Opens the file of plan[plan_pos]. Returns 0, or -1 after queueing why
 * it cannot be read (the item is then skipped). */
static int item_open(RecordSource *s)
{
    const PlanItem *it = &s->plan[s->plan_pos];
    const RecordShard *sh = &s->shards[it->shard];
    TfError ferr = {{0}};
    s->file = shard_file_load(sh->path, &ferr);
    if (!s->file) {
        pending_add(s, sh->name, 0, 0, "%s", ferr.msg);
        s->plan_pos++;
        s->resume_record = 0;
        return -1;
    }
    shard_cursor_init(&s->cur, s->file);
    uint64_t first = it->first > s->resume_record ? it->first : s->resume_record;
    if (first)
        shard_cursor_seek(&s->cur, first);
    s->checking = s->opts.check_shards && first == 0 && it->end == TO_END;
    s->file_crc = 0;
    s->covered = 0;
    if (s->checking) {
        uint64_t size = shard_file_size(s->file);
        if (sh->entry && size != sh->entry->bytes)
            pending_add(s, sh->name, 0, size, "file has %llu bytes, manifest says %llu", (unsigned long long)size,
                        (unsigned long long)sh->entry->bytes);
        if (shard_file_index_count(s->file) < 0)
            pending_add(s, sh->name, 0, 0, "%s", shard_file_index_problem(s->file));
    }
    return 0;
}

/* Decodes (and checks) the record in rec. Returns 0, or -1 with why. */
static int record_examine(RecordSource *s, Record *rec, const ShardFacts *facts, char *why, size_t cap)
{
    shard_arena_reset(&s->arena);
    TfError derr = {{0}};
    Sample *smp = sample_decode(rec->payload, rec->len, &s->arena, &derr);
    if (!smp) {
        snprintf(why, cap, "%s", derr.msg);
        return -1;
    }
    rec->sample = smp;
    if (s->opts.check && sample_check(smp, facts, why, cap))
        return -1;
    return 0;
}

static int next_folder(RecordSource *s, Record *rec, ShardProblem *problem)
{
    for (;;) {
        if (s->pending_head < s->n_pending) {
            if (problem)
                *problem = s->pending[s->pending_head];
            if (++s->pending_head == s->n_pending)
                s->pending_head = s->n_pending = 0;
            return RECORD_SOURCE_PROBLEM;
        }
        if (!s->file) {
            if (s->plan_pos >= s->n_plan)
                return RECORD_SOURCE_END;
            if (item_open(s))
                continue;
        }
        const PlanItem *it = &s->plan[s->plan_pos];
        const RecordShard *sh = &s->shards[it->shard];
        if (it->end != TO_END && s->cur.record >= it->end) {
            item_finish(s);
            continue;
        }
        const uint8_t *payload;
        size_t len;
        ShardProblem p;
        int rc = shard_cursor_next(&s->cur, &payload, &len, &p);
        if (rc == 0) {
            item_finish(s);
            continue;
        }
        if (rc < 0)
            return problem_fill(problem, sh->name, -1, p.record, p.offset, p.what);
        const uint8_t *data = shard_file_data(s->file);
        uint64_t start = (uint64_t)(payload - data) - SHARD_FRAME_HEADER;
        if (s->checking) {
            /* The whole-file checksum from the frames' CRCs (CRC
             * combination), with any bytes between good frames added. */
            if (start > s->covered)
                s->file_crc = shard_crc32c(s->file_crc, data + s->covered, start - s->covered);
            s->file_crc = shard_crc32c(s->file_crc, data + start, SHARD_FRAME_HEADER);
            s->file_crc = shard_crc32c_combine(s->file_crc, s->cur.payload_crc, len);
            s->file_crc = shard_crc32c(s->file_crc, payload + len, SHARD_FRAME_FOOTER);
            s->covered = start + SHARD_FRAME_HEADER + len + SHARD_FRAME_FOOTER;
        }
        memset(rec, 0, sizeof *rec);
        rec->payload = payload;
        rec->len = len;
        rec->shard = sh->name;
        rec->shard_index = it->shard;
        rec->record = s->cur.record - 1;
        rec->offset = start;
        rec->partition = -1;
        if (sample_peek_key(payload, len, &rec->key, &rec->key_len) != 1) {
            rec->key = "";
            rec->key_len = 0;
        }
        if (s->opts.decode) {
            char why[320];
            const ShardFacts *facts = s->have_facts ? &s->facts : s->have_expect ? &s->expect : NULL;
            if (record_examine(s, rec, facts, why, sizeof why))
                return problem_fill(problem, sh->name, -1, rec->record, start, why);
        }
        s->records_read++;
        return RECORD_SOURCE_RECORD;
    }
}

/* ---- reading a topic ---- */

static void learn_facts(RecordSource *s, const Sample *smp)
{
    kafka_source_record_header(s->ks, KAFKA_HEADER_TOKENIZER, s->facts.tokenizer_id, sizeof s->facts.tokenizer_id);
    kafka_source_record_header(s->ks, KAFKA_HEADER_VAE, s->facts.vae_id, sizeof s->facts.vae_id);
    const Transfuse__V1__Tensor *t = smp ? smp->latent_mean : NULL;
    if (t && sample_dtype_size(t->dtype) && t->dtype != TRANSFUSE__V1__DTYPE__DTYPE_U8 && t->n_shape >= 1 &&
        t->n_shape <= 4) {
        snprintf(s->facts.latent_dtype, sizeof s->facts.latent_dtype, "%s", sample_dtype_name(t->dtype));
        for (size_t d = 0; d < t->n_shape; d++)
            s->facts.latent_shape[d] = t->shape[d];
        s->facts.latent_rank = (int)t->n_shape;
    }
    s->have_facts = 1;
}

static int next_kafka(RecordSource *s, Record *rec, int timeout_ms, ShardProblem *problem, TfError *err)
{
    double deadline = tf_now() + (timeout_ms < 0 ? 1e9 : timeout_ms / 1000.0);
    for (;;) {
        if (tf_stop_requested(s->opts.stop))
            return RECORD_SOURCE_IDLE;
        double left = deadline - tf_now();
        int slice = left <= 0 ? 0 : left > 0.1 ? 100 : (int)(left * 1000) + 1;
        KafkaRecord kr;
        int rc = kafka_source_next(s->ks, &kr, slice, err);
        if (rc < 0)
            return -1;
        if (rc == KAFKA_END)
            return RECORD_SOURCE_END;
        if (rc == KAFKA_IDLE) {
            if (tf_now() >= deadline)
                return RECORD_SOURCE_IDLE;
            continue;
        }
        memset(rec, 0, sizeof *rec);
        rec->payload = kr.payload;
        rec->len = kr.len;
        rec->key = kr.key ? kr.key : "";
        rec->key_len = kr.key ? kr.key_len : 0;
        rec->shard = s->topic;
        rec->record = rec->offset = (uint64_t)kr.offset;
        rec->partition = kr.partition;
        char why[320];
        if (!kr.len || !kr.payload)
            return problem_fill(problem, s->topic, kr.partition, (uint64_t)kr.offset, (uint64_t)kr.offset,
                                "empty value: not a transfuse.v1.Sample");
        if (s->opts.decode) {
            const ShardFacts *facts = s->have_facts ? &s->facts : s->have_expect ? &s->expect : NULL;
            if (record_examine(s, rec, facts, why, sizeof why))
                return problem_fill(problem, s->topic, kr.partition, rec->record, rec->offset, why);
            if (s->opts.check &&
                (rec->key_len != strlen(rec->sample->key) || memcmp(rec->key, rec->sample->key, rec->key_len))) {
                snprintf(why, sizeof why, "message key '%.*s' differs from the sample key '%.100s'",
                         (int)(rec->key_len > 100 ? 100 : rec->key_len), rec->key, rec->sample->key);
                return problem_fill(problem, s->topic, kr.partition, rec->record, rec->offset, why);
            }
            if (s->opts.check && s->have_expect && sample_check(rec->sample, &s->expect, why, sizeof why))
                return problem_fill(problem, s->topic, kr.partition, rec->record, rec->offset, why);
        }
        if (!s->have_facts)
            learn_facts(s, rec->sample);
        s->records_read++;
        return RECORD_SOURCE_RECORD;
    }
}

int record_source_next(RecordSource *src, Record *rec, int timeout_ms, ShardProblem *problem, TfError *err)
{
    if (src->is_kafka)
        return next_kafka(src, rec, timeout_ms, problem, err);
    if (tf_stop_requested(src->opts.stop))
        return RECORD_SOURCE_IDLE;
    return next_folder(src, rec, problem);
}

/* ---- position and the rest ---- */

json_t *record_source_position_json(const RecordSource *s)
{
    if (s->is_kafka) {
        json_t *j = kafka_position_to_json(kafka_source_position(s->ks));
        json_object_set_new(j, "kind", json_string("kafka"));
        json_object_set_new(j, "rank", json_integer(s->opts.rank));
        json_object_set_new(j, "world", json_integer(s->opts.world_size));
        return j;
    }
    size_t shard = s->plan_pos < s->n_plan ? s->plan[s->plan_pos].shard : s->n_shards;
    uint64_t record = 0;
    if (s->plan_pos < s->n_plan) {
        record = s->file ? s->cur.record : s->resume_record;
        if (record < s->plan[s->plan_pos].first)
            record = s->plan[s->plan_pos].first;
    }
    return json_pack("{s:s,s:s,s:i,s:i,s:I,s:s?,s:I,s:I,s:I}", "kind", "dataset", "split", split_name(s->opts.split),
                     "rank", s->opts.rank, "world", s->opts.world_size, "shards", (json_int_t)s->n_shards, "shard",
                     shard < s->n_shards ? s->shards[shard].name : NULL, "shard_index", (json_int_t)shard, "record",
                     (json_int_t)record, "records_read", (json_int_t)s->records_read);
}

const ShardFacts *record_source_facts(const RecordSource *s)
{
    return &s->facts;
}

int record_source_is_kafka(const RecordSource *s)
{
    return s->is_kafka;
}

size_t record_source_shards(const RecordSource *s, const RecordShard **shards)
{
    if (shards)
        *shards = s->shards;
    return s->n_shards;
}

int record_source_has_manifest(const RecordSource *s)
{
    return s->manifest != NULL;
}

KafkaSource *record_source_kafka(RecordSource *s)
{
    return s->ks;
}

void record_source_free(RecordSource *s)
{
    if (!s)
        return;
    kafka_source_free(s->ks);
    shard_file_free(s->file);
    /* n_shards may have been cut by a position: free every name added. */
    for (size_t i = 0; s->shards && i < s->n_owned; i++) {
        free((char *)s->shards[i].name);
        free((char *)s->shards[i].path);
    }
    free(s->shards);
    free(s->plan);
    free(s->pending);
    shard_manifest_free(s->manifest);
    shard_arena_deinit(&s->arena);
    free(s);
}

int record_source_keys(const char *path, ShardKeySet *keys, uint64_t *damaged, TfError *err)
{
    char group[64];
    snprintf(group, sizeof group, "transfuse-keys-%ld", (long)getpid());
    KafkaSourceOptions ko = {.group_id = group, .until = KAFKA_UNTIL_SNAPSHOT, .commit_interval_ms = -1};
    RecordSourceOptions o = {.path = path, .kafka = &ko};
    RecordSource *src = record_source_open(&o, err);
    if (!src)
        return -1;
    Record rec;
    ShardProblem prob;
    int rc;
    uint64_t bad = 0;
    while ((rc = record_source_next(src, &rec, 1000, &prob, err)) != RECORD_SOURCE_END) {
        if (rc < 0)
            break;
        if (rc == RECORD_SOURCE_PROBLEM || (rc == RECORD_SOURCE_RECORD && !rec.key_len)) {
            bad++;
            continue;
        }
        if (rc == RECORD_SOURCE_RECORD && shard_keyset_add(keys, rec.key, rec.key_len, 0, NULL) < 0) {
            rc = tf_fail(err, "out of memory for the key set");
            break;
        }
    }
    if (damaged)
        *damaged = bad;
    record_source_free(src);
    return rc < 0 ? -1 : 0;
}
