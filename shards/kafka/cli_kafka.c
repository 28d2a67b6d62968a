/* cli_kafka.c: the `transfuse shards` commands that only make sense with a
 * topic (shards/cli.c reads topics and folders alike for cat, stat and
 * verify, through the record source):
 *   ls       (of kafka://...) partitions, leaders, low/high watermarks, and
 *            per consumer group the committed offsets and lag
 *   publish  a dataset folder to a topic; a shard's done marker (keyed by
 *            the cluster's id and the topic) is written only after every
 *            delivery report for it succeeded
 *   archive  a topic to shard files with a manifest, each record once even
 *            across interrupted runs (positions stored with each shard)
 *   create   a topic through the admin API (real clusters) */
#include "cli_internal.h"
#include "kafka_internal.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_GROUPS 32

/* ---- ls ---- */

int shards_kafka_ls(ShardsCli *k, const char *url, const char *const *groups_given, size_t n_groups, int json)
{
    char bootstrap[1024], topic[256];
    TfError err = {{0}};
    if (kafka_url_parse(url, bootstrap, sizeof bootstrap, topic, sizeof topic, &err))
        return shards_cli_usage(k, err.msg);
    const char *groups[MAX_GROUPS];
    for (size_t i = 0; i < n_groups; i++)
        groups[i] = groups_given[i];
    KafkaTopicInfo info;
    if (kafka_topic_describe(bootstrap, topic, k->config, &info, &err)) {
        fprintf(stderr, "transfuse shards ls: %s\n", err.msg);
        return TF_EXIT_FAIL;
    }
    char **listed = NULL;
    char group_note[600] = "";
    if (n_groups == 0) {
        TfError gerr = {{0}};
        listed = kafka_group_list(bootstrap, k->config, &gerr);
        if (!listed)
            snprintf(group_note, sizeof group_note, "%s; name groups with --group", gerr.msg);
        for (size_t i = 0; listed && listed[i] && n_groups < MAX_GROUPS; i++)
            groups[n_groups++] = listed[i];
    }
    int rc = 0;
    json_t *jparts = json_array(), *jgroups = json_array();
    uint64_t total = 0;
    for (size_t i = 0; i < info.n; i++) {
        const KafkaPartitionInfo *p = &info.parts[i];
        total += (uint64_t)(p->high - p->low);
        json_array_append_new(jparts, json_pack("{s:i,s:i,s:I,s:I,s:I}", "partition", p->partition, "leader",
                                                p->leader, "low", (json_int_t)p->low, "high", (json_int_t)p->high,
                                                "records", (json_int_t)(p->high - p->low)));
    }
    if (!json) {
        printf("topic %s at %s: %zu partition%s, %d broker%s%s, %" PRIu64 " records retained\n", topic, bootstrap,
               info.n, info.n == 1 ? "" : "s", info.brokers, info.brokers == 1 ? "" : "s",
               info.is_mock ? " (librdkafka mock cluster: in memory, ~5 MiB kept per partition)" : "", total);
        printf("%9s %6s %12s %12s %12s\n", "PARTITION", "LEADER", "LOW", "HIGH", "RECORDS");
        for (size_t i = 0; i < info.n; i++)
            printf("%9d %6d %12" PRId64 " %12" PRId64 " %12" PRId64 "\n", info.parts[i].partition,
                   info.parts[i].leader, info.parts[i].low, info.parts[i].high, info.parts[i].high - info.parts[i].low);
    }
    for (size_t g = 0; g < n_groups; g++) {
        KafkaPosition *pos = kafka_group_committed(bootstrap, topic, groups[g], k->config, &err);
        if (!pos) {
            fprintf(stderr, "transfuse shards ls: %s\n", err.msg);
            rc = TF_EXIT_FAIL;
            continue;
        }
        json_t *jp = json_array();
        int64_t lag_total = 0;
        if (!json)
            printf("\ngroup %s\n%9s %12s %12s\n", groups[g], "PARTITION", "COMMITTED", "LAG");
        for (size_t i = 0; i < info.n; i++) {
            int64_t off = kafka_position_get(pos, info.parts[i].partition);
            /* No commit yet: everything retained is lag. */
            int64_t lag = off >= 0 ? info.parts[i].high - off : info.parts[i].high - info.parts[i].low;
            lag_total += lag;
            json_array_append_new(jp, json_pack("{s:i,s:I,s:I}", "partition", info.parts[i].partition, "committed",
                                                (json_int_t)off, "lag", (json_int_t)lag));
            if (!json) {
                char cb[24];
                snprintf(cb, sizeof cb, off >= 0 ? "%" PRId64 : "-", off);
                printf("%9d %12s %12" PRId64 "\n", info.parts[i].partition, cb, lag);
            }
        }
        if (!json)
            printf("%9s %12s %12" PRId64 "\n", "total", "", lag_total);
        json_array_append_new(jgroups,
                              json_pack("{s:s,s:I,s:o}", "group", groups[g], "lag", (json_int_t)lag_total, "partitions", jp));
        kafka_position_free(pos);
    }
    if (json) {
        json_t *out = json_pack("{s:s,s:s,s:s,s:b,s:i,s:I,s:o,s:o}", "topic", topic, "bootstrap", bootstrap,
                                "cluster_id", info.cluster_id, "mock", info.is_mock, "brokers", info.brokers,
                                "records", (json_int_t)total, "partitions", jparts, "groups", jgroups);
        if (group_note[0])
            json_object_set_new(out, "groups_note", json_string(group_note));
        json_dumpf(out, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(out);
    } else {
        if (group_note[0])
            printf("\ngroups: %s\n", group_note);
        json_decref(jparts);
        json_decref(jgroups);
    }
    kafka_strings_free(listed);
    kafka_topic_info_deinit(&info);
    return rc;
}

/* ---- publish ---- */

static const char PUBLISH_HELP[] =
    "usage: transfuse shards publish DIR --to kafka://HOST:PORT/TOPIC [options]\n\n"
    "Publishes the records of a dataset folder (its manifest's shards, in\n"
    "order) to a topic: value = record bytes, key = sample key, headers naming\n"
    "the schema and the manifest's tokenizer and VAE identity, through an\n"
    "idempotent producer. A shard counts as published only when every delivery\n"
    "report for it succeeded; then DIR/.published/CLUSTER/TOPIC/SHARD.done is\n"
    "written, keyed by the cluster's id (from its metadata) so that a new\n"
    "cluster, such as a restarted `transfuse broker` (memory only), gets\n"
    "everything again. A rerun skips shards with a done marker, so an\n"
    "interrupted publish resumes at the first unfinished shard (whose records\n"
    "may then appear twice). Damaged records are reported and not sent; their\n"
    "shard gets no done marker (exit 1).\n\n"
    "  --to URL            kafka://HOST:PORT/TOPIC (the topic must exist)\n"
    "  --flow-group G      wait so that no partition runs more than --flow-max\n"
    "                      bytes ahead of what group G has committed (needed with\n"
    "                      `transfuse broker`, which drops data beyond ~5 MiB per\n"
    "                      partition)\n"
    "  --flow-max SIZE     default 3Mi\n"
    "  --force             publish shards that have a done marker again\n"
    "  --metrics-port N    serve Prometheus metrics on 127.0.0.1:N/metrics (0: off)\n"
    "  --metrics-addr A    address for the metrics port (default 127.0.0.1)\n"
    "  -X key=value        librdkafka property (repeatable), e.g. -X linger.ms=50\n";

static int write_marker(const char *path, const char *bootstrap, uint64_t records, uint64_t bytes, TfError *err)
{
    json_t *j = json_pack("{s:s,s:I,s:I}", "bootstrap", bootstrap, "records", (json_int_t)records, "bytes",
                          (json_int_t)bytes);
    int rc = tf_json_write_file_atomic(path, j, err);
    json_decref(j);
    return rc;
}

/* A file-name-safe form of a cluster id ("" becomes "unknown-cluster"). */
static void safe_name(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    for (; *in && n + 1 < cap; in++)
        out[n++] = (*in >= 'a' && *in <= 'z') || (*in >= 'A' && *in <= 'Z') || (*in >= '0' && *in <= '9') ||
                           *in == '-' || *in == '_' || *in == '.'
                       ? *in
                       : '_';
    out[n] = 0;
    if (!n || !strcmp(out, ".") || !strcmp(out, ".."))
        snprintf(out, cap, "unknown-cluster");
}

typedef struct PublishFilter {
    const char *marker_dir;
    int force;
    uint64_t skipped, skipped_bytes;
    const RecordShard *shards;
} PublishFilter;

/* Shards with a done marker are not read again (unless --force). */
static int publish_wanted(void *ctx, const char *name, size_t index)
{
    PublishFilter *f = ctx;
    char marker[4600];
    snprintf(marker, sizeof marker, "%s/%s.done", f->marker_dir, name);
    struct stat st;
    if (f->force || stat(marker, &st) != 0)
        return 1;
    f->skipped++;
    return 0;
}

typedef struct PublishMetrics {
    TfCounter *records, *bytes, *shards, *failures, *bad;
} PublishMetrics;

int shards_cmd_publish(int argc, char **argv)
{
    ShardsCli k = SHARDS_CLI_INIT("transfuse shards publish");
    const char *to = NULL, *flow_group = NULL, *metrics_addr = NULL;
    uint64_t flow_max = 0;
    long metrics_port = 0;
    int force = 0;
    static const struct option opts[] = {{"to", required_argument, 0, 't'},
                                         {"flow-group", required_argument, 0, 'G'},
                                         {"flow-max", required_argument, 0, 'M'},
                                         {"force", no_argument, 0, 'F'},
                                         {"metrics-port", required_argument, 0, 'm'},
                                         {"metrics-addr", required_argument, 0, 'a'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    TfOpts o = {.prog = k.prog, .argc = argc, .argv = argv, .shortopts = "hX:", .longopts = opts};
    TfError err = {{0}};
    int c;
    while ((c = tf_opts_next(&o)) != -1) {
        switch (c) {
        case 'h': fputs(PUBLISH_HELP, stdout); return TF_EXIT_OK;
        case 't': to = o.arg; break;
        case 'G': flow_group = o.arg; break;
        case 'F': force = 1; break;
        case 'a': metrics_addr = o.arg; break;
        case 'M':
            if (tf_parse_size("--flow-max", o.arg, &flow_max, &err))
                return shards_cli_usage(&k, err.msg);
            break;
        case 'm':
            if (tf_parse_long("--metrics-port", o.arg, 0, 65535, &metrics_port, &err))
                return shards_cli_usage(&k, err.msg);
            break;
        case 'X':
            if (shards_cli_common(&k, c, o.arg) <= 0)
                return TF_EXIT_USAGE;
            break;
        default: return TF_EXIT_USAGE;
        }
    }
    char bootstrap[1024], topic[256];
    if (o.first_operand != argc - 1 || !to)
        return shards_cli_usage(&k, "needs DIR and --to kafka://HOST:PORT/TOPIC");
    if (kafka_url_parse(to, bootstrap, sizeof bootstrap, topic, sizeof topic, &err))
        return shards_cli_usage(&k, err.msg);
    k.config[k.n_config] = NULL;
    const char *dir = argv[o.first_operand];
    const TfStopFlag *stop = tf_cli_stop_flag();
    ShardManifest *m = shard_manifest_load(dir, &err);
    if (!m) {
        fprintf(stderr, "%s: %s\n", k.prog, err.msg);
        return TF_EXIT_FAIL;
    }
    TfMetricsServer *metrics = NULL;
    if (metrics_port && !(metrics = tf_metrics_cli_start("shards", metrics_addr, metrics_port, &err))) {
        fprintf(stderr, "%s: %s\n", k.prog, err.msg);
        shard_manifest_free(m);
        return TF_EXIT_FAIL;
    }
    PublishMetrics pm = {
        tf_counter("transfuse_shards_publish_records_total", "Records delivered to the topic", "topic", topic, NULL),
        tf_counter("transfuse_shards_publish_bytes_total", "Record bytes delivered to the topic", "topic", topic,
                   NULL),
        tf_counter("transfuse_shards_publish_shards_total", "Shards completely delivered (done marker written)",
                   "topic", topic, NULL),
        tf_counter("transfuse_shards_publish_delivery_failures_total", "Records the broker did not accept", "topic",
                   topic, NULL),
        tf_counter("transfuse_shards_publish_bad_records_total", "Damaged records found and not sent", "topic",
                   topic, NULL)};
    KafkaTopicInfo info;
    if (kafka_topic_describe(bootstrap, topic, k.config, &info, &err)) {
        fprintf(stderr, "%s: %s\n", k.prog, err.msg);
        shard_manifest_free(m);
        tf_metrics_server_free(metrics);
        return TF_EXIT_FAIL;
    }
    char cluster[160];
    safe_name(info.cluster_id, cluster, sizeof cluster);
    kafka_topic_info_deinit(&info);
    KafkaSinkOptions so = {.bootstrap = bootstrap,
                           .topic = topic,
                           .facts = &m->facts,
                           .config = k.config,
                           .flow_group = flow_group,
                           .flow_max_bytes = flow_max,
                           .stop = stop};
    KafkaSink *sink = kafka_sink_new(&so, &err);
    char mdir[4600];
    snprintf(mdir, sizeof mdir, "%s/.published/%s/%s", dir, cluster, topic);
    PublishFilter pf = {.marker_dir = mdir, .force = force};
    RecordSourceOptions ro = {.path = dir, .shard_filter = publish_wanted, .filter_ctx = &pf, .stop = stop};
    RecordSource *src = NULL;
    if (!sink || tf_mkdir_p(mdir, &err) || !(src = record_source_open(&ro, &err))) {
        fprintf(stderr, "%s: %s\n", k.prog, err.msg);
        kafka_sink_free(sink);
        shard_manifest_free(m);
        tf_metrics_server_free(metrics);
        return TF_EXIT_FAIL;
    }
    const RecordShard *shards;
    record_source_shards(src, &shards);
    TfProgress prog;
    tf_progress_init(&prog, "publish", m->bytes, "B");
    uint64_t done_bytes = 0, sent = 0, bad_total = 0;
    /* The shard in hand: its records sent, bytes, damaged records. */
    size_t cur = SIZE_MAX;
    uint64_t n = 0, nbytes = 0, bad = 0;
    int status = TF_EXIT_OK, rc;
    double t0 = tf_now();
    Record rec;
    ShardProblem prob;
    for (;;) {
        rc = record_source_next(src, &rec, 1000, &prob, &err);
        int shard_done = cur != SIZE_MAX && (rc == RECORD_SOURCE_END || (rc == RECORD_SOURCE_RECORD &&
                                                                          rec.shard_index != cur));
        if (shard_done) {
            /* The unit of work: one shard. Done only when all of it landed. */
            uint64_t failed_before = kafka_sink_failed(sink);
            if (kafka_sink_flush(sink, -1, &err)) {
                tf_counter_add(pm.failures, kafka_sink_failed(sink) - failed_before);
                fprintf(stderr, "%s: %s: %s\n", k.prog, shards[cur].name, err.msg);
                status = TF_EXIT_FAIL;
                break;
            }
            sent += n;
            tf_counter_add(pm.records, n);
            tf_counter_add(pm.bytes, nbytes);
            done_bytes += shards[cur].entry ? shards[cur].entry->bytes : 0;
            if (!bad) {
                char marker[4800];
                snprintf(marker, sizeof marker, "%s/%s.done", mdir, shards[cur].name);
                if (write_marker(marker, bootstrap, n, nbytes, &err)) {
                    fprintf(stderr, "%s: %s\n", k.prog, err.msg);
                    status = TF_EXIT_FAIL;
                    break;
                }
                tf_counter_add(pm.shards, 1);
            }
            cur = SIZE_MAX;
            n = nbytes = bad = 0;
        }
        if (rc == RECORD_SOURCE_END)
            break;
        if (tf_stop_requested(stop))
            break;
        if (rc < 0) {
            fprintf(stderr, "%s: %s\n", k.prog, err.msg);
            status = TF_EXIT_FAIL;
            break;
        }
        if (rc == RECORD_SOURCE_PROBLEM) {
            char where[800];
            shard_problem_format(&prob, where, sizeof where);
            fprintf(stderr, "%s: %s (not published; the shard gets no done marker)\n", k.prog, where);
            bad++;
            bad_total++;
            tf_counter_add(pm.bad, 1);
            continue;
        }
        if (rc != RECORD_SOURCE_RECORD)
            continue;
        cur = rec.shard_index;
        if (!rec.key_len) {
            fprintf(stderr, "%s: %s: record %llu at byte %llu: record has no key (not published)\n", k.prog,
                    rec.shard, (unsigned long long)rec.record, (unsigned long long)rec.offset);
            bad++;
            bad_total++;
            tf_counter_add(pm.bad, 1);
            continue;
        }
        if (kafka_sink_send(sink, -1, rec.payload, rec.len, rec.key, rec.key_len, &err)) {
            fprintf(stderr, "%s: %s: %s\n", k.prog, rec.shard, err.msg);
            status = tf_stop_requested(stop) ? TF_EXIT_OK : TF_EXIT_FAIL;
            break;
        }
        n++;
        nbytes += rec.len;
        tf_progress_update(&prog, done_bytes + rec.offset);
    }
    tf_progress_finish(&prog, done_bytes);
    if (tf_stop_requested(stop) && status == TF_EXIT_OK) {
        kafka_sink_flush(sink, 30000, NULL);
        fprintf(stderr, "%s: stopped; rerun to continue (complete shards have their done marker)\n", k.prog);
        status = TF_EXIT_STOPPED;
    }
    if (status == TF_EXIT_OK && bad_total)
        status = TF_EXIT_CHECK;
    double dt = tf_now() - t0;
    fprintf(stderr,
            "%s: %llu records to %s in %.2f s (%.1f MB/s); %llu shard(s) already published; %llu damaged record(s)%s\n",
            k.prog, (unsigned long long)sent, topic, dt, dt > 0 ? (double)done_bytes / dt / 1e6 : 0.0,
            (unsigned long long)pf.skipped, (unsigned long long)bad_total,
            status == TF_EXIT_OK ? "" : status == TF_EXIT_STOPPED ? "; STOPPED" : "; FAILED");
    record_source_free(src);
    kafka_sink_free(sink);
    shard_manifest_free(m);
    tf_metrics_server_free(metrics);
    return status;
}

/* ---- archive ---- */

static const char ARCHIVE_HELP[] =
    "usage: transfuse shards archive kafka://HOST:PORT/TOPIC --out DIR [options]\n\n"
    "Writes the records of a topic (up to the high watermarks seen at start)\n"
    "into shard files with an index and a manifest in DIR (appending to a\n"
    "dataset already there when its facts agree). Each record is archived\n"
    "once, also across interrupted runs: every shard's manifest entry stores\n"
    "the topic position after its last record (with the cluster id), written\n"
    "atomically with the shard, and a rerun starts each partition after what\n"
    "DIR already holds (or later, at --offset or the group's offsets). With\n"
    "--group G the range starts at G's committed offsets when DIR holds none,\n"
    "and G's offsets are committed after each shard. Records are checked as\n"
    "`shards import` checks them (they parse, have a key equal to the message\n"
    "key, tensor sizes match dtype x shape, latents match the first record's\n"
    "dtype and shape, the value is not empty); bad ones are reported with\n"
    "partition and offset, counted and skipped (exit 1). The tokenizer and VAE\n"
    "identity come from the records' headers; records naming another identity\n"
    "than the first stop the archive (exit 3).\n\n"
    "  --out DIR           dataset folder to write\n"
    "  --prefix NAME       shard name prefix (default: the topic name)\n"
    "  --shard-size SIZE   roll shards at this size (default 256Mi)\n"
    "  --shard-records N   roll shards at this many records (default 100000)\n"
    "  --group G           start at (when DIR has no position) and commit to G's offsets\n"
    "  --metrics-port N    serve Prometheus metrics on 127.0.0.1:N/metrics (0: off)\n"
    "  --metrics-addr A    address for the metrics port (default 127.0.0.1)\n"
    "  --partition P       only partition P (repeatable; default all)\n"
    "  --offset O          start at offset O in each chosen partition (never before\n"
    "                      what DIR holds)\n"
    "  --limit N           stop after N records\n"
    "  -X key=value        librdkafka property (repeatable)\n";

/* The topic position DIR's manifest says its shards hold: for each
 * partition, the largest next offset stored by a shard archived from
 * `topic` on cluster `cluster`. Returns a new position (empty when DIR has
 * none), or NULL with err filled. */
static KafkaPosition *archived_position(const char *dir, const char *cluster, const char *topic, TfError *err)
{
    KafkaPosition *pos = kafka_position_new(topic);
    if (!pos) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    char mpath[4200];
    snprintf(mpath, sizeof mpath, "%s/%s", dir, SHARD_MANIFEST_NAME);
    struct stat st;
    if (stat(mpath, &st) != 0)
        return pos;
    ShardManifest *m = shard_manifest_load(dir, err);
    if (!m) {
        kafka_position_free(pos);
        return NULL;
    }
    for (size_t i = 0; i < m->n_shards; i++) {
        const json_t *src = m->shards[i].source;
        const char *kind = json_string_value(json_object_get(src, "kind"));
        const char *cid = json_string_value(json_object_get(src, "cluster_id"));
        if (!kind || strcmp(kind, "kafka") || !cid || strcmp(cid, cluster))
            continue;
        KafkaPosition *p = kafka_position_from_json(src, NULL);
        if (p && !strcmp(p->topic, topic))
            for (size_t k = 0; k < p->n; k++)
                if (p->offset[k] > kafka_position_get(pos, p->partition[k]))
                    kafka_position_set(pos, p->partition[k], p->offset[k], NULL);
        kafka_position_free(p);
    }
    shard_manifest_free(m);
    return pos;
}

/* {"kind":"kafka","cluster_id","topic","offsets"} for `done`. */
static json_t *source_json(const KafkaPosition *done, const char *cluster)
{
    json_t *j = kafka_position_to_json(done);
    json_object_set_new(j, "kind", json_string("kafka"));
    json_object_set_new(j, "cluster_id", json_string(cluster));
    return j;
}

/* Commits `done` under the group (a consumer handle that never reads). */
static int group_commit(rd_kafka_t *rk, const KafkaPosition *done, TfError *err)
{
    if (!rk || !done->n)
        return 0;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)done->n);
    for (size_t i = 0; i < done->n; i++)
        rd_kafka_topic_partition_list_add(l, done->topic, done->partition[i])->offset = done->offset[i];
    rd_kafka_resp_err_t e = rd_kafka_commit(rk, l, 0);
    rd_kafka_topic_partition_list_destroy(l);
    if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
        return tf_fail(err, "committing the group's offsets: %s", rd_kafka_err2str(e));
    return 0;
}

/* Publishes the shard in hand with `done` as its source, then commits. */
static int archive_flush(ShardWriter *w, const KafkaPosition *done, const char *cluster, rd_kafka_t *group_rk,
                         TfError *err)
{
    json_t *src = source_json(done, cluster);
    int rc = shard_writer_set_source(w, src) ? tf_fail(err, "out of memory") : shard_writer_flush(w, err);
    json_decref(src);
    if (rc)
        return -1;
    /* Best effort: the dataset is the record of what is done, so a commit
     * lost to a crash costs nothing (the rerun starts from the dataset). */
    TfError cerr = {{0}};
    if (group_commit(group_rk, done, &cerr))
        tf_log(TF_LOG_WARN, "kafka", "%s", cerr.msg);
    return 0;
}

int shards_cmd_archive(int argc, char **argv)
{
    ShardsCli k = SHARDS_CLI_INIT("transfuse shards archive");
    const char *out = NULL, *prefix = NULL, *metrics_addr = NULL;
    uint64_t shard_size = 0;
    long shard_records = 0, metrics_port = 0;
    static const struct option opts[] = {{"out", required_argument, 0, 'O'},
                                         {"prefix", required_argument, 0, 'P'},
                                         {"shard-size", required_argument, 0, 'S'},
                                         {"shard-records", required_argument, 0, 'N'},
                                         {"metrics-port", required_argument, 0, 'm'},
                                         {"metrics-addr", required_argument, 0, 'a'},
                                         SHARDS_COMMON_LONGOPTS,
                                         {0}};
    TfOpts o = {.prog = k.prog, .argc = argc, .argv = argv, .shortopts = "hX:", .longopts = opts};
    TfError err = {{0}};
    int c;
    while ((c = tf_opts_next(&o)) != -1) {
        switch (c) {
        case 'h': fputs(ARCHIVE_HELP, stdout); return TF_EXIT_OK;
        case 'O': out = o.arg; break;
        case 'P': prefix = o.arg; break;
        case 'a': metrics_addr = o.arg; break;
        case 'S':
            if (tf_parse_size("--shard-size", o.arg, &shard_size, &err))
                return shards_cli_usage(&k, err.msg);
            break;
        case 'N':
            if (tf_parse_long("--shard-records", o.arg, 1, LONG_MAX, &shard_records, &err))
                return shards_cli_usage(&k, err.msg);
            break;
        case 'm':
            if (tf_parse_long("--metrics-port", o.arg, 0, 65535, &metrics_port, &err))
                return shards_cli_usage(&k, err.msg);
            break;
        case SHARDS_OPT_FOLLOW:
        case SHARDS_OPT_RANK:
        case SHARDS_OPT_WORLD:
        case SHARDS_OPT_SPLIT: return shards_cli_usage(&k, "archive reads the whole chosen range: no --follow, --rank, --world or --split");
        case '?': return TF_EXIT_USAGE;
        default:
            if (shards_cli_common(&k, c, o.arg) <= 0)
                return TF_EXIT_USAGE;
        }
    }
    char bootstrap[1024], topic[256];
    if (o.first_operand != argc - 1 || !out)
        return shards_cli_usage(&k, "needs kafka://HOST:PORT/TOPIC and --out DIR");
    const char *url = argv[o.first_operand];
    if (kafka_url_parse(url, bootstrap, sizeof bootstrap, topic, sizeof topic, &err))
        return shards_cli_usage(&k, err.msg);
    k.config[k.n_config] = NULL;
    const TfStopFlag *stop = tf_cli_stop_flag();
    int status = TF_EXIT_OK;
    TfMetricsServer *metrics = NULL;
    KafkaPosition *start = NULL, *done = NULL, *committed = NULL;
    RecordSource *src = NULL;
    ShardWriter *w = NULL;
    rd_kafka_t *group_rk = NULL;
    KafkaTopicInfo info = {0};
    int have_info = 0;
    if (metrics_port && !(metrics = tf_metrics_cli_start("shards", metrics_addr, metrics_port, &err)))
        goto fail;
    TfCounter *m_records = tf_counter("transfuse_shards_archive_records_total", "Records written to shards",
                                      "topic", topic, NULL),
              *m_bytes = tf_counter("transfuse_shards_archive_bytes_total", "Record bytes written to shards",
                                    "topic", topic, NULL),
              *m_shards = tf_counter("transfuse_shards_archive_shards_total", "Shards published", "topic", topic,
                                     NULL),
              *m_bad = tf_counter("transfuse_shards_archive_bad_records_total",
                                  "Topic records refused (parse, key, tensors, empty value)", "topic", topic, NULL);
    TfGauge *m_lag = tf_gauge("transfuse_shards_archive_lag_records",
                              "Records of the range not yet archived (to the high watermarks seen at start)",
                              "topic", topic, NULL);
    if (kafka_topic_describe(bootstrap, topic, k.config, &info, &err))
        goto fail;
    have_info = 1;
    /* Where to start, per partition: never before what DIR holds. */
    if (!(start = archived_position(out, info.cluster_id, topic, &err)) || !(done = kafka_position_new(topic)))
        goto fail;
    if (k.group && !(committed = kafka_group_committed(bootstrap, topic, k.group, k.config, &err)))
        goto fail;
    uint64_t range = 0;
    for (size_t i = 0; i < info.n; i++) {
        int32_t p = info.parts[i].partition;
        int chosen = !k.n_partitions;
        for (size_t j = 0; j < k.n_partitions; j++)
            chosen |= k.partitions[j] == p;
        if (!chosen)
            continue;
        int64_t at = kafka_position_get(start, p), lo = info.parts[i].low, hi = info.parts[i].high;
        int64_t want = committed ? kafka_position_get(committed, p) : -1;
        if (k.from >= 0 && k.from > want)
            want = k.from;
        if (want > at)
            at = want;
        if (at >= 0 && at > hi)
            at = hi;
        if (at >= 0)
            kafka_position_set(start, p, at, NULL);
        else
            at = lo;
        kafka_position_set(done, p, at, NULL);
        range += (uint64_t)(hi > at ? hi - at : 0);
    }
    tf_gauge_set(m_lag, (double)range);
    if (k.group && !(group_rk = kafka_handle_new(RD_KAFKA_CONSUMER, bootstrap, k.group, k.config, &err)))
        goto fail;
    snprintf(k.throwaway_group, sizeof k.throwaway_group, "transfuse-cli-%ld", (long)getpid());
    k.ko = (KafkaSourceOptions){.group_id = k.throwaway_group,
                                .partitions = k.n_partitions ? k.partitions : NULL,
                                .n_partitions = k.n_partitions,
                                .start = start,
                                .until = KAFKA_UNTIL_SNAPSHOT,
                                .commit_interval_ms = -1,
                                .config = k.config};
    RecordSourceOptions ro = {.path = url, .check = 1, .stop = stop, .kafka = &k.ko};
    if (!(src = record_source_open(&ro, &err)))
        goto fail;
    ShardWriterOptions wo = {.max_shard_bytes = shard_size,
                             .max_shard_records = (uint64_t)shard_records,
                             .name_prefix = prefix ? prefix : topic};
    ShardFacts facts;
    memset(&facts, 0, sizeof facts);
    uint64_t n = 0, bytes = 0, bad = 0, shards_before = 0;
    double t0 = tf_now();
    Record rec;
    ShardProblem prob;
    int rc;
    while (k.limit < 0 || (long)n < k.limit) {
        rc = record_source_next(src, &rec, 1000, &prob, &err);
        if (rc == RECORD_SOURCE_END)
            break;
        if (tf_stop_requested(stop))
            break;
        if (rc < 0)
            goto fail;
        if (rc == RECORD_SOURCE_IDLE)
            continue;
        if (rc == RECORD_SOURCE_PROBLEM) {
            static TfRateLimit limit = {.burst = 20, .period_s = 10};
            char where[800];
            shard_problem_format(&prob, where, sizeof where);
            tf_log_limited(&limit, TF_LOG_WARN, "archive", "%s (skipped)", where);
            kafka_position_set(done, prob.partition, (int64_t)prob.offset + 1, NULL);
            bad++;
            tf_counter_add(m_bad, 1);
            continue;
        }
        char tok[80], vae[80];
        KafkaSource *ks = record_source_kafka(src);
        kafka_source_record_header(ks, KAFKA_HEADER_TOKENIZER, tok, sizeof tok);
        kafka_source_record_header(ks, KAFKA_HEADER_VAE, vae, sizeof vae);
        if (w && (strcmp(tok, facts.tokenizer_id) || strcmp(vae, facts.vae_id))) {
            tf_fail(&err,
                    "partition %d offset %" PRId64 ": record names tokenizer '%s' and VAE '%s', the archive holds "
                    "'%s' and '%s'",
                    (int)rec.partition, (int64_t)rec.offset, tok, vae, facts.tokenizer_id, facts.vae_id);
            goto fail;
        }
        if (!w) { /* the first record's headers and latent name the dataset's identity */
            facts = *record_source_facts(src);
            if (!(w = shard_writer_open(out, &wo, &facts, &err)))
                goto fail;
            shards_before = 0;
        }
        if (shard_writer_would_roll(w, rec.len)) {
            if (archive_flush(w, done, info.cluster_id, group_rk, &err))
                goto fail;
            tf_counter_add(m_shards, 1);
        }
        if (shard_writer_append(w, rec.payload, rec.len, rec.key, rec.key_len, &err))
            goto fail;
        kafka_position_set(done, rec.partition, (int64_t)rec.offset + 1, NULL);
        n++;
        bytes += rec.len;
        tf_counter_add(m_records, 1);
        tf_counter_add(m_bytes, rec.len);
        if ((n & 1023) == 0)
            tf_gauge_set(m_lag, range > n + bad ? (double)(range - n - bad) : 0);
    }
    if (tf_stop_requested(stop)) {
        fprintf(stderr, "%s: stopped; complete shards are kept and a rerun continues after them\n", k.prog);
        status = TF_EXIT_STOPPED;
    }
    /* What is in hand is complete records: publish it with its position,
     * also on a stop (nothing half-written becomes visible either way). */
    if (w) {
        uint64_t before = shard_writer_shards(w);
        if (archive_flush(w, done, info.cluster_id, group_rk, &err))
            goto fail;
        tf_counter_add(m_shards, shard_writer_shards(w) - before);
        shards_before = shard_writer_shards(w);
    }
    tf_gauge_set(m_lag, range > n + bad ? (double)(range - n - bad) : 0);
    double dt = tf_now() - t0;
    if (status == TF_EXIT_OK && bad)
        status = TF_EXIT_CHECK;
    fprintf(stderr, "%s: %" PRIu64 " records (%.1f MB) from %s into %" PRIu64 " shard(s) in %s in %.2f s; %" PRIu64
                    " bad record(s) skipped\n",
            k.prog, n, bytes / 1e6, topic, shards_before, out, dt, bad);
    goto done;
fail:
    fprintf(stderr, "%s: %s\n", k.prog, err.msg);
    status = TF_EXIT_FAIL;
done:
    shard_writer_free(w);
    record_source_free(src);
    if (group_rk) {
        rd_kafka_consumer_close(group_rk);
        rd_kafka_destroy(group_rk);
    }
    kafka_position_free(start);
    kafka_position_free(done);
    kafka_position_free(committed);
    if (have_info)
        kafka_topic_info_deinit(&info);
    tf_metrics_server_free(metrics);
    return status;
}

/* ---- create ---- */

static const char CREATE_HELP[] =
    "usage: transfuse shards create kafka://HOST:PORT/TOPIC --partitions N [--replication R]\n\n"
    "Creates a topic through the admin API of a real cluster. Says why when the\n"
    "cluster refuses (too few brokers for R, ACLs, policies); the embedded\n"
    "broker cannot create topics this way (start it with --topic NAME:N).\n\n"
    "  --partitions N    partitions (one or more per trainer rank)\n"
    "  --replication R   replicas per partition (default 3)\n"
    "  -X key=value      librdkafka property (repeatable)\n";

int shards_cmd_create(int argc, char **argv)
{
    ShardsCli k = SHARDS_CLI_INIT("transfuse shards create");
    long partitions = 0, replication = 3;
    static const struct option opts[] = {{"partitions", required_argument, 0, 'P'},
                                         {"replication", required_argument, 0, 'R'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    TfOpts o = {.prog = k.prog, .argc = argc, .argv = argv, .shortopts = "hX:", .longopts = opts};
    TfError err = {{0}};
    int c;
    while ((c = tf_opts_next(&o)) != -1) {
        if (c == 'h') {
            fputs(CREATE_HELP, stdout);
            return TF_EXIT_OK;
        } else if (c == 'P') {
            if (tf_parse_long("--partitions", o.arg, 1, KAFKA_MAX_PARTITIONS, &partitions, &err))
                return shards_cli_usage(&k, err.msg);
        } else if (c == 'R') {
            if (tf_parse_long("--replication", o.arg, 1, 32, &replication, &err))
                return shards_cli_usage(&k, err.msg);
        } else if (c != 'X' || shards_cli_common(&k, c, o.arg) <= 0) {
            return TF_EXIT_USAGE;
        }
    }
    char bootstrap[1024], topic[256];
    if (o.first_operand != argc - 1 || !partitions)
        return shards_cli_usage(&k, "needs kafka://HOST:PORT/TOPIC and --partitions N");
    if (kafka_url_parse(argv[o.first_operand], bootstrap, sizeof bootstrap, topic, sizeof topic, &err))
        return shards_cli_usage(&k, err.msg);
    k.config[k.n_config] = NULL;
    int rc = kafka_topic_create(bootstrap, topic, (int)partitions, (int)replication, k.config, &err);
    if (rc < 0) {
        fprintf(stderr, "transfuse shards create: %s\n", err.msg);
        return TF_EXIT_FAIL;
    }
    fprintf(stderr, "transfuse shards create: topic %s %s\n", topic, rc == 1 ? "exists already" : "created");
    return TF_EXIT_OK;
}
