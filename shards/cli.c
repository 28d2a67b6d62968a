/* cli.c: `transfuse shards`, what operators run daily on datasets and
 * topics (PATH is a dataset folder, one shard file, or
 * kafka://HOST:PORT/TOPIC; every reading command goes through the record
 * source, so folders and topics are read by the same loop):
 *   ls      a folder's shards with records, bytes, checksum and state (no
 *           payload reads); a topic's partitions, watermarks and group lag
 *   stat    totals, latent shapes/dtypes, caption and token distributions,
 *           provenance summary (reads every record)
 *   verify  every CRC, every parse and record check, duplicate keys,
 *           manifest counts and checksums; each problem with its location;
 *           exit 1 when anything is wrong
 *   cat     records as JSON lines (or one record's raw payload)
 *   import  JSON lines to a dataset (the inverse of cat)
 *   publish, archive, create: kafka/cli_kafka.c
 * Human tables by default, --json for scripts. */
#include "cli_internal.h"
#include "file_internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAG "shards"

/* ---- the options every reading command shares ---- */

int shards_cli_usage(const ShardsCli *k, const char *msg)
{
    fprintf(stderr, "%s: %s (see %s --help)\n", k->prog, msg, k->prog);
    return TF_EXIT_USAGE;
}

int shards_cli_common(ShardsCli *k, int c, const char *arg)
{
    TfError err = {{0}};
    long v;
    switch (c) {
    case 'X':
        if (k->n_config == SHARDS_MAX_X || !strchr(arg, '=')) {
            shards_cli_usage(k, "-X wants key=value (at most 64)");
            return -1;
        }
        k->config[k->n_config++] = arg;
        return 1;
    case SHARDS_OPT_PARTITION:
        if (k->n_partitions == 256 || tf_parse_long("--partition", arg, 0, KAFKA_MAX_PARTITIONS - 1, &v, &err)) {
            shards_cli_usage(k, err.msg[0] ? err.msg : "too many --partition");
            return -1;
        }
        k->partitions[k->n_partitions++] = (int32_t)v;
        return 1;
    case SHARDS_OPT_OFFSET:
        if (tf_parse_long("--offset", arg, 0, LONG_MAX, &v, &err)) {
            shards_cli_usage(k, err.msg);
            return -1;
        }
        k->from = v;
        return 1;
    case SHARDS_OPT_LIMIT:
        if (tf_parse_long("--limit", arg, 0, LONG_MAX, &k->limit, &err)) {
            shards_cli_usage(k, err.msg);
            return -1;
        }
        return 1;
    case SHARDS_OPT_GROUP: k->group = arg; return 1;
    case SHARDS_OPT_FOLLOW: k->follow = 1; return 1;
    case SHARDS_OPT_RANK:
        if (tf_parse_long("--rank", arg, 0, 1 << 20, &k->rank, &err)) {
            shards_cli_usage(k, err.msg);
            return -1;
        }
        return 1;
    case SHARDS_OPT_WORLD:
        if (tf_parse_long("--world", arg, 1, 1 << 20, &k->world, &err)) {
            shards_cli_usage(k, err.msg);
            return -1;
        }
        return 1;
    case SHARDS_OPT_SPLIT:
        if (!strcmp(arg, "shards"))
            k->split = RECORD_SPLIT_SHARDS;
        else if (!strcmp(arg, "blocks"))
            k->split = RECORD_SPLIT_BLOCKS;
        else {
            shards_cli_usage(k, "--split is shards or blocks");
            return -1;
        }
        return 1;
    }
    return 0;
}

RecordSource *shards_cli_open(ShardsCli *k, const char *path, RecordSourceOptions *o, TfError *err)
{
    o->path = path;
    o->rank = (int)k->rank;
    o->world_size = (int)k->world;
    o->split = k->split;
    if (kafka_url_is(path)) {
        char bootstrap[1024], topic[256];
        if (kafka_url_parse(path, bootstrap, sizeof bootstrap, topic, sizeof topic, err))
            return NULL;
        if (k->from >= 0) { /* --offset: every chosen partition from there (clamped to its end) */
            KafkaTopicInfo info;
            if (!(k->start = kafka_position_new(topic)) ||
                kafka_topic_describe(bootstrap, topic, k->config, &info, err))
                return NULL;
            for (size_t i = 0; i < info.n; i++)
                kafka_position_set(k->start, info.parts[i].partition,
                                   k->from < info.parts[i].high ? k->from : info.parts[i].high, NULL);
            kafka_topic_info_deinit(&info);
        }
        /* A range read starts at the log start, never at a group's offsets:
         * the group is a throwaway one, so nothing is committed or read back. */
        snprintf(k->throwaway_group, sizeof k->throwaway_group, "transfuse-cli-%ld", (long)getpid());
        k->config[k->n_config] = NULL;
        k->ko = (KafkaSourceOptions){.group_id = k->group ? k->group : k->throwaway_group,
                                     .partitions = k->n_partitions ? k->partitions : NULL,
                                     .n_partitions = k->n_partitions,
                                     .start = k->start,
                                     .until = k->follow ? KAFKA_UNTIL_FOREVER : KAFKA_UNTIL_SNAPSHOT,
                                     .commit_interval_ms = -1,
                                     .config = k->config};
        o->kafka = &k->ko;
    }
    return record_source_open(o, err);
}

void shards_cli_deinit(ShardsCli *k)
{
    kafka_position_free(k->start);
    k->start = NULL;
}

/* ---- small helpers ---- */

