/* cli_internal.h: what the two halves of `transfuse shards` share (cli.c
 * for every PATH, kafka/cli_kafka.c for the topic-only commands): the
 * options every reading command takes and the one way to open a record
 * source from them. Not part of the public header. */
#ifndef TRANSFUSE_SHARDS_CLI_INTERNAL_H
#define TRANSFUSE_SHARDS_CLI_INTERNAL_H

#include <getopt.h>

#include "shards.h"

#define SHARDS_MAX_X 64

/* Options of the reading commands. Zero-initialise, then set `from` and
 * `limit` to -1 (SHARDS_CLI_INIT). */
typedef struct ShardsCli {
    const char *prog;                          /* "transfuse shards verify" */
    const char *config[SHARDS_MAX_X + 1];      /* -X key=value, NULL-terminated */
    size_t n_config;
    int32_t partitions[256];                   /* --partition */
    size_t n_partitions;
    int64_t from;                              /* --offset; -1: none */
    long limit;                                /* --limit; -1: all */
    const char *group;                         /* --group */
    int follow;                                /* --follow: a topic as a stream */
    long rank, world;                          /* --rank, --world */
    RecordSplit split;                         /* --split shards|blocks */
    /* filled by shards_cli_open */
    char throwaway_group[64];
    KafkaSourceOptions ko;
    KafkaPosition *start;
} ShardsCli;

#define SHARDS_CLI_INIT(p) {.prog = (p), .from = -1, .limit = -1, .world = 1}

/* Long options every reading command takes; their values are below 0x100
 * so commands use printable letters for their own. */
#define SHARDS_OPT_PARTITION 0x101
#define SHARDS_OPT_OFFSET 0x102
#define SHARDS_OPT_LIMIT 0x103
#define SHARDS_OPT_GROUP 0x104
#define SHARDS_OPT_FOLLOW 0x105
#define SHARDS_OPT_RANK 0x106
#define SHARDS_OPT_WORLD 0x107
#define SHARDS_OPT_SPLIT 0x108
#define SHARDS_COMMON_LONGOPTS                                                                                  \
    {"partition", required_argument, 0, SHARDS_OPT_PARTITION}, {"offset", required_argument, 0, SHARDS_OPT_OFFSET}, \
        {"limit", required_argument, 0, SHARDS_OPT_LIMIT}, {"group", required_argument, 0, SHARDS_OPT_GROUP},       \
        {"follow", no_argument, 0, SHARDS_OPT_FOLLOW}, {"rank", required_argument, 0, SHARDS_OPT_RANK},             \
        {"world", required_argument, 0, SHARDS_OPT_WORLD}, {"split", required_argument, 0, SHARDS_OPT_SPLIT},       \
        {"help", no_argument, 0, 'h'}

#define SHARDS_RANGE_HELP                                                                                       \
    "  --limit N        stop after N records\n"                                                               \
    "  --rank R --world W   read only rank R's share of W (see docs/RECORDS.md)\n"                           \
    "  --split shards|blocks  how a folder is shared out (default shards)\n"                                  \
    "topics only:\n"                                                                                          \
    "  --partition P    only partition P (repeatable; default all, or the rank's)\n"                          \
    "  --offset O       start at offset O in each chosen partition (default: the log start)\n"                \
    "  --follow         do not stop at the high watermarks seen at start (until Ctrl-C)\n"                    \
    "  -X key=value     librdkafka property (repeatable), e.g. -X security.protocol=ssl\n"

/* Handles option c (value arg) if it is one of the common ones (and -X).
 * Returns 1 when consumed, 0 when not common, -1 after printing why the
 * value is bad. */
int shards_cli_common(ShardsCli *k, int c, const char *arg);

/* Prints "PROG: MSG (see PROG --help)" to stderr; returns TF_EXIT_USAGE. */
int shards_cli_usage(const ShardsCli *k, const char *msg);

/* Opens a record source over `path` with the common options applied to
 * `o` (rank, world, split; for topics: partitions, --offset start, a
 * snapshot range up to the high watermarks unless --follow, a throwaway
 * consumer group that commits nothing). Returns NULL with err filled. */
RecordSource *shards_cli_open(ShardsCli *k, const char *path, RecordSourceOptions *o, TfError *err);

/* Frees what shards_cli_open kept. */
void shards_cli_deinit(ShardsCli *k);

/* Topic-only commands (kafka/cli_kafka.c). */
int shards_kafka_ls(ShardsCli *k, const char *url, const char *const *groups, size_t n_groups, int json);
int shards_cmd_publish(int argc, char **argv);
int shards_cmd_archive(int argc, char **argv);
int shards_cmd_create(int argc, char **argv);

#endif
