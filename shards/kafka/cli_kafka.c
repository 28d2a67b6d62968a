/* cli_kafka.c: `transfuse shards` on Kafka topics (kafka://HOST:PORT/TOPIC):
 *   ls       partitions, leaders, low/high watermarks, and per consumer
 *            group the committed offsets and lag
 *   cat      records of a topic range as JSON lines (like a shard file)
 *   verify   parse every record of a range; keys, identity headers, offsets
 *   publish  a dataset folder to a topic; a shard's done marker is written
 *            only after every delivery report for it succeeded
 *   archive  a topic range to shard files with a manifest
 *   create   a topic through the admin API (real clusters)
 * shards/cli.c hands kafka:// paths and these commands over here. */
#include "kafka_internal.h"

#include <dirent.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_X 64
#define MAX_GROUPS 32

/* The process's stop flag (Ctrl-C, SIGTERM), for commands that drain. */
static const TfStopFlag *kcli_stop_ptr;
#define kcli_stop tf_stop_requested(kcli_stop_ptr)

static void kcli_signals(void)
{
    kcli_stop_ptr = tf_cli_stop_flag();
}

/* Options every Kafka command takes. */
typedef struct KCommon {
    const char *config[MAX_X + 1];
    size_t n_config;
    int32_t partitions[256];
    size_t n_partitions;
    int64_t from;     /* start offset for all listed partitions; -1: beginning/committed */
    long limit;       /* records; -1: all */
    const char *group;
} KCommon;

static void kusage(const char *cmd, const char *msg)
{
    fprintf(stderr, "transfuse shards %s: %s (see transfuse shards %s --help)\n", cmd, msg, cmd);
}

/* Parses the one kafka://HOST:PORT/TOPIC argument left after the options
 * of `cmd` (with `ready` 0 when a required option is missing; `need` says
 * what the command needs). Returns 0, or 2 after a usage message. */
static int topic_arg(const char *cmd, int argc, char **argv, int ready, const char *need, char bootstrap[1024],
                     char topic[256])
{
    TfError err = {{0}};
    if (optind != argc - 1 || !ready) {
        kusage(cmd, need);
        return 2;
    }
    if (kafka_url_parse(argv[optind], bootstrap, 1024, topic, 256, &err)) {
        kusage(cmd, err.msg);
        return 2;
    }
    return 0;
}

/* Handles -X, --partition, --offset, --limit, --group; returns 1 when
 * consumed, 0 when not a common option, -1 on a bad value. */
static int common_opt(KCommon *k, int c, const char *cmd)
{
    TfError err = {{0}};
    long v;
    switch (c) {
    case 'X':
        if (k->n_config == MAX_X || !strchr(optarg, '=')) {
            kusage(cmd, "-X wants key=value (at most 64)");
            return -1;
        }
        k->config[k->n_config++] = optarg;
        return 1;
    case 'p':
        if (k->n_partitions == 256 || tf_parse_long("--partition", optarg, 0, KAFKA_MAX_PARTITIONS - 1, &v, &err)) {
            kusage(cmd, err.msg[0] ? err.msg : "too many --partition");
            return -1;
        }
        k->partitions[k->n_partitions++] = (int32_t)v;
        return 1;
    case 'o':
        if (tf_parse_long("--offset", optarg, 0, LONG_MAX, &v, &err)) {
            kusage(cmd, err.msg);
            return -1;
        }
        k->from = v;
        return 1;
    case 'n':
        if (tf_parse_long("--limit", optarg, 0, LONG_MAX, &k->limit, &err)) {
            kusage(cmd, err.msg);
            return -1;
        }
        return 1;
    case 'g':
        k->group = optarg;
        return 1;
    }
    return 0;
}

#define COMMON_LONGOPTS                                                                                           \
    {"partition", required_argument, 0, 'p'}, {"offset", required_argument, 0, 'o'},                             \
        {"limit", required_argument, 0, 'n'}, {"group", required_argument, 0, 'g'}, {"help", no_argument, 0, 'h'}

#define RANGE_HELP                                                                                                \
    "  --partition P   only partition P (repeatable; default all)\n"                                            \
    "  --offset O      start at offset O in each chosen partition (default: the\n"                             \
    "                  log start)\n"                                                                             \
    "  --limit N       stop after N records\n"                                                                   \
    "  -X key=value    librdkafka property (repeatable), e.g. -X security.protocol=ssl\n"

/* Opens a snapshot source over the chosen range: records up to the high
 * watermarks seen now, so the command ends even while producers write. */