static void human_bytes(uint64_t b, char *out, size_t cap)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    snprintf(out, cap, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

static void tensor_desc(const Transfuse__V1__Tensor *t, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s [", sample_dtype_name(t->dtype));
    for (size_t i = 0; i < t->n_shape && n > 0 && (size_t)n < cap; i++)
        n += snprintf(out + n, cap - (size_t)n, "%s%u", i ? "," : "", t->shape[i]);
    if (n > 0 && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, "]");
}

static void json_print(json_t *j)
{
    json_dumpf(j, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
    putchar('\n');
}

/* Exactly one operand: the PATH. Returns it or NULL after a usage message. */
static const char *one_path(ShardsCli *k, const TfOpts *o)
{
    if (o->first_operand != o->argc - 1) {
        shards_cli_usage(k, "needs exactly one PATH");
        return NULL;
    }
    return o->argv[o->first_operand];
}

/* ---- ls ---- */

static const char LS_HELP[] =
    "usage: transfuse shards ls [--json] PATH\n"
    "       transfuse shards ls [--json] [--group G ...] kafka://HOST:PORT/TOPIC\n\n"
    "A dataset folder (or one shard file): its shards with record counts,\n"
    "bytes, CRC-32C and state, from the manifest and the index files, without\n"
    "reading payloads. State is `ok`, or what disagrees: a missing file, a size\n"
    "that differs from the manifest, a missing or damaged index, an index whose\n"
    "count differs. Checksums are compared by `shards verify`, which reads\n"
    "everything.\n\n"
    "A topic: its partitions with leader, low and high watermark and record\n"
    "count, and for each consumer group its committed offsets and lag (records\n"
    "not yet consumed). Groups are listed from the cluster when it can\n"
    "(ListGroups); name them with --group where it cannot: librdkafka's mock\n"
    "cluster (`transfuse broker`) cannot list or describe groups, but reports\n"
    "committed offsets of a named group.\n\n"
    "  --json           one JSON object on stdout instead of a table\n"
    "  --group G        topics: show group G (repeatable)\n"
    "  -X key=value     topics: librdkafka property (repeatable)\n";

#define MAX_GROUPS 32

static int cmd_ls(int argc, char **argv)
{
    ShardsCli k = SHARDS_CLI_INIT("transfuse shards ls");
    static const struct option opts[] = {{"json", no_argument, 0, 'j'}, SHARDS_COMMON_LONGOPTS, {0}};
    TfOpts o = {.prog = k.prog, .argc = argc, .argv = argv, .shortopts = "hX:", .longopts = opts};
    const char *groups[MAX_GROUPS];
    size_t n_groups = 0;
    int json = 0, c;
    while ((c = tf_opts_next(&o)) != -1) {
        if (c == 'h') {
            fputs(LS_HELP, stdout);
            return TF_EXIT_OK;
        } else if (c == 'j') {
            json = 1;
        } else if (c == SHARDS_OPT_GROUP) {
            if (n_groups == MAX_GROUPS)
                return shards_cli_usage(&k, "at most 32 --group");
            groups[n_groups++] = o.arg;
        } else if (c == '?' || shards_cli_common(&k, c, o.arg) <= 0) {
            return TF_EXIT_USAGE;
        }
    }
    const char *path = one_path(&k, &o);
    if (!path)
        return TF_EXIT_USAGE;
    if (kafka_url_is(path)) {
        char b[1024], t[256];
        TfError uerr = {{0}};
        if (kafka_url_parse(path, b, sizeof b, t, sizeof t, &uerr))
            return shards_cli_usage(&k, uerr.msg);
        k.config[k.n_config] = NULL;
        return shards_kafka_ls(&k, path, groups, n_groups, json);
    }
    TfError err = {{0}};
    RecordSourceOptions ro = {0};
    RecordSource *src = shards_cli_open(&k, path, &ro, &err);
    if (!src) {
        fprintf(stderr, "%s: %s\n", k.prog, err.msg);
        return TF_EXIT_FAIL;
    }
    const RecordShard *shards;
    size_t n = record_source_shards(src, &shards);
    int bad = 0;
    json_t *arr = json_array();
    uint64_t tot_records = 0, tot_bytes = 0;
    if (!json)
        printf("%-32s %10s %14s  %-8s  %s\n", "SHARD", "RECORDS", "BYTES", "CRC32C", "STATE");
    for (size_t i = 0; i < n; i++) {
        const ShardEntry *e = shards[i].entry;
        char state[512] = "ok", crc[9] = "-";
        struct stat st;
        uint64_t bytes = 0;
        int64_t records = -1;
        if (stat(shards[i].path, &st) != 0) {
            snprintf(state, sizeof state, "missing");
        } else {
            bytes = (uint64_t)st.st_size;
            TfError ferr = {{0}};
            ShardFile *f = shard_file_open(shards[i].path, &ferr);
            if (!f)
                snprintf(state, sizeof state, "%s", ferr.msg);
            else {
                records = shard_file_index_count(f);
                if (records < 0)
                    snprintf(state, sizeof state, "%s", shard_file_index_problem(f));
                else if (e && (uint64_t)records != e->records)
                    snprintf(state, sizeof state, "index lists %lld records, manifest %llu", (long long)records,
                             (unsigned long long)e->records);
                shard_file_free(f);
            }
            if (e && bytes != e->bytes && !strcmp(state, "ok"))
                snprintf(state, sizeof state, "size %llu differs from manifest %llu", (unsigned long long)bytes,
                         (unsigned long long)e->bytes);
        }
        if (e) {
            snprintf(crc, sizeof crc, "%08x", e->crc32c);
            records = (int64_t)e->records;
            bytes = e->bytes;
        }
        if (strcmp(state, "ok"))
            bad = 1;
        tot_records += records > 0 ? (uint64_t)records : 0;
        tot_bytes += bytes;
        if (json) {
            json_array_append_new(arr, json_pack("{s:s,s:I,s:I,s:s,s:s}", "name", shards[i].name, "records",
                                                 (json_int_t)records, "bytes", (json_int_t)bytes, "crc32c", crc,
                                                 "state", state));
        } else {
            char rec[32];
            snprintf(rec, sizeof rec, records >= 0 ? "%lld" : "?", (long long)records);
            printf("%-32s %10s %14llu  %-8s  %s\n", shards[i].name, rec, (unsigned long long)bytes, crc, state);
        }
    }
    int has_manifest = record_source_has_manifest(src);
    if (json) {
        json_t *out = json_pack("{s:s,s:b,s:I,s:I,s:I,s:o}", "path", path, "manifest", has_manifest, "shards",
                                (json_int_t)n, "records", (json_int_t)tot_records, "bytes", (json_int_t)tot_bytes,
                                "list", arr);
        json_print(out);
        json_decref(out);
    } else {
        char hb[32];
        human_bytes(tot_bytes, hb, sizeof hb);
        printf("%zu shard%s, %llu records, %s%s\n", n, n == 1 ? "" : "s", (unsigned long long)tot_records, hb,
               has_manifest ? "" : " (no manifest)");
        json_decref(arr);
    }
    record_source_free(src);
    return bad ? TF_EXIT_CHECK : TF_EXIT_OK;
}

/* ---- verify ---- */

static const char VERIFY_HELP[] =
    "usage: transfuse shards verify [--json] [--quiet] [options] PATH\n\n"
    "Reads every record of a dataset folder, one shard file or a topic range\n"
    "(up to the high watermarks seen at start, or with --follow until\n"
    "Ctrl-C) and checks: the CRC of every frame; that each record parses as\n"
    "transfuse.v1.Sample, has a key, and has tensors whose sizes match dtype x\n"
    "shape; latent shape/dtype against the dataset's facts; that no key\n"
    "appears twice. For folders also: record counts against the manifest and\n"
    "index, the CRC-32C of each whole file and its size against the manifest,\n"
    "index damage, and shard files the manifest does not list. For topics also:\n"
    "the message key equals the sample key, the identity headers agree, and\n"
    "offsets are contiguous (a gap means records were deleted or compacted).\n"
    "Each problem is printed with its shard, record index and byte offset (or\n"
    "partition and offset). Exit status 1 if anything is wrong, 0 if all is\n"
    "well, 3 if PATH cannot be read. A progress line is drawn on a terminal.\n\n"
    "  --json           one JSON object on stdout (ok, counts, problems)\n"
    "  --quiet          print only the summary (problems are still counted)\n" SHARDS_RANGE_HELP;

typedef struct Verify {
    int json, quiet, kafka;
    json_t *problems;
    uint64_t n_problems;
    TfProgress progress;
} Verify;

static void verify_report(Verify *v, const ShardProblem *p)
{
    v->n_problems++;
    if (v->json) {
        if (json_array_size(v->problems) < 100000) {
            json_t *j = p->partition >= 0
                            ? json_pack("{s:i,s:I,s:s}", "partition", (int)p->partition, "offset",
                                        (json_int_t)p->offset, "what", p->what)
                            : json_pack("{s:s,s:I,s:I,s:s}", "shard", p->shard, "record", (json_int_t)p->record,
                                        "offset", (json_int_t)p->offset, "what", p->what);
            json_array_append_new(v->problems, j);
        }
    } else if (!v->quiet) {
        if (v->progress.enabled)
            fputs("\r\033[K", stderr);
        char line[1024];
        shard_problem_format(p, line, sizeof line);
        printf("PROBLEM %s\n", line);
    }
}

static int cmd_verify(int argc, char **argv)
{
    ShardsCli k = SHARDS_CLI_INIT("transfuse shards verify");
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'}, {"quiet", no_argument, 0, 'q'}, SHARDS_COMMON_LONGOPTS, {0}};
    TfOpts o = {.prog = k.prog, .argc = argc, .argv = argv, .shortopts = "hqX:", .longopts = opts};
    Verify v = {0};
    int c;
    while ((c = tf_opts_next(&o)) != -1) {
        if (c == 'h') {
            fputs(VERIFY_HELP, stdout);
            return TF_EXIT_OK;
        } else if (c == 'j') {
            v.json = 1;
        } else if (c == 'q') {
            v.quiet = 1;
        } else if (c == '?' || shards_cli_common(&k, c, o.arg) <= 0) {
            return TF_EXIT_USAGE;
        }
    }
    const char *path = one_path(&k, &o);
    if (!path)
        return TF_EXIT_USAGE;
    const TfStopFlag *stop = tf_cli_stop_flag();
    TfError err = {{0}};
    double t0 = tf_now();
    RecordSourceOptions ro = {.check_shards = !kafka_url_is(path), .check = 1, .stop = stop};
    RecordSource *src = shards_cli_open(&k, path, &ro, &err);
    if (!src) {
        fprintf(stderr, "%s: %s\n", k.prog, err.msg);
        shards_cli_deinit(&k);
        return TF_EXIT_FAIL;
    }
    v.kafka = record_source_is_kafka(src);
    v.problems = json_array();
    const RecordShard *shards;
    size_t n_shards = record_source_shards(src, &shards);
    uint64_t total = 0;
    for (size_t i = 0; i < n_shards; i++) {
        struct stat st;
        if (stat(shards[i].path, &st) == 0)
            total += (uint64_t)st.st_size;
    }
    tf_progress_init(&v.progress, "verify", total, v.kafka ? "records" : "B");
    ShardKeySet *keys = shard_keyset_new();
    uint64_t good = 0, bytes = 0, seen = 0, done_bytes = 0;
    size_t last_shard = SIZE_MAX;
    int rc;
    Record rec;
    ShardProblem p;
    while ((k.limit < 0 || (long)seen < k.limit) &&
           (rc = record_source_next(src, &rec, 1000, &p, &err)) != RECORD_SOURCE_END) {
        if (tf_stop_requested(stop))
            break;
        if (rc == RECORD_SOURCE_IDLE)
            continue;
        if (rc < 0) {
            snprintf(p.what, sizeof p.what, "%s", err.msg);
            snprintf(p.shard, sizeof p.shard, "%s", path);
            p.partition = -1;
            p.record = p.offset = 0;
            verify_report(&v, &p);
            break;
        }
        seen++;
        if (rc == RECORD_SOURCE_PROBLEM) {
            verify_report(&v, &p);
            continue;
        }
        bytes += rec.len;
        if (!v.kafka && rec.shard_index != last_shard) {
            if (last_shard != SIZE_MAX && shards[last_shard].entry)
                done_bytes += shards[last_shard].entry->bytes;
            last_shard = rec.shard_index;
        }
        uint64_t where = v.kafka ? (uint64_t)rec.partition << 48 | rec.offset : (uint64_t)rec.shard_index << 40 | rec.record;
        uint64_t first = 0;
        int fresh = shard_keyset_add(keys, rec.key, rec.key_len, where, &first);
        if (fresh <= 0) {
            memset(&p, 0, sizeof p);
            snprintf(p.shard, sizeof p.shard, "%s", rec.shard);
            p.partition = rec.partition;
            p.record = rec.record;
            p.offset = rec.offset;
            if (fresh < 0)
                snprintf(p.what, sizeof p.what, "out of memory for the key set");
            else if (v.kafka)
                snprintf(p.what, sizeof p.what, "key '%.*s' appears more than once (first at partition %d offset %llu)",
                         (int)(rec.key_len > 200 ? 200 : rec.key_len), rec.key, (int)(first >> 48),
                         (unsigned long long)(first & ((1ull << 48) - 1)));
            else
                snprintf(p.what, sizeof p.what, "key '%.*s' appears more than once (first in %s record %llu)",
                         (int)(rec.key_len > 200 ? 200 : rec.key_len), rec.key, shards[first >> 40].name,
                         (unsigned long long)(first & ((1ull << 40) - 1)));
            verify_report(&v, &p);
            continue;
        }
        good++;
        if ((seen & 255) == 0)
            tf_progress_update(&v.progress, v.kafka ? seen : done_bytes + rec.offset);
    }
    tf_progress_finish(&v.progress, v.kafka ? seen : total);
    if (v.kafka) {
        KafkaSourceStats st;
        kafka_source_stats(record_source_kafka(src), &st);
        if (st.gaps) {
            memset(&p, 0, sizeof p);
            snprintf(p.shard, sizeof p.shard, "%s", path);
            p.partition = -1;
            snprintf(p.what, sizeof p.what, "%llu offset gap(s): records missing between offsets (see warnings)",
                     (unsigned long long)st.gaps);
            verify_report(&v, &p);
        }
    }
    int stopped = tf_stop_requested(stop);
    double dt = tf_now() - t0;
    if (v.json) {
        json_t *out = json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:f,s:I,s:b,s:o}", "path", path, "ok", v.n_problems == 0,
                                "shards", (json_int_t)n_shards, "records", (json_int_t)good, "seen",
                                (json_int_t)seen, "bytes", (json_int_t)bytes, "seconds", dt, "problem_count",
                                (json_int_t)v.n_problems, "stopped", stopped, "problems", v.problems);
        json_print(out);
        json_decref(out);
    } else {
        char hb[32];
        human_bytes(v.kafka ? bytes : total, hb, sizeof hb);
        const char *verdict = v.n_problems ? "FAILED" : stopped ? "STOPPED" : "OK";
        if (v.kafka) {
            char b[1024], t[256];
            kafka_url_parse(path, b, sizeof b, t, sizeof t, NULL);
            printf("%s: topic %s, %llu good records of %llu, %s in %.2f s: %llu problem%s\n", verdict, t,
                   (unsigned long long)good, (unsigned long long)seen, hb, dt, (unsigned long long)v.n_problems,
                   v.n_problems == 1 ? "" : "s");
        } else {
            printf("%s: %zu shard%s, %llu good records, %s in %.2f s (%.0f MB/s): %llu problem%s\n", verdict, n_shards,
                   n_shards == 1 ? "" : "s", (unsigned long long)good, hb, dt, dt > 0 ? (double)total / dt / 1e6 : 0.0,
                   (unsigned long long)v.n_problems, v.n_problems == 1 ? "" : "s");
        }
        json_decref(v.problems);
    }
    shard_keyset_free(keys);
    record_source_free(src);
    shards_cli_deinit(&k);
    if (v.n_problems)
        return TF_EXIT_CHECK;
    return stopped ? TF_EXIT_STOPPED : TF_EXIT_OK;
}

/* ---- stat ---- */

static const char STAT_HELP[] =
    "usage: transfuse shards stat [--json] [options] PATH\n\n"
    "Reads every record of a dataset folder, one shard file or a topic range\n"
    "and prints totals; the latent shapes and dtypes found; distributions (min,\n"
    "p50, p90, p99, max, mean) of caption length in bytes and of token count;\n"
    "and a provenance summary (source URLs and hosts, original formats and\n"
    "sizes, EXIF orientations applied, embedded images). Damaged records are\n"
    "counted and skipped (run `shards verify` for their locations).\n"
    "When the folder (or --ingest-jobs DIR) holds per-job ingest stats\n"
    "(PATH/ingest-jobs/*.json, written by `transfuse ingest run` and the workers),\n"
    "they are summed per stage: jobs, rows attempted, written, already there,\n"
    "failed, bytes fetched, and the failure table (rows per reason, largest first).\n\n"
    "  --json           one JSON object on stdout instead of text\n"
    "  --ingest-jobs DIR  per-job ingest stats to sum (default PATH/ingest-jobs)\n" SHARDS_RANGE_HELP;

/* Sums the per-job stats files of an ingest (DIR/ *.json objects with a
 * "stage" string and a "failures" object; other files are ignored: this
 * library reads them as plain JSON and knows nothing of ingest) into
 * {STAGE: {"jobs", "attempted", "succeeded", "skipped", "failed", "bytes",
 * "seconds", "failures": {REASON: N}}}. NULL when the folder is absent or
 * holds no such file. */
static json_t *ingest_jobs_summary(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    json_t *out = json_object();
    static const char *const sums[] = {"attempted", "succeeded", "skipped", "failed", "bytes"};
    struct dirent *e;
    while (out && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".json") || e->d_name[0] == '.')
            continue;
        char path[4096];
        if (tf_path_join(path, sizeof path, dir, e->d_name))
            continue;
        json_t *j = tf_json_load_file(path, 64u << 20, NULL);
        const char *stage = json_string_value(json_object_get(j, "stage"));
        json_t *fails = json_object_get(j, "failures");
        if (!stage || !json_is_object(fails)) {
            json_decref(j);
            continue;
        }
        json_t *st = json_object_get(out, stage);
        if (!st) {
            st = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:{}}", "jobs", (json_int_t)0, "attempted", (json_int_t)0,
                           "succeeded", (json_int_t)0, "skipped", (json_int_t)0, "failed", (json_int_t)0, "bytes",
                           (json_int_t)0, "seconds", 0.0, "failures");
            json_object_set_new(out, stage, st);
        }
        json_object_set_new(st, "jobs", json_integer(json_integer_value(json_object_get(st, "jobs")) + 1));
        for (size_t i = 0; i < sizeof sums / sizeof sums[0]; i++)
            json_object_set_new(st, sums[i], json_integer(json_integer_value(json_object_get(st, sums[i])) +
                                                          json_integer_value(json_object_get(j, sums[i]))));
        json_object_set_new(st, "seconds", json_real(json_number_value(json_object_get(st, "seconds")) +
                                                     json_number_value(json_object_get(j, "seconds"))));
        json_t *tf = json_object_get(st, "failures");
        const char *k;
        json_t *v;
        json_object_foreach(fails, k, v)
        {
            json_object_set_new(tf, k, json_integer(json_integer_value(json_object_get(tf, k)) + json_integer_value(v)));
        }
        json_decref(j);
    }
    closedir(d);
    if (out && !json_object_size(out)) {
        json_decref(out);
        out = NULL;
    }
    return out;
}

