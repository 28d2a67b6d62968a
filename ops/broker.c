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
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define BROKER_TAG "broker"
#define BROKER_MAX_TOPICS 64

static volatile sig_atomic_t broker_stop;

static void broker_on_signal(int sig)
{
    (void)sig;
    broker_stop = 1;
}

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
            "  -h, --help             this help\n");
}

static void broker_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    tf_log(level <= 3 ? TF_LOG_ERROR : level <= 4 ? TF_LOG_WARN : TF_LOG_DEBUG, BROKER_TAG, "%s: %s", fac, buf);
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

    if (tf_cli_wants_help(argc, argv)) {
        broker_usage(stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--brokers") && v) {
            if (tf_parse_long("--brokers", v, 1, 16, &brokers, &err))
                goto usage;
            i++;
        } else if (!strcmp(a, "--replication") && v) {
            if (tf_parse_long("--replication", v, 1, 16, &replication, &err))
                goto usage;
            i++;
        } else if (!strcmp(a, "--bootstrap-file") && v) {
            bootstrap_file = v;
            i++;
        } else if (!strcmp(a, "--topic") && v) {
            const char *colon = strrchr(v, ':');
            if (n_topics == BROKER_MAX_TOPICS) {
                tf_fail(&err, "at most %d topics", BROKER_MAX_TOPICS);
                goto usage;
            }
            if (!colon || colon == v || (size_t)(colon - v) >= sizeof topics[0].name) {
                tf_fail(&err, "--topic %s: expected NAME:PARTITIONS", v);
                goto usage;
            }
            for (const char *c = v; c < colon; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                      *c == '.' || *c == '_' || *c == '-')) {
                    tf_fail(&err, "--topic %s: topic names may hold only letters, digits, '.', '_' and '-'", v);
                    goto usage;
                }
            memcpy(topics[n_topics].name, v, (size_t)(colon - v));
            topics[n_topics].name[colon - v] = 0;
            if (tf_parse_long("--topic partitions", colon + 1, 1, 10000, &topics[n_topics].partitions, &err))
                goto usage;
            n_topics++;
            i++;
        } else {
            tf_fail(&err, "unknown or incomplete option '%s'", a);
            goto usage;
        }
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

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = broker_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* The mock cluster hangs off a client handle (for its thread and logs). */
    char es[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, broker_log_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof es);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "transfuse broker: %s\n", es);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, (int)brokers);
    int rc = 1;
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

    while (!broker_stop) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    tf_log(TF_LOG_INFO, BROKER_TAG, "stopping");
    rc = 0;
done:
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return rc;
usage:
    fprintf(stderr, "transfuse broker: %s (see transfuse broker --help)\n", err.msg);
    return 2;
}