static KafkaSource *open_range(const char *bootstrap, const char *topic, KCommon *k, KafkaPosition **start_out,
                               TfError *err)
{
    KafkaPosition *start = NULL;
    if (k->from >= 0) {
        start = kafka_position_new(topic);
        KafkaTopicInfo info;
        if (!start || kafka_topic_describe(bootstrap, topic, k->config, &info, err)) {
            kafka_position_free(start);
            return NULL;
        }
        for (size_t i = 0; i < info.n; i++)
            kafka_position_set(start, info.parts[i].partition,
                               k->from < info.parts[i].high ? k->from : info.parts[i].high, NULL);
        kafka_topic_info_deinit(&info);
    }
    /* A range read starts at the log start, never at a group's offsets:
     * the group is a throwaway one so nothing is committed or read back. */
    char group[64];
    snprintf(group, sizeof group, "transfuse-cli-%ld", (long)getpid());
    KafkaSourceOptions o = {.bootstrap = bootstrap,
                            .topic = topic,
                            .group_id = group,
                            .partitions = k->n_partitions ? k->partitions : NULL,
                            .n_partitions = k->n_partitions,
                            .start = start,
                            .until = KAFKA_UNTIL_SNAPSHOT,
                            .commit_interval_ms = -1,
                            .config = k->config};
    KafkaSource *s = kafka_source_new(&o, err);
    *start_out = start;
    return s;
}

/* ---- ls ---- */

static const char LS_HELP[] =
    "usage: transfuse shards ls [--json] [--group G ...] kafka://HOST:PORT/TOPIC\n\n"
    "Lists a topic's partitions with leader, low and high watermark and record\n"
    "count, and for each consumer group its committed offsets and lag (records\n"
    "not yet consumed). Groups are listed from the cluster when it can\n"
    "(ListGroups); name them with --group where it cannot: librdkafka's mock\n"
    "cluster (`transfuse broker`) cannot list or describe groups, but reports\n"
    "committed offsets of a named group.\n\n"
    "  --group G       show group G (repeatable)\n"
    "  --json          one JSON object on stdout\n"
    "  -X key=value    librdkafka property (repeatable)\n";