static int count_desc(const void *a, const void *b)
{
    const json_t *x = json_object_get(*(json_t *const *)a, "rows"), *y = json_object_get(*(json_t *const *)b, "rows");
    json_int_t p = json_integer_value(x), q = json_integer_value(y);
    if (p != q)
        return p > q ? -1 : 1;
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "reason")),
                  json_string_value(json_object_get(*(json_t *const *)b, "reason")));
}

/* Prints the summary of ingest_jobs_summary: one line per stage, then its failure table. */
static void print_ingest_summary(const json_t *sum)
{
    /* stage order: fetch, encode, then any other in name order */
    const char *order[64];
    size_t n_order = 0;
    const char *stage;
    json_t *st;
    if (json_object_get(sum, "fetch"))
        order[n_order++] = "fetch";
    if (json_object_get(sum, "encode"))
        order[n_order++] = "encode";
    json_object_foreach((json_t *)sum, stage, st)
    {
        if (strcmp(stage, "fetch") && strcmp(stage, "encode") && n_order < 64)
            order[n_order++] = stage;
    }
    for (size_t oi = 0; oi < n_order; oi++) {
        stage = order[oi];
        st = json_object_get(sum, stage);
        json_int_t att = json_integer_value(json_object_get(st, "attempted"));
        json_int_t failed = json_integer_value(json_object_get(st, "failed"));
        char hb[32];
        human_bytes((uint64_t)json_integer_value(json_object_get(st, "bytes")), hb, sizeof hb);
        char label[32];
        snprintf(label, sizeof label, "ingest %s", stage);
        json_int_t ok = json_integer_value(json_object_get(st, "succeeded")),
                   there = json_integer_value(json_object_get(st, "skipped"));
        printf("%-16s %lld jobs: %lld rows: %lld records (%lld of them from an earlier attempt), %lld failed "
               "(%.1f%%); %s %s\n",
               label, (long long)json_integer_value(json_object_get(st, "jobs")), (long long)att,
               (long long)(ok + there), (long long)there, (long long)failed,
               att ? 100.0 * (double)failed / (double)att : 0.0, hb, strcmp(stage, "fetch") ? "read" : "fetched");
        json_t *fails = json_object_get(st, "failures");
        size_t n = json_object_size(fails), i = 0;
        if (!n)
            continue;
        json_t **rows = calloc(n, sizeof *rows);
        if (!rows)
            continue;
        const char *k;
        json_t *v;
        json_object_foreach(fails, k, v)
        {
            rows[i++] = json_pack("{s:s,s:I}", "reason", k, "rows", json_integer_value(v));
        }
        qsort(rows, n, sizeof *rows, count_desc);
        printf("%-16s %-24s %10s %7s\n", "failures", "reason", "rows", "share");
        for (i = 0; i < n; i++) {
            json_int_t c = json_integer_value(json_object_get(rows[i], "rows"));
            printf("%-16s %-24s %10lld %6.1f%%\n", "", json_string_value(json_object_get(rows[i], "reason")),
                   (long long)c, att ? 100.0 * (double)c / (double)att : 0.0);
            json_decref(rows[i]);
        }
        free(rows);
    }
}

