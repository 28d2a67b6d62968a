/* broker.c: `transfuse broker`, librdkafka's mock cluster as a standalone
 * local process, so one machine (tests, demos, a laptop run) can use the
 * same producer, consumer and kcat commands as a real Kafka cluster.
 *
 * It speaks the Kafka protocol on loopback ports, but it is not a broker
 * to keep data in: everything lives in memory, each partition keeps only
 * about 5 MiB of record batches and drops older ones silently, and it
 * lacks CreateTopics, ListGroups and DescribeGroups. Topics are created
 * here, through the mock API; transfuse producers writing to it use flow
 * control and consumers auto.offset.reset=error (see docs/KAFKA.md). */
#include "ops.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define BROKER_TAG "broker"
#define BROKER_MAX_TOPICS 64

static void broker_usage(FILE *out)
{
    fprintf(out,
            "usage: transfuse broker [--brokers N] --topic NAME:PARTITIONS [--topic ...]\n"
            "                        [--replication R] [--bootstrap-file FILE]\n\n"
            "Runs librdkafka's mock Kafka cluster as a local process on loopback ports,\n"
            "prints its bootstrap address (HOST:PORT,...) on stdout, and runs until\n"
            "SIGINT or SIGTERM. Producers, consumers, kcat and `transfuse shards ...\n"
            "kafka://ADDRESS/TOPIC` talk to it like to a real cluster.\n\n"
            "Limits (it is a test broker, not storage): data lives in memory only; each\n"
            "partition keeps about 5 MiB of batches and silently drops older ones, so\n"
            "producers must not run more than that ahead of consumers (transfuse\n"
            "producers wait on a consumer group's committed offsets: --flow-group); it\n"
            "cannot create topics over the protocol (use --topic here) nor list or\n"
            "describe consumer groups. Use a real cluster for anything that must survive\n"
            "a restart, more than one machine, or data larger than what consumers keep\n"
            "up with.\n\n"
            "options:\n"
            "  --brokers N            brokers in the cluster (1-16, default 1)\n"
            "  --topic NAME:P         create topic NAME with P partitions (repeatable)\n"
            "  --replication R        replication factor of created topics (default\n"
            "                         min(3, brokers))\n"
            "  --bootstrap-file FILE  also write the bootstrap address to FILE\n"
            "                         (atomically, so waiting for the file is safe)\n"
            "  --metrics-port N       serve Prometheus metrics on 127.0.0.1:N/metrics\n"
            "                         (per-partition high watermarks; 0 = off, the default)\n"
            "  --metrics-addr A       address to bind the metrics port (default 127.0.0.1)\n"
            "  --register DIR         register the metrics endpoint in DIR for `transfuse top\n"
            "                         --discover DIR` (serves metrics on a free port when\n"
            "                         --metrics-port is not given; removed on exit)\n"
            "  -h, --help             this help\n");
}

static void broker_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    tf_log(level <= 3 ? TF_LOG_ERROR : level <= 4 ? TF_LOG_WARN : TF_LOG_DEBUG, BROKER_TAG, "%s: %s", fac, buf);
}

/* A plain client of the cluster, for reading watermarks into metrics. */
static rd_kafka_t *broker_watcher_new(const char *bootstraps, TfError *err)
{
    char es[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, broker_log_cb);
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, es, sizeof es) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return tf_fail(err, "metrics client: %s", es), NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, es, sizeof es);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return tf_fail(err, "metrics client: %s", es), NULL;
    }
    return rk;
}

/* Exports the low and high watermark of every partition of `topic`. A
 * partition that does not answer in time keeps its last values. */
static void broker_watch_topic(rd_kafka_t *rk, const char *topic, int partitions)
{
    for (int p = 0; p < partitions; p++) {
        int64_t lo, hi;
        if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 500))
            continue;
        char part[16];
        snprintf(part, sizeof part, "%d", p);
        tf_gauge_set(tf_gauge("transfuse_broker_high_watermark", "Next offset to be written, per partition",
                              "topic", topic, "partition", part, NULL),
                     (double)hi);
        tf_gauge_set(tf_gauge("transfuse_broker_low_watermark",
                              "Oldest offset still kept, per partition (the mock drops old data)", "topic", topic,
                              "partition", part, NULL),
                     (double)lo);
    }
}

