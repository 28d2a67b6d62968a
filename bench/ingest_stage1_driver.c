/* ingest_stage1_driver: stage 1 of ingest (ingest_stage_fetch) for one
 * job, for bench/ingest_stage1_bench.py: the manifest's rows fetched,
 * decoded, centre-cropped, tokenized and written as Sample records (raw
 * rgb8 crops by default) to shard files in --out. Prints one JSON line on
 * stdout: the job's counts (succeeded, failed by reason, bytes) plus this process's CPU time (user, sys: every
 * thread), peak RSS (VmHWM) and wall seconds around the call.
 *
 * usage: ingest_stage1_driver --manifest F --tokenizer T --out DIR
 *            [--job NAME] [--threads N] [--concurrency N] [--per-host N]
 *            [--max-in-flight N] [--timeout S] [--png] [--fsync] [--metrics-port N]
 *
 * Private addresses are allowed (the benchmark serves loopback); shards are
 * not fsynced unless --fsync (the peer does not sync its tar files either).
 * Exits 0 when the job ran, 2 on a bad command line, 3 when it could not. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ingest.h"

/* Peak resident set of this process in KiB (VmHWM), or -1. */
static long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            kib = strtol(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"manifest", required_argument, NULL, 'm'},    {"tokenizer", required_argument, NULL, 't'},
        {"out", required_argument, NULL, 'o'},         {"job", required_argument, NULL, 'j'},
        {"threads", required_argument, NULL, 'n'},     {"concurrency", required_argument, NULL, 'c'},
        {"per-host", required_argument, NULL, 'p'},    {"max-in-flight", required_argument, NULL, 'x'},
        {"png", no_argument, NULL, 'P'},               {"fsync", no_argument, NULL, 'F'},
        {"metrics-port", required_argument, NULL, 'M'}, {"timeout", required_argument, NULL, 'T'}, {0}};
    IngestFetchOptions o;
    ingest_fetch_options_init(&o);
    o.common.job = "bench";
    o.common.sink.no_fsync = 1;
    o.fetch.allow_private_networks = 1;
    const char *tok_path = NULL;
    long v, metrics_port = 0;
    TfError err = {{0}};
    TfOpts op = {.prog = "ingest_stage1_driver", .argc = argc, .argv = argv, .shortopts = "", .longopts = longopts};
    int c;
    while ((c = tf_opts_next(&op)) != -1) {
        switch (c) {
        case 'm': o.manifest.path = op.arg; break;
        case 't': tok_path = op.arg; break;
        case 'o': o.common.sink.out = op.arg; break;
        case 'j': o.common.job = op.arg; break;
        case 'P': o.crop_format = INGEST_CROP_PNG; break;
        case 'F': o.common.sink.no_fsync = 0; break;
        case 'T': /* seconds for one attempt (fetch.timeout_s) */
            if (tf_parse_long("--timeout", op.arg, 1, 3600, &v, &err)) {
                fprintf(stderr, "ingest_stage1_driver: %s\n", err.msg);
                return TF_EXIT_USAGE;
            }
            o.fetch.timeout_s = (double)v;
            break;
        case 'n': case 'c': case 'p': case 'x': case 'M': {
            const char *flag = c == 'n' ? "--threads" : c == 'c' ? "--concurrency" : c == 'p' ? "--per-host"
                             : c == 'x' ? "--max-in-flight" : "--metrics-port";
            if (tf_parse_long(flag, op.arg, c == 'n' || c == 'x' || c == 'M' ? 0 : 1, c == 'M' ? 65535 : 1000000, &v,
                              &err)) {
                fprintf(stderr, "ingest_stage1_driver: %s\n", err.msg);
                return TF_EXIT_USAGE;
            }
            if (c == 'n')
                o.common.threads = (int)v;
            else if (c == 'c')
                o.fetch.concurrency = (int)v;
            else if (c == 'p')
                o.fetch.max_per_host = (int)v;
            else if (c == 'x')
                o.max_rows_in_flight = (size_t)v;
            else
                metrics_port = v;
            break;
        }
        default: return TF_EXIT_USAGE;
        }
    }
    if (!o.manifest.path || !tok_path || !o.common.sink.out) {
        fprintf(stderr, "ingest_stage1_driver: --manifest, --tokenizer and --out are required\n");
        return TF_EXIT_USAGE;
    }
    TfMetricsServer *ms = tf_metrics_cli_start("ingest_stage1_driver", NULL, metrics_port, &err);
    if (!ms && err.msg[0]) {
        fprintf(stderr, "ingest_stage1_driver: %s\n", err.msg);
        return TF_EXIT_FAIL;
    }
    Tokenizer *tok = tokenizer_load(tok_path, &err);
    if (!tok) {
        fprintf(stderr, "ingest_stage1_driver: %s\n", err.msg);
        tf_metrics_server_free(ms);
        return TF_EXIT_FAIL;
    }
    o.tokenizer = tok;
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    double t0 = tf_now();
    IngestJobStats st;
    int rc = ingest_stage_fetch(&o, &st, &err);
    double wall = tf_now() - t0;
    getrusage(RUSAGE_SELF, &r1);
    if (rc) {
        fprintf(stderr, "ingest_stage1_driver: %s\n", err.msg);
    } else {
        json_t *j = json_pack("{s:I,s:I,s:I,s:O,s:I,s:f,s:f,s:f,s:I}", "succeeded", (json_int_t)st.succeeded,
                              "failed", (json_int_t)st.failed, "skipped", (json_int_t)st.skipped, "failures",
                              st.failures, "bytes", (json_int_t)st.bytes, "wall_s", wall, "user_s",
                              tv_s(r1.ru_utime) - tv_s(r0.ru_utime), "sys_s", tv_s(r1.ru_stime) - tv_s(r0.ru_stime),
                              "peak_rss_kib", (json_int_t)peak_rss_kib());
        char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        printf("%s\n", s);
        free(s);
        json_decref(j);
    }
    ingest_job_stats_deinit(&st);
    tokenizer_free(tok);
    tf_metrics_server_free(ms);
    return rc ? TF_EXIT_FAIL : TF_EXIT_OK;
}