/* A string -> count table for distinct values (hosts, shapes), hashed so a
 * dataset of millions of records with many hosts stays linear. */
typedef struct Counter {
    ShardKeySet *index;  /* value -> position in keys/counts */
    char **keys;
    uint64_t *counts;
    size_t n, cap;
    uint64_t overflow; /* values not tracked once the table is full */
} Counter;

static void counter_add(Counter *c, const char *key)
{
    if (!c->index && !(c->index = shard_keyset_new()))
        return;
    uint64_t at;
    size_t len = strlen(key);
    if (shard_keyset_has(c->index, key, len, &at)) {
        c->counts[at]++;
        return;
    }
    if (c->n == 100000) {
        c->overflow++;
        return;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        char **k = realloc(c->keys, cap * sizeof *k);
        if (!k)
            return;
        c->keys = k;
        uint64_t *n = realloc(c->counts, cap * sizeof *n);
        if (!n)
            return;
        c->counts = n;
        c->cap = cap;
    }
    if (!(c->keys[c->n] = strdup(key)))
        return;
    if (shard_keyset_add(c->index, key, len, c->n, NULL) < 0) {
        free(c->keys[c->n]);
        return;
    }
    c->counts[c->n++] = 1;
}

static void counter_free(Counter *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->keys[i]);
    free(c->keys);
    free(c->counts);
    shard_keyset_free(c->index);
}