int broker_main(int argc, char **argv)
{
    long brokers = 1, replication = 0;
    const char *bootstrap_file = NULL;
    struct {
        char name[250];
        long partitions;
    } topics[BROKER_MAX_TOPICS];
    int n_topics = 0;
    TfError err = {{0}};

    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},           {"brokers", required_argument, NULL, 'b'},
        {"replication", required_argument, NULL, 'r'}, {"bootstrap-file", required_argument, NULL, 'f'},
        {"topic", required_argument, NULL, 't'},    {"metrics-port", required_argument, NULL, 'm'},
        {"metrics-addr", required_argument, NULL, 'a'}, {"register", required_argument, NULL, 'R'},
        {NULL, 0, NULL, 0}};
    long metrics_port = 0;
    const char *metrics_addr = NULL, *register_dir = NULL;
    TfOpts o = {.prog = "transfuse broker", .argc = argc, .argv = argv, .shortopts = "h", .longopts = opts};
    int c;
    while ((c = tf_opts_next(&o)) != -1) {
        const char *v = o.arg;
        switch (c) {
        case 'h': broker_usage(stdout); return TF_EXIT_OK;
        case 'b':
            if (tf_parse_long("--brokers", v, 1, 16, &brokers, &err))
                goto usage;
            break;
        case 'r':
            if (tf_parse_long("--replication", v, 1, 16, &replication, &err))
                goto usage;
            break;
        case 'f': bootstrap_file = v; break;
        case 'm':
            if (tf_parse_long("--metrics-port", v, 0, 65535, &metrics_port, &err))
                goto usage;
            break;
        case 'a': metrics_addr = v; break;
        case 'R': register_dir = v; break;
        case 't': {
            const char *colon = strrchr(v, ':');
            if (n_topics == BROKER_MAX_TOPICS) {
                tf_fail(&err, "at most %d topics", BROKER_MAX_TOPICS);
                goto usage;
            }
            if (!colon || colon == v || (size_t)(colon - v) >= sizeof topics[0].name) {
                tf_fail(&err, "--topic %s: expected NAME:PARTITIONS", v);
                goto usage;
            }
            for (const char *p = v; p < colon; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '.' || *p == '_' || *p == '-')) {
                    tf_fail(&err, "--topic %s: topic names may hold only letters, digits, '.', '_' and '-'", v);
                    goto usage;
                }
            memcpy(topics[n_topics].name, v, (size_t)(colon - v));
            topics[n_topics].name[colon - v] = 0;
            if (tf_parse_long("--topic partitions", colon + 1, 1, 10000, &topics[n_topics].partitions, &err))
                goto usage;
            n_topics++;
            break;
        }
        default: return TF_EXIT_USAGE;
        }
    }
    if (o.first_operand < argc) {
        tf_fail(&err, "unexpected argument '%s'", argv[o.first_operand]);
        goto usage;
    }
    if (!replication)
        replication = brokers < 3 ? brokers : 3;
    if (replication > brokers) {
        tf_fail(&err, "--replication %ld is more than --brokers %ld", replication, brokers);
        goto usage;
    }
    if (n_topics == 0)
        tf_log(TF_LOG_WARN, BROKER_TAG,
               "no --topic given: transfuse clients never auto-create topics, so create them here");

    const TfStopFlag *stop = tf_cli_stop_flag();

    /* The mock cluster hangs off a client handle (for its thread and logs). */
    char es[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, broker_log_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof es);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "transfuse broker: %s\n", es);
        return TF_EXIT_FAIL;
    }
    rd_kafka_t *watcher = NULL;
    TfMetricsServer *metrics = NULL;
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, (int)brokers);
    int rc = TF_EXIT_FAIL;
    if (!mc) {
        fprintf(stderr, "transfuse broker: cannot start the mock cluster\n");
        goto done;
    }
    for (int t = 0; t < n_topics; t++) {
        rd_kafka_resp_err_t e =
            rd_kafka_mock_topic_create(mc, topics[t].name, (int)topics[t].partitions, (int)replication);
        if (e) {
            fprintf(stderr, "transfuse broker: topic %s: %s\n", topics[t].name, rd_kafka_err2str(e));
            goto done;
        }
    }
    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    if (metrics_port || register_dir) {
        metrics = tf_metrics_cli_start_registered(BROKER_TAG, metrics_addr, metrics_port, register_dir, &err);
        if (!metrics) {
            fprintf(stderr, "transfuse broker: %s\n", err.msg);
            goto done;
        }
        /* `transfuse top` reads the bootstrap address here to query topics
         * and group offsets itself. */
        tf_gauge_set(tf_gauge("transfuse_broker_info", "Always 1; the labels say where clients connect",
                              "bootstrap", bootstraps, NULL),
                     1);
        watcher = broker_watcher_new(bootstraps, &err);
        if (!watcher) {
            fprintf(stderr, "transfuse broker: %s\n", err.msg);
            goto done;
        }
    }
    if (bootstrap_file) {
        char line[1024];
        int len = snprintf(line, sizeof line, "%s\n", bootstraps);
        if (tf_write_file_atomic(bootstrap_file, line, (size_t)len, &err)) {
            fprintf(stderr, "transfuse broker: %s\n", err.msg);
            goto done;
        }
    }
    printf("%s\n", bootstraps);
    fflush(stdout);
    for (int t = 0; t < n_topics; t++)
        tf_log(TF_LOG_INFO, BROKER_TAG, "topic %s: %ld partition(s), replication %ld", topics[t].name,
               topics[t].partitions, replication);
    tf_log(TF_LOG_INFO, BROKER_TAG,
           "mock cluster with %ld broker(s) at %s; in memory, ~5 MiB kept per partition; stop with Ctrl-C", brokers,
           bootstraps);

    double next_watch = 0;
    while (!tf_stop_requested(stop)) {
        if (watcher && tf_now() >= next_watch) {
            for (int t = 0; t < n_topics; t++)
                broker_watch_topic(watcher, topics[t].name, (int)topics[t].partitions);
            next_watch = tf_now() + 1.0;
        }
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    tf_log(TF_LOG_INFO, BROKER_TAG, "stopping");
    rc = TF_EXIT_OK;
done:
    tf_metrics_server_free(metrics);
    if (watcher)
        rd_kafka_destroy(watcher);
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return rc;
usage:
    fprintf(stderr, "transfuse broker: %s (see transfuse broker --help)\n", err.msg);
    return TF_EXIT_USAGE;
}
