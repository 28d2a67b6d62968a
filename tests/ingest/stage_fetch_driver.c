/* stage_fetch_driver: runs ingest_stage_fetch for one job, for
 * test_stage_fetch.py (the C API without the `ingest run` command around
 * it). Prints the call's IngestJobStats as one JSON line on stdout; exits 0
 * when the call returned 0 (130 when it stopped), 3 when it returned -1.
 *
 * usage: stage_fetch_driver --manifest F --tokenizer T --job NAME
 *            [--out DIR] [--to kafka://...] [--stats-dir D] [--identity ID]
 *            [--start N --end N --first-line N] [--threads N] [--png]
 *            [--allow-address CIDR] [--allow-private] [--allow-file]
 *            [--retry-failed [--retry-all]] [--max-in-flight N] [--concurrency N]
 *            [--resolve H:P:A] [--key-col C] [--hash-col C] */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest.h"
#include "stats_internal.h"

static TfStopFlag stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&stop_flag, 1);
}

int main(int argc, char **argv)
{
    IngestFetchOptions o;
    ingest_fetch_options_init(&o);
    o.fetch.timeout_s = 5;
    o.fetch.connect_timeout_s = 5;
    o.fetch.retry_base_s = 0.05;
    o.fetch.retry_max_s = 5;
    o.common.sink.no_fsync = 1;
    const char *tok_path = NULL, *resolve[8];
    size_t n_resolve = 0;
    int retry = 0, retry_all = 0;
    static const struct option opts[] = {
        {"manifest", 1, 0, 'm'}, {"tokenizer", 1, 0, 't'},   {"job", 1, 0, 'j'},        {"out", 1, 0, 'o'},
        {"to", 1, 0, 'T'},       {"stats-dir", 1, 0, 'd'},   {"identity", 1, 0, 'i'},   {"start", 1, 0, 's'},
        {"end", 1, 0, 'e'},      {"first-line", 1, 0, 'l'},  {"threads", 1, 0, 'n'},    {"png", 0, 0, 'p'},
        {"allow-address", 1, 0, 'a'}, {"allow-private", 0, 0, 'P'}, {"allow-file", 0, 0, 'F'},
        {"retry-failed", 0, 0, 'r'}, {"retry-all", 0, 0, 'R'}, {"max-in-flight", 1, 0, 'x'},
        {"concurrency", 1, 0, 'c'}, {"resolve", 1, 0, 'v'},  {"key-col", 1, 0, 'K'},    {"hash-col", 1, 0, 'H'},
        {0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o.manifest.path = optarg; break;
        case 't': tok_path = optarg; break;
        case 'j': o.common.job = optarg; break;
        case 'o': o.common.sink.out = optarg; break;
        case 'T': o.common.sink.to = optarg; break;
        case 'd': o.common.stats_dir = optarg; break;
        case 'i': o.manifest.identity = optarg; break;
        case 's': o.manifest.start = strtoull(optarg, NULL, 10); break;
        case 'e': o.manifest.end = strtoull(optarg, NULL, 10); break;
        case 'l': o.manifest.first_line = strtoull(optarg, NULL, 10); break;
        case 'n': o.common.threads = atoi(optarg); break;
        case 'p': o.crop_format = INGEST_CROP_PNG; break;
        case 'a': o.fetch.allow_addresses = optarg; break;
        case 'P': o.fetch.allow_private_networks = 1; break;
        case 'F': o.fetch.allow_file = 1; break;
        case 'r': retry = 1; break;
        case 'R': retry_all = 1; break;
        case 'x': o.max_rows_in_flight = strtoull(optarg, NULL, 10); break;
        case 'c': o.fetch.concurrency = atoi(optarg); break;
        case 'v': if (n_resolve < 8) resolve[n_resolve++] = optarg; break;
        case 'K': o.manifest.columns.key = optarg; break;
        case 'H': o.manifest.columns.hash = optarg; break;
        default: return 2;
        }
    }
    o.fetch.resolve = resolve;
    o.fetch.n_resolve = n_resolve;
    if (!o.manifest.path || !tok_path || !o.common.job) {
        fprintf(stderr, "stage_fetch_driver: --manifest, --tokenizer and --job are required\n");
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    o.common.stop = &stop_flag;
    TfError err = {{0}};
    Tokenizer *tok = tokenizer_load(tok_path, &err);
    if (!tok) {
        fprintf(stderr, "stage_fetch_driver: %s\n", err.msg);
        return 3;
    }
    o.tokenizer = tok;
    IngestProgress *prog = ingest_progress_new();
    o.common.progress = prog;
    ShardKeySet *lines = NULL;
    if (retry) {
        char dir[4096];
        if (ingest_stats_dir(&o.common, dir, sizeof dir, &err) || !(lines = shard_keyset_new()) ||
            ingest_retry_lines(dir, o.common.job, retry_all, lines, &err) < 0) {
            fprintf(stderr, "stage_fetch_driver: %s\n", err.msg);
            return 3;
        }
        o.only_lines = lines;
    }
    IngestJobStats st;
    int rc = ingest_stage_fetch(&o, &st, &err);
    if (rc) {
        fprintf(stderr, "stage_fetch_driver: %s\n", err.msg);
        ingest_job_stats_deinit(&st);
        tokenizer_free(tok);
        return 3;
    }
    IngestProgressSnapshot snap;
    ingest_progress_read(prog, &snap);
    json_t *j = ingest_job_stats_json(o.common.job, "fetch", o.manifest.path, o.manifest.start, o.manifest.end, &st);
    json_object_set_new(j, "progress",
                        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "rows", (json_int_t)snap.rows, "ok",
                                  (json_int_t)snap.ok, "failed", (json_int_t)snap.failed, "skipped",
                                  (json_int_t)snap.skipped, "in_flight", (json_int_t)snap.in_flight, "fetch_queue",
                                  (json_int_t)snap.fetch_queue, "crop_queue", (json_int_t)snap.crop_queue));
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    printf("%s\n", s);
    free(s);
    json_decref(j);
    int stopped = st.stopped;
    ingest_job_stats_deinit(&st);
    shard_keyset_free(lines);
    ingest_progress_free(prog);
    tokenizer_free(tok);
    return stopped ? 130 : 0;
}