/* The most frequent entries as a JSON object (at most `top`). */
static json_t *counter_json(const Counter *c, size_t top)
{
    json_t *o = json_object();
    char *used = calloc(c->n ? c->n : 1, 1);
    for (size_t t = 0; t < top && t < c->n && used; t++) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < c->n; i++)
            if (!used[i] && (best == SIZE_MAX || c->counts[i] > c->counts[best]))
                best = i;
        used[best] = 1;
        json_object_set_new(o, c->keys[best], json_integer((json_int_t)c->counts[best]));
    }
    free(used);
    return o;
}

typedef struct Series {
    uint32_t *v;
    size_t n, cap;
} Series;

static void series_add(Series *s, uint32_t x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        uint32_t *g = realloc(s->v, cap * sizeof *g);
        if (!g)
            return;
        s->v = g;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static json_t *series_json(Series *s)
{
    if (!s->n)
        return json_pack("{s:i}", "count", 0);
    qsort(s->v, s->n, sizeof *s->v, cmp_u32);
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->v[i];
#define PCT(p) (json_int_t) s->v[(size_t)((double)(s->n - 1) * (p))]
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:f}", "count", (json_int_t)s->n, "min", (json_int_t)s->v[0], "p50",
                     PCT(0.5), "p90", PCT(0.9), "p99", PCT(0.99), "max", (json_int_t)s->v[s->n - 1], "mean",
                     sum / (double)s->n);
#undef PCT
}

static void print_series(const char *label, json_t *j)
{
    if (!json_integer_value(json_object_get(j, "count"))) {
        printf("%-16s none\n", label);
        return;
    }
    printf("%-16s min %lld  p50 %lld  p90 %lld  p99 %lld  max %lld  mean %.1f\n", label,
           (long long)json_integer_value(json_object_get(j, "min")),
           (long long)json_integer_value(json_object_get(j, "p50")),
           (long long)json_integer_value(json_object_get(j, "p90")),
           (long long)json_integer_value(json_object_get(j, "p99")),
           (long long)json_integer_value(json_object_get(j, "max")), json_real_value(json_object_get(j, "mean")));
}

static void print_counter(const char *label, json_t *o)
{
    printf("%-16s", label);
    const char *k;
    json_t *v;
    int first = 1;
    json_object_foreach(o, k, v)
    {
        printf("%s%s: %lld", first ? "" : ", ", k, (long long)json_integer_value(v));
        first = 0;
    }
    printf("%s\n", first ? "none" : "");
}

static void url_host(const char *url, char *out, size_t cap)
{
    const char *p = strstr(url, "://");
    if (!p || !strncmp(url, "file://", 7)) {
        snprintf(out, cap, "(local files)");
        return;
    }
    p += 3;
    size_t n = strcspn(p, "/:?#");
    snprintf(out, cap, "%.*s", (int)n, p);
}

static int cmd_stat(int argc, char **argv)
{
    ShardsCli k = SHARDS_CLI_INIT("transfuse shards stat");
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'}, {"ingest-jobs", required_argument, 0, 'J'}, SHARDS_COMMON_LONGOPTS, {0}};
    TfOpts o = {.prog = k.prog, .argc = argc, .argv = argv, .shortopts = "hX:", .longopts = opts};
    int json = 0, c;
    const char *jobs_dir = NULL;
    while ((c = tf_opts_next(&o)) != -1) {
        if (c == 'h') {
            fputs(STAT_HELP, stdout);
            return TF_EXIT_OK;
        } else if (c == 'j') {
            json = 1;
        } else if (c == 'J') {
            jobs_dir = o.arg;
        } else if (c == '?' || shards_cli_common(&k, c, o.arg) <= 0) {
            return TF_EXIT_USAGE;
        }
    }
    const char *path = one_path(&k, &o);
    if (!path)
        return TF_EXIT_USAGE;
    const TfStopFlag *stop = tf_cli_stop_flag();
    TfError err = {{0}};
    RecordSourceOptions ro = {.decode = 1, .stop = stop};
    RecordSource *src = shards_cli_open(&k, path, &ro, &err);
    if (!src) {
        fprintf(stderr, "%s: %s\n", k.prog, err.msg);
        shards_cli_deinit(&k);
        return TF_EXIT_FAIL;
    }
    Counter means = {0}, logvars = {0}, hosts = {0}, formats = {0}, images = {0}, orient = {0};
    Series caption = {0}, tokens = {0}, short_side = {0};
    uint64_t records = 0, damaged = 0, bytes = 0, with_url = 0, with_sha = 0;
    TfProgress prog;
    tf_progress_init(&prog, "stat", 0, "records");
    Record rec;
    ShardProblem p;
    int rc, status = TF_EXIT_OK;
    while ((k.limit < 0 || (long)records < k.limit) &&
           (rc = record_source_next(src, &rec, 1000, &p, &err)) != RECORD_SOURCE_END) {
        if (tf_stop_requested(stop)) {
            status = TF_EXIT_STOPPED;
            break;
        }
        if (rc < 0) {
            fprintf(stderr, "%s: %s\n", k.prog, err.msg);
            status = TF_EXIT_FAIL;
            break;
        }
        if (rc == RECORD_SOURCE_PROBLEM) {
            damaged++;
            continue;
        }
        if (rc != RECORD_SOURCE_RECORD)
            continue;
        const Sample *s = rec.sample;
        records++;
        bytes += rec.len;
        char desc[128];
        if (s->latent_mean) {
            tensor_desc(s->latent_mean, desc, sizeof desc);
            counter_add(&means, desc);
        } else
            counter_add(&means, "absent");
        if (s->latent_logvar) {
            tensor_desc(s->latent_logvar, desc, sizeof desc);
            counter_add(&logvars, desc);
        } else
            counter_add(&logvars, "absent");
        series_add(&caption, (uint32_t)strlen(s->caption ? s->caption : ""));
        series_add(&tokens, (uint32_t)s->n_tokens);
        if (s->image) {
            snprintf(desc, sizeof desc, "%s %ux%u", *s->image->format ? s->image->format : "?", s->image->width,
                     s->image->height);
            counter_add(&images, desc);
        }
        Transfuse__V1__Provenance *pv = s->provenance;
        if (pv) {
            if (pv->source_url && *pv->source_url) {
                with_url++;
                url_host(pv->source_url, desc, sizeof desc);
                counter_add(&hosts, desc);
            }
            with_sha += pv->sha256.len == 32;
            counter_add(&formats, pv->original_format && *pv->original_format ? pv->original_format : "unknown");
            snprintf(desc, sizeof desc, "%u", pv->exif_orientation);
            counter_add(&orient, desc);
            if (pv->original_width && pv->original_height)
                series_add(&short_side,
                           pv->original_width < pv->original_height ? pv->original_width : pv->original_height);
        }
        if ((records & 1023) == 0)
            tf_progress_update(&prog, records);
    }
    tf_progress_finish(&prog, records);
    const RecordShard *shards;
    size_t n_shards = record_source_shards(src, &shards);
    json_t *out = json_pack(
        "{s:s,s:I,s:I,s:I,s:I,s:o,s:o,s:o,s:o,s:o,s:{s:I,s:I,s:I,s:o,s:o,s:o,s:o}}", "path", path, "shards",
        (json_int_t)n_shards, "records", (json_int_t)records, "damaged_records", (json_int_t)damaged, "bytes",
        (json_int_t)bytes, "latent_mean", counter_json(&means, 10), "latent_logvar", counter_json(&logvars, 10),
        "caption_bytes", series_json(&caption), "tokens", series_json(&tokens), "images", counter_json(&images, 10),
        "provenance", "with_source_url", (json_int_t)with_url, "with_sha256", (json_int_t)with_sha, "distinct_hosts",
        (json_int_t)(hosts.n + hosts.overflow), "top_hosts", counter_json(&hosts, 5), "original_formats",
        counter_json(&formats, 10), "exif_orientation", counter_json(&orient, 9), "original_short_side",
        series_json(&short_side));
    const ShardFacts *f = record_source_facts(src);
    int have_facts = record_source_has_manifest(src) || record_source_is_kafka(src);
    if (have_facts)
        json_object_set_new(out, "facts", shard_facts_to_json(f));
    char jobs_path[4096] = "";
    if (jobs_dir)
        snprintf(jobs_path, sizeof jobs_path, "%s", jobs_dir);
    else if (!record_source_is_kafka(src) && tf_path_join(jobs_path, sizeof jobs_path, path, "ingest-jobs"))
        jobs_path[0] = 0;
    json_t *ingest_sum = jobs_path[0] ? ingest_jobs_summary(jobs_path) : NULL;
    if (ingest_sum)
        json_object_set_new(out, "ingest", ingest_sum);
    if (json) {
        json_print(out);
    } else {
        char hb[32];
        human_bytes(bytes, hb, sizeof hb);
        printf("%-16s %s\n", "path", path);
        printf("%-16s %zu shards, %llu records, %s of records", "totals", n_shards, (unsigned long long)records, hb);
        if (damaged)
            printf(" (%llu damaged records: run shards verify)", (unsigned long long)damaged);
        putchar('\n');
        if (have_facts) {
            printf("%-16s %s %s\n", "tokenizer", *f->tokenizer_id ? f->tokenizer_id : "(not recorded)",
                   f->tokenizer_name);
            printf("%-16s %s %s (scaling %g, shift %g)\n", "vae", *f->vae_id ? f->vae_id : "(not recorded)",
                   f->vae_name, f->latent_scaling, f->latent_shift);
        }
        print_counter("latent_mean", json_object_get(out, "latent_mean"));
        print_counter("latent_logvar", json_object_get(out, "latent_logvar"));
        print_series("caption bytes", json_object_get(out, "caption_bytes"));
        print_series("tokens", json_object_get(out, "tokens"));
        print_counter("images", json_object_get(out, "images"));
        json_t *pv = json_object_get(out, "provenance");
        printf("%-16s %llu with source URL from %llu hosts, %llu with sha256\n", "provenance",
               (unsigned long long)with_url, (unsigned long long)(hosts.n + hosts.overflow),
               (unsigned long long)with_sha);
        print_counter("top hosts", json_object_get(pv, "top_hosts"));
        print_counter("orig. formats", json_object_get(pv, "original_formats"));
        print_counter("exif applied", json_object_get(pv, "exif_orientation"));
        print_series("orig. short side", json_object_get(pv, "original_short_side"));
        if (ingest_sum)
            print_ingest_summary(ingest_sum);
    }
    json_decref(out);
    counter_free(&means);
    counter_free(&logvars);
    counter_free(&hosts);
    counter_free(&formats);
    counter_free(&images);
    counter_free(&orient);
    free(caption.v);
    free(tokens.v);
    free(short_side.v);
    record_source_free(src);
    shards_cli_deinit(&k);
    return status;
}