static int kcmd_ls(int argc, char **argv)
{
    KCommon k = {.from = -1, .limit = -1};
    const char *groups[MAX_GROUPS];
    size_t n_groups = 0;
    int json = 0;
    static const struct option opts[] = {COMMON_LONGOPTS, {"json", no_argument, 0, 'j'}, {0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hX:", opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(LS_HELP, stdout);
            return 0;
        } else if (c == 'j') {
            json = 1;
        } else if (c == 'g') {
            if (n_groups == MAX_GROUPS) {
                kusage("ls", "at most 32 --group");
                return 2;
            }
            groups[n_groups++] = optarg;
        } else {
            int r = common_opt(&k, c, "ls");
            if (r <= 0)
                return 2;
        }
    }
    char bootstrap[1024], topic[256];
    TfError err = {{0}};
    if (topic_arg("ls", argc, argv, 1, "needs exactly one kafka://HOST:PORT/TOPIC", bootstrap, topic))
        return 2;
    KafkaTopicInfo info;
    if (kafka_topic_describe(bootstrap, topic, k.config, &info, &err)) {
        fprintf(stderr, "transfuse shards ls: %s\n", err.msg);
        return 1;
    }
    char **listed = NULL;
    char group_note[600] = "";
    if (n_groups == 0) {
        TfError gerr = {{0}};
        listed = kafka_group_list(bootstrap, k.config, &gerr);
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
        KafkaPosition *pos = kafka_group_committed(bootstrap, topic, groups[g], k.config, &err);
        if (!pos) {
            fprintf(stderr, "transfuse shards ls: %s\n", err.msg);
            rc = 1;
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

/* ---- cat ---- */

static const char CAT_HELP[] =
    "usage: transfuse shards cat [options] kafka://HOST:PORT/TOPIC\n\n"
    "Prints the records of a topic range as JSON lines, like `cat` on a shard\n"
    "file: partition by partition interleaved as they arrive, in offset order\n"
    "within each partition, up to the high watermarks seen at start.\n\n"
    "  --fields A,B    only these top-level fields\n"
    "  --meta          add \"_partition\" and \"_offset\" to each line\n"
    "  --raw           write the payload bytes of the first record of the range\n"
    "                  instead (e.g. for protoc --decode transfuse.v1.Sample)\n" RANGE_HELP;

static int kcmd_cat(int argc, char **argv)
{
    KCommon k = {.from = -1, .limit = -1};
    const char *fields_spec = NULL;
    int raw = 0, meta = 0;
    static const struct option opts[] = {
        COMMON_LONGOPTS, {"fields", required_argument, 0, 'f'}, {"raw", no_argument, 0, 'r'}, {"meta", no_argument, 0, 'm'}, {0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hX:", opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(CAT_HELP, stdout);
            return 0;
        } else if (c == 'f') {
            fields_spec = optarg;
        } else if (c == 'r') {
            raw = 1;
        } else if (c == 'm') {
            meta = 1;
        } else if (common_opt(&k, c, "cat") <= 0) {
            return 2;
        }
    }
    char bootstrap[1024], topic[256];
    TfError err = {{0}};
    if (topic_arg("cat", argc, argv, 1, "needs exactly one kafka://HOST:PORT/TOPIC", bootstrap, topic))
        return 2;
    if (raw && isatty(STDOUT_FILENO)) {
        kusage("cat", "--raw writes binary; redirect stdout to a file or a pipe");
        return 2;
    }
    /* Field list: "a,b" split in place into a NULL-terminated array. */
    char *fcopy = fields_spec ? strdup(fields_spec) : NULL;
    const char *fields[64];
    size_t nf = 0;
    for (char *t = fcopy ? strtok(fcopy, ",") : NULL; t && nf < 63; t = strtok(NULL, ","))
        fields[nf++] = t;
    fields[nf] = NULL;

    kcli_signals();
    KafkaPosition *start = NULL;
    KafkaSource *src = open_range(bootstrap, topic, &k, &start, &err);
    if (!src) {
        fprintf(stderr, "transfuse shards cat: %s\n", err.msg);
        free(fcopy);
        return 1;
    }
    ShardArena arena;
    shard_arena_init(&arena, 1 << 20);
    long printed = 0;
    int rc = 0;
    while (!kcli_stop && (k.limit < 0 || printed < k.limit)) {
        KafkaRecord r;
        int got = kafka_source_next(src, &r, 1000, &err);
        if (got == KAFKA_END)
            break;
        if (got == KAFKA_IDLE)
            continue;
        if (got < 0) {
            fprintf(stderr, "transfuse shards cat: %s\n", err.msg);
            rc = 1;
            break;
        }
        if (raw) {
            fwrite(r.payload, 1, r.len, stdout);
            printed++;
            break;
        }
        shard_arena_reset(&arena);
        TfError derr = {{0}};
        Sample *s = sample_decode(r.payload, r.len, &arena, &derr);
        if (!s) {
            fprintf(stderr, "transfuse shards cat: partition %d offset %" PRId64 ": %s\n", r.partition, r.offset,
                    derr.msg);
            rc = 1;
            continue;
        }
        json_t *j = shard_message_to_json(&s->base, nf ? fields : NULL);
        if (meta) {
            json_object_set_new(j, "_partition", json_integer(r.partition));
            json_object_set_new(j, "_offset", json_integer(r.offset));
        }
        json_dumpf(j, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(j);
        printed++;
    }
    if (raw && printed == 0) {
        fprintf(stderr, "transfuse shards cat: the range holds no record\n");
        rc = 1;
    }
    fflush(stdout);
    shard_arena_deinit(&arena);
    kafka_source_free(src);
    kafka_position_free(start);
    free(fcopy);
    return rc;
}

/* ---- verify ---- */

static const char VERIFY_HELP[] =
    "usage: transfuse shards verify [--json] [--quiet] [range options] kafka://HOST:PORT/TOPIC\n\n"
    "Reads every record of a topic range (up to the high watermarks seen at\n"
    "start) and checks: each value parses as transfuse.v1.Sample, its tensors'\n"
    "sizes match dtype x shape, the message key equals the sample key, every\n"
    "record names the same schema, tokenizer and VAE in its headers, no key\n"
    "appears twice, and offsets are contiguous (a gap means records were deleted\n"
    "or compacted). Each problem is printed with partition and offset; exit 1\n"
    "when anything is wrong.\n\n"
    "  --json          one JSON object on stdout\n"
    "  --quiet         only the summary\n" RANGE_HELP;

static const char *tensor_check(const Transfuse__V1__Tensor *t)
{
    static const size_t es[] = {0, 4, 2, 2, 1};
    if (!t)
        return NULL;
    if (t->dtype <= 0 || (size_t)t->dtype >= sizeof es / sizeof es[0])
        return "tensor has no known dtype";
    uint64_t n = es[t->dtype];
    for (size_t i = 0; i < t->n_shape; i++) {
        if (!t->shape[i] || n > UINT64_MAX / t->shape[i])
            return "tensor shape is empty or too large";
        n *= t->shape[i];
    }
    return n == t->data.len ? NULL : "tensor data size does not match dtype x shape";
}

static int kcmd_verify(int argc, char **argv)
{
    KCommon k = {.from = -1, .limit = -1};
    int json = 0, quiet = 0;
    static const struct option opts[] = {COMMON_LONGOPTS, {"json", no_argument, 0, 'j'}, {"quiet", no_argument, 0, 'q'}, {0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hqX:", opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(VERIFY_HELP, stdout);
            return 0;
        } else if (c == 'j') {
            json = 1;
        } else if (c == 'q') {
            quiet = 1;
        } else if (common_opt(&k, c, "verify") <= 0) {
            return 2;
        }
    }
    char bootstrap[1024], topic[256];
    TfError err = {{0}};
    if (topic_arg("verify", argc, argv, 1, "needs exactly one kafka://HOST:PORT/TOPIC", bootstrap, topic))
        return 2;
    kcli_signals();
    KafkaPosition *start = NULL;
    double t0 = tf_now();
    KafkaSource *src = open_range(bootstrap, topic, &k, &start, &err);
    if (!src) {
        fprintf(stderr, "transfuse shards verify: %s\n", err.msg);
        return 1;
    }
    ShardArena arena;
    shard_arena_init(&arena, 1 << 20);
    ShardKeySet *keys = shard_keyset_new();
    json_t *problems = json_array();
    uint64_t n_problems = 0, records = 0, bytes = 0, good = 0;
    TfProgress prog;
    tf_progress_init(&prog, "verify", 0, "records");
#define PROBLEM(part, off, ...)                                                                        \
    do {                                                                                               \
        char what_[400];                                                                               \
        snprintf(what_, sizeof what_, __VA_ARGS__);                                                    \
        n_problems++;                                                                                  \
        if (json_array_size(problems) < 1000)                                                          \
            json_array_append_new(problems, json_pack("{s:i,s:I,s:s}", "partition", (int)(part), "offset", \
                                                      (json_int_t)(off), "what", what_));              \
        if (!quiet && !json)                                                                           \
            fprintf(stderr, "%s partition %d offset %" PRId64 ": %s\n", topic, (int)(part), (int64_t)(off), what_); \
    } while (0)
    int fatal = 0;
    while (!kcli_stop && (k.limit < 0 || (long)records < k.limit)) {
        KafkaRecord r;
        int got = kafka_source_next(src, &r, 1000, &err);
        if (got == KAFKA_END)
            break;
        if (got == KAFKA_IDLE)
            continue;
        if (got < 0) {
            PROBLEM(-1, -1, "%s", err.msg);
            fatal = 1;
            break;
        }
        records++;
        bytes += r.len;
        tf_progress_update(&prog, records);
        shard_arena_reset(&arena);
        TfError derr = {{0}};
        Sample *s = sample_decode(r.payload, r.len, &arena, &derr);
        if (!s) {
            PROBLEM(r.partition, r.offset, "not a transfuse.v1.Sample: %s", derr.msg);
            continue;
        }
        const char *tp = tensor_check(s->latent_mean);
        if (!tp)
            tp = tensor_check(s->latent_logvar);
        if (tp) {
            PROBLEM(r.partition, r.offset, "%s", tp);
            continue;
        }
        if (!s->key || !s->key[0]) {
            PROBLEM(r.partition, r.offset, "record has no key");
            continue;
        }
        if (r.key_len != strlen(s->key) || memcmp(r.key, s->key, r.key_len)) {
            PROBLEM(r.partition, r.offset, "message key '%.*s' differs from the sample key '%s'",
                    (int)(r.key_len > 100 ? 100 : r.key_len), r.key ? r.key : "", s->key);
            continue;
        }
        uint64_t first = 0;
        if (shard_keyset_add(keys, s->key, strlen(s->key), (uint64_t)r.partition << 48 | (uint64_t)r.offset, &first) == 0) {
            PROBLEM(r.partition, r.offset, "key '%s' appears more than once (first at partition %d offset %" PRIu64 ")",
                    s->key, (int)(first >> 48), (uint64_t)(first & ((1ull << 48) - 1)));
            continue;
        }
        good++;
    }
    tf_progress_finish(&prog, records);
    KafkaSourceStats st;
    kafka_source_stats(src, &st);
    if (st.gaps)
        PROBLEM(-1, -1, "%" PRIu64 " offset gap(s): records missing between offsets (see warnings)", st.gaps);
    if (kcli_stop)
        PROBLEM(-1, -1, "interrupted before the end of the range");
    double dt = tf_now() - t0;
    if (json) {
        json_t *out = json_pack("{s:s,s:b,s:I,s:I,s:I,s:f,s:I,s:o}", "topic", topic, "ok", n_problems == 0, "records",
                                (json_int_t)records, "good", (json_int_t)good, "bytes", (json_int_t)bytes, "seconds", dt,
                                "problem_count", (json_int_t)n_problems, "problems", problems);
        json_dumpf(out, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(out);
    } else {
        printf("%s: topic %s, %" PRIu64 " good records of %" PRIu64 ", %.1f MB in %.2f s (%.0f MB/s): %" PRIu64
               " problem%s\n",
               n_problems ? "FAILED" : "OK", topic, good, records, bytes / 1e6, dt, dt > 0 ? bytes / dt / 1e6 : 0.0,
               n_problems, n_problems == 1 ? "" : "s");
        json_decref(problems);
    }
#undef PROBLEM
    (void)fatal;
    shard_keyset_free(keys);
    shard_arena_deinit(&arena);
    kafka_source_free(src);
    kafka_position_free(start);
    return n_problems ? 1 : 0;
}

/* ---- publish ---- */

static const char PUBLISH_HELP[] =
    "usage: transfuse shards publish DIR --to kafka://HOST:PORT/TOPIC [options]\n\n"
    "Publishes the records of a dataset folder (its manifest's shards, in\n"
    "order) to a topic: value = record bytes, key = sample key, headers naming\n"
    "the schema and the manifest's tokenizer and VAE identity, through an\n"
    "idempotent producer. A shard counts as published only when every delivery\n"
    "report for it succeeded; then DIR/.published/TOPIC/SHARD.done is written.\n"
    "A rerun skips shards with a done marker, so an interrupted publish resumes\n"
    "at the first unfinished shard (whose records may then appear twice).\n\n"
    "  --to URL          kafka://HOST:PORT/TOPIC (the topic must exist)\n"
    "  --flow-group G    wait so that no partition runs more than --flow-max\n"
    "                    bytes ahead of what group G has committed (needed with\n"
    "                    `transfuse broker`, which drops data beyond ~5 MiB per\n"
    "                    partition)\n"
    "  --flow-max SIZE   default 3M\n"
    "  --force           publish shards that have a done marker again\n"
    "  -X key=value      librdkafka property (repeatable), e.g. -X linger.ms=50\n";

static int write_marker(const char *path, const char *bootstrap, uint64_t records, uint64_t bytes, TfError *err)
{
    json_t *j = json_pack("{s:s,s:I,s:I}", "bootstrap", bootstrap, "records", (json_int_t)records, "bytes",
                          (json_int_t)bytes);
    int rc = tf_json_write_file_atomic(path, j, err);
    json_decref(j);
    return rc;
}

static int kcmd_publish(int argc, char **argv)
{
    KCommon k = {.from = -1, .limit = -1};
    const char *to = NULL, *flow_group = NULL;
    uint64_t flow_max = 0;
    int force = 0;
    static const struct option opts[] = {{"to", required_argument, 0, 't'},         {"flow-group", required_argument, 0, 'G'},
                                         {"flow-max", required_argument, 0, 'M'},   {"force", no_argument, 0, 'F'},
                                         {"help", no_argument, 0, 'h'},             {0}};
    TfError err = {{0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hX:", opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(PUBLISH_HELP, stdout);
            return 0;
        } else if (c == 't') {
            to = optarg;
        } else if (c == 'G') {
            flow_group = optarg;
        } else if (c == 'F') {
            force = 1;
        } else if (c == 'M') {
            if (tf_parse_size("--flow-max", optarg, &flow_max, &err)) {
                kusage("publish", err.msg);
                return 2;
            }
        } else if (c != 'X' || common_opt(&k, c, "publish") <= 0) {
            return 2;
        }
    }
    char bootstrap[1024], topic[256];
    if (optind != argc - 1 || !to) {
        kusage("publish", "needs DIR and --to kafka://HOST:PORT/TOPIC");
        return 2;
    }
    if (kafka_url_parse(to, bootstrap, sizeof bootstrap, topic, sizeof topic, &err)) {
        kusage("publish", err.msg);
        return 2;
    }
    const char *dir = argv[optind];
    ShardManifest *m = shard_manifest_load(dir, &err);
    if (!m) {
        fprintf(stderr, "transfuse shards publish: %s\n", err.msg);
        return 1;
    }
    kcli_signals();
    KafkaSinkOptions so = {.bootstrap = bootstrap,
                           .topic = topic,
                           .facts = &m->facts,
                           .config = k.config,
                           .flow_group = flow_group,
                           .flow_max_bytes = flow_max,
                           .stop = kcli_stop_ptr};
    KafkaSink *sink = kafka_sink_new(&so, &err);
    if (!sink) {
        fprintf(stderr, "transfuse shards publish: %s\n", err.msg);
        shard_manifest_free(m);
        return 1;
    }
    char mdir[4096];
    snprintf(mdir, sizeof mdir, "%s/.published/%s", dir, topic);
    if (tf_mkdir_p(mdir, &err)) {
        fprintf(stderr, "transfuse shards publish: %s\n", err.msg);
        kafka_sink_free(sink);
        shard_manifest_free(m);
        return 1;
    }
    ShardArena arena;
    shard_arena_init(&arena, 1 << 20);
    TfProgress prog;
    tf_progress_init(&prog, "publish", m->bytes, "B");
    uint64_t done_bytes = 0, sent = 0, skipped = 0, bad = 0;
    int rc = 0;
    double t0 = tf_now();
    for (size_t i = 0; i < m->n_shards && !rc && !kcli_stop; i++) {
        const ShardEntry *e = &m->shards[i];
        char marker[4200], path[4200];
        snprintf(marker, sizeof marker, "%s/%s.done", mdir, e->name);
        snprintf(path, sizeof path, "%s/%s", dir, e->name);
        struct stat st;
        if (!force && stat(marker, &st) == 0) {
            skipped++;
            done_bytes += e->bytes;
            continue;
        }
        ShardFile *f = shard_file_open(path, &err);
        if (!f) {
            fprintf(stderr, "transfuse shards publish: %s\n", err.msg);
            rc = 1;
            break;
        }
        ShardCursor cur;
        shard_cursor_init(&cur, f);
        const uint8_t *payload;
        size_t len;
        ShardProblem prob;
        int got;
        uint64_t n = 0, nbytes = 0;
        while ((got = shard_cursor_next(&cur, &payload, &len, &prob)) != 0 && !kcli_stop) {
            if (got < 0) {
                char where[800];
                shard_problem_format(&prob, where, sizeof where);
                fprintf(stderr, "transfuse shards publish: %s (not published; shard gets no done marker)\n", where);
                bad++;
                continue;
            }
            shard_arena_reset(&arena);
            Sample *s = sample_decode(payload, len, &arena, &err);
            if (!s || !s->key) {
                fprintf(stderr, "transfuse shards publish: %s record %" PRIu64 ": %s\n", e->name, cur.record - 1,
                        s ? "no key" : err.msg);
                bad++;
                continue;
            }
            if (kafka_sink_send(sink, -1, payload, len, s->key, strlen(s->key), &err)) {
                fprintf(stderr, "transfuse shards publish: %s: %s\n", e->name, err.msg);
                rc = 1;
                break;
            }
            n++;
            nbytes += len;
            tf_progress_update(&prog, done_bytes + cur.offset);
        }
        shard_file_free(f);
        if (rc || kcli_stop)
            break;
        /* The unit of work: this shard. Done only when all of it landed. */
        if (kafka_sink_flush(sink, -1, &err)) {
            fprintf(stderr, "transfuse shards publish: %s: %s\n", e->name, err.msg);
            rc = 1;
            break;
        }
        sent += n;
        done_bytes += e->bytes;
        if (bad) {
            rc = 1;
            break;
        }
        if (write_marker(marker, bootstrap, n, nbytes, &err)) {
            fprintf(stderr, "transfuse shards publish: %s\n", err.msg);
            rc = 1;
            break;
        }
    }
    tf_progress_finish(&prog, done_bytes);
    if (kcli_stop && !rc) {
        kafka_sink_flush(sink, 30000, NULL);
        fprintf(stderr, "transfuse shards publish: interrupted; rerun to continue\n");
        rc = 1;
    }
    double dt = tf_now() - t0;
    fprintf(stderr, "transfuse shards publish: %" PRIu64 " records to %s in %.2f s (%.1f MB/s); %" PRIu64
                    " shard(s) already published%s\n",
            sent, topic, dt, dt > 0 ? (double)done_bytes / dt / 1e6 : 0.0, skipped, rc ? "; FAILED" : "");
    shard_arena_deinit(&arena);
    kafka_sink_free(sink);
    shard_manifest_free(m);
    return rc;
}

/* ---- archive ---- */

static const char ARCHIVE_HELP[] =
    "usage: transfuse shards archive kafka://HOST:PORT/TOPIC --out DIR [options]\n\n"
    "Writes the records of a topic range (up to the high watermarks seen at\n"
    "start) into shard files with an index and a manifest in DIR (appending to\n"
    "a dataset already there when its facts agree). The tokenizer and VAE\n"
    "identity come from the records' headers; records naming another identity\n"
    "than the first are refused. With --group G the range starts at G's\n"
    "committed offsets and G's offsets are committed once the shards are\n"
    "complete, so repeated runs archive each record once.\n\n"
    "  --out DIR         dataset folder to write\n"
    "  --prefix NAME     shard name prefix (default: the topic name)\n"
    "  --shard-size SIZE roll shards at this size (default 256M)\n" RANGE_HELP
    "  --group G         start at and commit to group G's offsets\n";

static int kcmd_archive(int argc, char **argv)
{
    KCommon k = {.from = -1, .limit = -1};
    const char *out = NULL, *prefix = NULL;
    uint64_t shard_size = 0;
    static const struct option opts[] = {COMMON_LONGOPTS,
                                         {"out", required_argument, 0, 'O'},
                                         {"prefix", required_argument, 0, 'P'},
                                         {"shard-size", required_argument, 0, 'S'},
                                         {0}};
    TfError err = {{0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hX:", opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(ARCHIVE_HELP, stdout);
            return 0;
        } else if (c == 'O') {
            out = optarg;
        } else if (c == 'P') {
            prefix = optarg;
        } else if (c == 'S') {
            if (tf_parse_size("--shard-size", optarg, &shard_size, &err)) {
                kusage("archive", err.msg);
                return 2;
            }
        } else if (common_opt(&k, c, "archive") <= 0) {
            return 2;
        }
    }
    char bootstrap[1024], topic[256];
    if (topic_arg("archive", argc, argv, out != 0, "needs kafka://HOST:PORT/TOPIC and --out DIR", bootstrap, topic))
        return 2;
    kcli_signals();
    KafkaPosition *start = NULL;
    KafkaSource *src;
    if (k.group) {
        KafkaSourceOptions o = {.bootstrap = bootstrap,
                                .topic = topic,
                                .group_id = k.group,
                                .partitions = k.n_partitions ? k.partitions : NULL,
                                .n_partitions = k.n_partitions,
                                .until = KAFKA_UNTIL_SNAPSHOT,
                                .commit_interval_ms = -1,
                                .config = k.config};
        src = kafka_source_new(&o, &err);
    } else {
        src = open_range(bootstrap, topic, &k, &start, &err);
    }
    if (!src) {
        fprintf(stderr, "transfuse shards archive: %s\n", err.msg);
        return 1;
    }
    ShardWriter *w = NULL;
    ShardFacts facts;
    memset(&facts, 0, sizeof facts);
    ShardWriterOptions wo = {.max_shard_bytes = shard_size, .name_prefix = prefix ? prefix : topic};
    ShardArena arena;
    shard_arena_init(&arena, 1 << 20);
    uint64_t n = 0, bytes = 0;
    int rc = 0;
    double t0 = tf_now();
    while (!kcli_stop && (k.limit < 0 || (long)n < k.limit)) {
        KafkaRecord r;
        int got = kafka_source_next(src, &r, 1000, &err);
        if (got == KAFKA_END)
            break;
        if (got == KAFKA_IDLE)
            continue;
        if (got < 0) {
            fprintf(stderr, "transfuse shards archive: %s\n", err.msg);
            rc = 1;
            break;
        }
        shard_arena_reset(&arena);
        Sample *smp = sample_decode(r.payload, r.len, &arena, &err);
        if (!smp) {
            fprintf(stderr, "transfuse shards archive: partition %d offset %" PRId64 ": not a Sample: %s\n",
                    r.partition, r.offset, err.msg);
            rc = 1;
            break;
        }
        char tok[80], vae[80];
        kafka_source_record_header(src, KAFKA_HEADER_TOKENIZER, tok, sizeof tok);
        kafka_source_record_header(src, KAFKA_HEADER_VAE, vae, sizeof vae);
        if (w && (strcmp(tok, facts.tokenizer_id) || strcmp(vae, facts.vae_id))) {
            fprintf(stderr,
                    "transfuse shards archive: partition %d offset %" PRId64 ": record names tokenizer '%s' and VAE "
                    "'%s', the archive holds '%s' and '%s'\n",
                    r.partition, r.offset, tok, vae, facts.tokenizer_id, facts.vae_id);
            rc = 1;
            break;
        }
        if (!w) {
            /* The first record's headers name the dataset's identity. */
            snprintf(facts.tokenizer_id, sizeof facts.tokenizer_id, "%s", tok);
            snprintf(facts.vae_id, sizeof facts.vae_id, "%s", vae);
            const Transfuse__V1__Tensor *t = smp->latent_mean;
            static const char *const dt[] = {"", "f32", "f16", "bf16", ""};
            if (t && t->dtype > 0 && t->dtype < 4 && t->n_shape >= 1 && t->n_shape <= 4) {
                snprintf(facts.latent_dtype, sizeof facts.latent_dtype, "%s", dt[t->dtype]);
                for (size_t d = 0; d < t->n_shape; d++)
                    facts.latent_shape[d] = t->shape[d];
                facts.latent_rank = (int)t->n_shape;
            }
            w = shard_writer_open(out, &wo, &facts, &err);
            if (!w) {
                fprintf(stderr, "transfuse shards archive: %s\n", err.msg);
                rc = 1;
                break;
            }
        }
        if (shard_writer_append(w, r.payload, r.len, r.key, r.key_len, &err)) {
            fprintf(stderr, "transfuse shards archive: %s\n", err.msg);
            rc = 1;
            break;
        }
        n++;
        bytes += r.len;
    }
    if (kcli_stop) {
        fprintf(stderr, "transfuse shards archive: interrupted; complete shards are kept\n");
        rc = 1;
    }
    if (w && !rc) {
        if (shard_writer_close(w, &err)) {
            fprintf(stderr, "transfuse shards archive: %s\n", err.msg);
            rc = 1;
        } else if (k.group && kafka_source_commit(src, &err)) {
            fprintf(stderr, "transfuse shards archive: shards written, but %s\n", err.msg);
            rc = 1;
        }
        w = NULL;
    }
    shard_writer_free(w);
    double dt = tf_now() - t0;
    fprintf(stderr, "transfuse shards archive: %" PRIu64 " records (%.1f MB) from %s to %s in %.2f s%s\n", n,
            bytes / 1e6, topic, out, dt, rc ? "; FAILED" : "");
    shard_arena_deinit(&arena);
    kafka_source_free(src);
    kafka_position_free(start);
    return rc;
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

static int kcmd_create(int argc, char **argv)
{
    KCommon k = {.from = -1, .limit = -1};
    long partitions = 0, replication = 3;
    static const struct option opts[] = {{"partitions", required_argument, 0, 'P'},
                                         {"replication", required_argument, 0, 'R'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    TfError err = {{0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hX:", opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(CREATE_HELP, stdout);
            return 0;
        } else if (c == 'P') {
            if (tf_parse_long("--partitions", optarg, 1, KAFKA_MAX_PARTITIONS, &partitions, &err)) {
                kusage("create", err.msg);
                return 2;
            }
        } else if (c == 'R') {
            if (tf_parse_long("--replication", optarg, 1, 32, &replication, &err)) {
                kusage("create", err.msg);
                return 2;
            }
        } else if (c != 'X' || common_opt(&k, c, "create") <= 0) {
            return 2;
        }
    }
    char bootstrap[1024], topic[256];
    if (topic_arg("create", argc, argv, partitions != 0, "needs kafka://HOST:PORT/TOPIC and --partitions N", bootstrap, topic))
        return 2;
    int rc = kafka_topic_create(bootstrap, topic, (int)partitions, (int)replication, k.config, &err);
    if (rc < 0) {
        fprintf(stderr, "transfuse shards create: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "transfuse shards create: topic %s %s\n", topic, rc == 1 ? "exists already" : "created");
    return 0;
}

/* ---- dispatch from shards/cli.c ---- */

int shards_kafka_wants(int argc, char **argv)
{
    if (argc < 2)
        return 0;
    if (!strcmp(argv[1], "publish") || !strcmp(argv[1], "archive") || !strcmp(argv[1], "create"))
        return 1;
    if (strcmp(argv[1], "ls") && strcmp(argv[1], "cat") && strcmp(argv[1], "verify"))
        return 0;
    for (int i = 2; i < argc; i++)
        if (kafka_url_is(argv[i]))
            return 1;
    return 0;
}

int shards_kafka_main(int argc, char **argv)
{
    static const TfCommand cmds[] = {
        {"ls", "", kcmd_ls},           {"cat", "", kcmd_cat},         {"verify", "", kcmd_verify},
        {"publish", "", kcmd_publish}, {"archive", "", kcmd_archive}, {"create", "", kcmd_create},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].run(argc - 1, argv + 1);
    return 2;
}