/* ---- cat ---- */

static const char CAT_HELP[] =
    "usage: transfuse shards cat [options] PATH\n\n"
    "Prints records of a dataset folder, one shard file or a topic range as\n"
    "JSON lines on stdout, in the record source's order (folders: manifest\n"
    "order; topics: offset order within each partition, partitions interleaved\n"
    "as they arrive, up to the high watermarks seen at start unless --follow).\n"
    "The JSON form uses the proto field names of transfuse.v1.Sample; bytes\n"
    "fields (tensor data, sha256, images) are base64; enums by name; fields at\n"
    "their default value are left out. Damaged records are reported on stderr\n"
    "with their location and skipped (exit 1).\n\n"
    "  --index N        folders: only record N (0-based, counted across the dataset)\n"
    "  --key K          folders: only the record whose key is K\n"
    "  --fields A,B     only these top-level fields (e.g. key,caption,tokens)\n"
    "  --meta           add where each record lies: \"_shard\" and \"_record\" (folders),\n"
    "                   \"_partition\" and \"_offset\" (topics)\n"
    "  --raw            write one record's payload bytes instead (folders: needs\n"
    "                   --index or --key; topics: the first record of the range),\n"
    "                   e.g. for: protoc --decode transfuse.v1.Sample\n" SHARDS_RANGE_HELP;

/* Finds record `index` (across the folder) or the record with `key`. */
static int find_record(const RecordShard *shards, size_t n, int64_t index, const char *key, ShardFile **file_out,
                       uint64_t *rec_out, TfError *err)
{
    for (size_t i = 0; i < n; i++) {
        ShardFile *f = shard_file_open(shards[i].path, err);
        if (!f)
            return -1;
        int64_t r = -1;
        if (key) {
            r = shard_file_find_key(f, key);
            if (r < 0 && shard_file_index_count(f) < 0) { /* no index: scan */
                ShardCursor c;
                shard_cursor_init(&c, f);
                const uint8_t *p;
                size_t len;
                int rc;
                while (r < 0 && (rc = shard_cursor_next(&c, &p, &len, NULL)) != 0) {
                    const char *k;
                    size_t kl;
                    if (rc > 0 && sample_peek_key(p, len, &k, &kl) == 1 && kl == strlen(key) && !memcmp(k, key, kl))
                        r = (int64_t)c.record - 1;
                }
            }
        } else {
            int64_t count = shard_file_index_count(f);
            if (count < 0) {
                tf_fail(err, "%s: %s: --index needs the index (use cat without --index)", shards[i].path,
                        shard_file_index_problem(f));
                shard_file_free(f);
                return -1;
            }
            if (index < count)
                r = index;
            else
                index -= count;
        }
        if (r >= 0) {
            *file_out = f;
            *rec_out = (uint64_t)r;
            return 0;
        }
        shard_file_free(f);
    }
    return tf_fail(err, key ? "no record has key '%s'" : "index is past the last record%s", key ? key : "");
}

/* Splits "a,b,c" into a NULL-terminated list (one allocation). */
static char **split_fields(const char *spec)
{
    size_t n = 1;
    for (const char *p = spec; *p; p++)
        n += *p == ',';
    char **list = malloc((n + 1) * sizeof *list + strlen(spec) + 1);
    if (!list)
        return NULL;
    char *copy = (char *)(list + n + 1);
    strcpy(copy, spec);
    size_t k = 0;
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ","))
        list[k++] = tok;
    list[k] = NULL;
    return list;
}

/* Prints one record as a JSON line (with where it lies under --meta). */
static void print_record(const Sample *s, const char *const *fields, const Record *where)
{
    json_t *j = shard_message_to_json(&s->base, fields);
    if (where && where->partition >= 0) {
        json_object_set_new(j, "_partition", json_integer(where->partition));
        json_object_set_new(j, "_offset", json_integer((json_int_t)where->offset));
    } else if (where) {
        json_object_set_new(j, "_shard", json_string(where->shard));
        json_object_set_new(j, "_record", json_integer((json_int_t)where->record));
    }
    json_print(j);
    json_decref(j);
}

static int cat_one(const char *prog, const char *path, int64_t index, const char *key, int raw,
                   const char *const *fields)
{
    TfError err = {{0}};
    RecordSourceOptions ro = {.path = path};
    RecordSource *src = record_source_open(&ro, &err);
    if (!src) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return TF_EXIT_FAIL;
    }
    const RecordShard *shards;
    size_t n = record_source_shards(src, &shards);
    ShardFile *f = NULL;
    uint64_t rec = 0;
    const uint8_t *payload;
    size_t len;
    ShardProblem p;
    int status = TF_EXIT_OK;
    if (find_record(shards, n, index, key, &f, &rec, &err)) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        status = TF_EXIT_CHECK;
    } else if (shard_file_get(f, rec, &payload, &len, &p) != 1) {
        char line[1024];
        shard_problem_format(&p, line, sizeof line);
        fprintf(stderr, "%s: %s\n", prog, line);
        status = TF_EXIT_CHECK;
    } else if (raw) {
        status = fwrite(payload, 1, len, stdout) == len ? TF_EXIT_OK : TF_EXIT_FAIL;
    } else {
        Sample *s = sample_decode(payload, len, NULL, NULL);
        if (s)
            print_record(s, fields, NULL);
        else {
            fprintf(stderr, "%s: %s: record %llu does not parse\n", prog, shard_file_path(f),
                    (unsigned long long)rec);
            status = TF_EXIT_CHECK;
        }
        sample_free(s);
    }
    shard_file_free(f);
    record_source_free(src);
    return status;
}

static int cmd_cat(int argc, char **argv)
{
    ShardsCli k = SHARDS_CLI_INIT("transfuse shards cat");
    int64_t index = -1;
    const char *key = NULL, *fields_spec = NULL;
    int raw = 0, meta = 0;
    static const struct option opts[] = {{"index", required_argument, 0, 'i'}, {"key", required_argument, 0, 'k'},
                                         {"fields", required_argument, 0, 'f'}, {"raw", no_argument, 0, 'r'},
                                         {"meta", no_argument, 0, 'm'},         SHARDS_COMMON_LONGOPTS,
                                         {0}};
    TfOpts o = {.prog = k.prog, .argc = argc, .argv = argv, .shortopts = "hX:", .longopts = opts};
    TfError err = {{0}};
    int c;
    long v;
    while ((c = tf_opts_next(&o)) != -1) {
        switch (c) {
        case 'i':
            if (tf_parse_long("--index", o.arg, 0, LONG_MAX, &v, &err))
                return shards_cli_usage(&k, err.msg);
            index = v;
            break;
        case 'k': key = o.arg; break;
        case 'f': fields_spec = o.arg; break;
        case 'r': raw = 1; break;
        case 'm': meta = 1; break;
        case 'h': fputs(CAT_HELP, stdout); return TF_EXIT_OK;
        case '?': return TF_EXIT_USAGE;
        default:
            if (shards_cli_common(&k, c, o.arg) <= 0)
                return TF_EXIT_USAGE;
        }
    }
    const char *path = one_path(&k, &o);
    if (!path)
        return TF_EXIT_USAGE;
    int topic = kafka_url_is(path);
    if (index >= 0 && key)
        return shards_cli_usage(&k, "--index and --key are alternatives");
    if (topic && (index >= 0 || key))
        return shards_cli_usage(&k, "--index and --key work on folders; use --partition and --offset on a topic");
    if (raw && !topic && index < 0 && !key)
        return shards_cli_usage(&k, "--raw writes one record: give --index or --key");
    if (raw && isatty(STDOUT_FILENO))
        return shards_cli_usage(&k, "--raw writes binary; redirect stdout to a file or a pipe");
    char **fields = fields_spec ? split_fields(fields_spec) : NULL;
    for (char **f = fields; f && *f; f++) /* reject unknown names before any output */
        if (!protobuf_c_message_descriptor_get_field_by_name(&transfuse__v1__sample__descriptor, *f)) {
            fprintf(stderr, "%s: --fields: transfuse.v1.Sample has no field '%s'\n", k.prog, *f);
            free(fields);
            return TF_EXIT_USAGE;
        }
    if (index >= 0 || key) {
        int status = cat_one(k.prog, path, index, key, raw, (const char *const *)fields);
        free(fields);
        fflush(stdout);
        return status;
    }
    const TfStopFlag *stop = tf_cli_stop_flag();
    RecordSourceOptions ro = {.decode = !raw, .stop = stop};
    RecordSource *src = shards_cli_open(&k, path, &ro, &err);
    if (!src) {
        fprintf(stderr, "%s: %s\n", k.prog, err.msg);
        free(fields);
        shards_cli_deinit(&k);
        return TF_EXIT_FAIL;
    }
    long printed = 0;
    int status = TF_EXIT_OK, rc;
    Record rec;
    ShardProblem p;
    while ((k.limit < 0 || printed < k.limit) &&
           (rc = record_source_next(src, &rec, 1000, &p, &err)) != RECORD_SOURCE_END) {
        if (tf_stop_requested(stop)) {
            status = status ? status : TF_EXIT_STOPPED;
            break;
        }
        if (rc < 0) {
            fprintf(stderr, "%s: %s\n", k.prog, err.msg);
            status = TF_EXIT_FAIL;
            break;
        }
        if (rc == RECORD_SOURCE_PROBLEM) {
            char line[1024];
            shard_problem_format(&p, line, sizeof line);
            fprintf(stderr, "%s: %s\n", k.prog, line);
            status = TF_EXIT_CHECK;
            continue;
        }
        if (rc != RECORD_SOURCE_RECORD)
            continue;
        if (raw) {
            fwrite(rec.payload, 1, rec.len, stdout);
            printed++;
            break;
        }
        print_record(rec.sample, (const char *const *)fields, meta ? &rec : NULL);
        printed++;
    }
    if (raw && !printed) {
        fprintf(stderr, "%s: the range holds no record\n", k.prog);
        status = TF_EXIT_CHECK;
    }
    fflush(stdout);
    free(fields);
    record_source_free(src);
    shards_cli_deinit(&k);
    return status;
}

/* ---- import ---- */

static const char IMPORT_HELP[] =
    "usage: transfuse shards import --out DIR [options] < records.jsonl\n\n"
    "Reads JSON lines in the form `shards cat` prints (proto field names,\n"
    "bytes in base64; at least `key` per record) and writes them to shard files\n"
    "with index and manifest in DIR (created if needed; an existing dataset is\n"
    "appended to, after its facts are checked). Bad lines are reported with\n"
    "their line number and skipped (exit 1), or abort the import with --strict\n"
    "(the shard in progress is then discarded, never published).\n\n"
    "  --out DIR             dataset folder (required)\n"
    "  --shard-size SIZE     roll shards at this many bytes (default 256Mi; 256M is 256,000,000)\n"
    "  --shard-records N     roll shards at this many records (default 100000)\n"
    "  --prefix NAME         shard file names NAME-NNNNNN.tfrecord (default shard)\n"
    "  --facts FILE          dataset facts as JSON, in the manifest's \"facts\" form\n"
    "  --tokenizer-id ID     tokenizer identity to record (overrides --facts)\n"
    "  --vae-id ID           VAE identity to record (overrides --facts)\n"
    "  --strict              stop at the first bad line\n"
    "Latent dtype and shape are taken from the first record that has a latent\n"
    "when the facts do not give them.\n";

static void print_usage_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "transfuse shards %s: %s (see transfuse shards %s --help)\n", cmd, msg, cmd);
}

static int cmd_import(int argc, char **argv)
{
    const char *out = NULL, *facts_path = NULL, *tok_id = NULL, *vae_id = NULL;
    ShardWriterOptions wo = {0};
    int strict = 0;
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},          {"shard-size", required_argument, 0, 's'},
        {"shard-records", required_argument, 0, 'n'}, {"prefix", required_argument, 0, 'p'},
        {"facts", required_argument, 0, 'F'},        {"tokenizer-id", required_argument, 0, 't'},
        {"vae-id", required_argument, 0, 'v'},       {"strict", no_argument, 0, 'S'},
        {"help", no_argument, 0, 'h'},               {0}};
    TfError err = {{0}};
    int c;
    long v;
    TfOpts o = {.prog = "transfuse shards import", .argc = argc, .argv = argv, .shortopts = "ho:", .longopts = opts};
    while ((c = tf_opts_next(&o)) != -1) {
        switch (c) {
        case 'o': out = o.arg; break;
        case 's':
            if (tf_parse_size("--shard-size", o.arg, &wo.max_shard_bytes, &err) || wo.max_shard_bytes < 1000) {
                print_usage_error("import", err.msg[0] ? err.msg : "--shard-size must be at least 1K");
                return TF_EXIT_USAGE;
            }
            break;
        case 'n':
            if (tf_parse_long("--shard-records", o.arg, 1, LONG_MAX, &v, &err)) {
                print_usage_error("import", err.msg);
                return TF_EXIT_USAGE;
            }
            wo.max_shard_records = (uint64_t)v;
            break;
        case 'p': wo.name_prefix = o.arg; break;
        case 'F': facts_path = o.arg; break;
        case 't': tok_id = o.arg; break;
        case 'v': vae_id = o.arg; break;
        case 'S': strict = 1; break;
        case 'h': fputs(IMPORT_HELP, stdout); return TF_EXIT_OK;
        default: return TF_EXIT_USAGE;
        }
    }
    if (!out || o.first_operand != argc) {
        print_usage_error("import", out ? "takes no positional arguments (records come on stdin)" : "--out DIR is required");
        return TF_EXIT_USAGE;
    }
    ShardFacts facts = {0};
    if (facts_path) {
        json_t *fj = tf_json_load_file(facts_path, 1 << 20, &err);
        if (!fj || shard_facts_from_json(fj, &facts, &err)) {
            json_decref(fj);
            fprintf(stderr, "transfuse shards import: --facts %s: %s\n", facts_path, err.msg);
            return TF_EXIT_USAGE;
        }
        json_decref(fj);
    }
    if (tok_id)
        snprintf(facts.tokenizer_id, sizeof facts.tokenizer_id, "%s", tok_id);
    if (vae_id)
        snprintf(facts.vae_id, sizeof facts.vae_id, "%s", vae_id);

    ShardWriter *w = NULL;
    char why[320];
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    uint64_t lineno = 0, bad = 0, good = 0;
    int status = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        lineno++;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        if (!n)
            continue;
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)n, 0, &je);
        Sample *s = NULL;
        if (!j) {
            tf_fail(&err, "column %d: %s", je.column, je.text);
        } else if (!(s = (Sample *)shard_message_from_json(&transfuse__v1__sample__descriptor, j, &err))) {
            /* err filled */
        } else if (!s->key || !*s->key) {
            tf_fail(&err, "record has no \"key\"");
        } else if (sample_check(s, &facts, why, sizeof why)) {
            tf_fail(&err, "%s", why);
        } else {
            err.msg[0] = 0;
        }
        json_decref(j);
        if (err.msg[0]) {
            fprintf(stderr, "transfuse shards import: line %llu: %s\n", (unsigned long long)lineno, err.msg);
            sample_free(s);
            err.msg[0] = 0;
            bad++;
            status = TF_EXIT_CHECK;
            if (strict)
                goto abort;
            continue;
        }
        if (!w) { /* facts the flags did not give come from the first record */
            if (!*facts.latent_dtype && s->latent_mean) {
                snprintf(facts.latent_dtype, sizeof facts.latent_dtype, "%s", sample_dtype_name(s->latent_mean->dtype));
                facts.latent_rank = s->latent_mean->n_shape <= 4 ? (int)s->latent_mean->n_shape : 0;
                for (int k = 0; k < facts.latent_rank; k++)
                    facts.latent_shape[k] = s->latent_mean->shape[k];
            }
            if (!(w = shard_writer_open(out, &wo, &facts, &err))) {
                fprintf(stderr, "transfuse shards import: %s\n", err.msg);
                sample_free(s);
                status = TF_EXIT_FAIL;
                goto abort;
            }
        }
        if (shard_writer_append_sample(w, s, &err)) {
            fprintf(stderr, "transfuse shards import: %s\n", err.msg);
            sample_free(s);
            status = TF_EXIT_FAIL;
            goto abort;
        }
        sample_free(s);
        good++;
    }
    if (!w && !(w = shard_writer_open(out, &wo, &facts, &err))) {
        fprintf(stderr, "transfuse shards import: %s\n", err.msg);
        status = TF_EXIT_FAIL;
        goto abort;
    }
    uint64_t shards_written = 0;
    if (shard_writer_flush(w, &err)) {
        fprintf(stderr, "transfuse shards import: %s\n", err.msg);
        status = TF_EXIT_FAIL;
        goto abort;
    }
    shards_written = shard_writer_shards(w);
    fprintf(stderr, "imported %llu records into %llu new shard%s in %s%s%llu bad line%s\n", (unsigned long long)good,
            (unsigned long long)shards_written, shards_written == 1 ? "" : "s", out, bad ? "; " : "; ",
            (unsigned long long)bad, bad == 1 ? "" : "s");
abort:
    shard_writer_free(w);
    free(line);
    return status;
}

/* ---- dispatch ---- */

static const TfCommand SHARDS_COMMANDS[] = {
    {"ls", "list a folder's shards (records, bytes, checksum, state) or a topic's partitions and lag", cmd_ls},
    {"stat", "totals, latent shapes, caption/token distributions, provenance", cmd_stat},
    {"verify", "check every CRC, parse, key and count; exit 1 on any problem", cmd_verify},
    {"cat", "print records as JSON lines, or one record's raw bytes", cmd_cat},
    {"import", "write JSON lines from stdin into a dataset folder", cmd_import},
    {"publish", "publish a dataset folder to a topic (DIR --to kafka://...)", shards_cmd_publish},
    {"archive", "write a topic into shard files with a manifest (--out DIR), each record once", shards_cmd_archive},
    {"create", "create a topic on a real cluster (--partitions N)", shards_cmd_create},
};

int shards_dispatch(int argc, char **argv, const TfCommand *extra, size_t n_extra)
{
    size_t n = sizeof SHARDS_COMMANDS / sizeof SHARDS_COMMANDS[0];
    TfCommand all[32];
    if (n + n_extra > sizeof all / sizeof all[0])
        n_extra = sizeof all / sizeof all[0] - n;
    memcpy(all, SHARDS_COMMANDS, n * sizeof all[0]);
    if (n_extra)
        memcpy(all + n, extra, n_extra * sizeof all[0]);
    return tf_cli_dispatch("transfuse shards",
                           "PATH is a dataset folder (shard files + manifest.json), one shard file, or a Kafka\n"
                           "topic kafka://HOST:PORT/TOPIC; ls, stat, verify and cat read all three alike.",
                           "Run `transfuse shards <command> --help` for its options.\n", all, n + n_extra, argc,
                           argv);
}

int shards_main(int argc, char **argv)
{
    return shards_dispatch(argc, argv, NULL, 0);
}
