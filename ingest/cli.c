/* cli.c: `transfuse ingest`: a manifest of local images and captions to a
 * dataset of Sample records (crop, tokens, VAE latents, provenance). */
#include "ingest.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "preprocess.h"

static const char HELP[] =
    "usage: transfuse ingest [local] --manifest FILE --out DIR --tokenizer PATH --vae DIR [options]\n\n"
    "Turns a manifest of (image, caption) rows into a dataset of transfuse.v1.Sample\n"
    "records: each image is read, hashed (SHA-256), decoded, center-cropped; its\n"
    "caption tokenized (Llama-3 BPE); the crop encoded by the VAE to a latent mean\n"
    "and log-variance; the record written to shard files with index and manifest.\n"
    "Failed rows are counted by class with their reason (printed, rate-limited)\n"
    "and skipped; the summary and DIR/ingest-stats.json give the counts.\n"
    "Running again on the same DIR resumes: rows whose key is already there are\n"
    "skipped. Ctrl-C drops the batch in hand, publishes the records finished\n"
    "before it and exits 130 (within about a second); a second Ctrl-C ends the\n"
    "process at once. Either way nothing half-written becomes visible.\n\n"
    "Manifests: .tsv, .csv (RFC 4180) or .jsonl, with a header (TSV/CSV). Images\n"
    "are local paths (relative to the manifest's folder) or file:// URLs;\n"
    "fetching http(s) URLs is not built yet. Other columns go to Sample.extra.\n\n"
    "  --manifest FILE       rows to ingest (required)\n"
    "  --out DIR             dataset folder (required; created or resumed)\n"
    "  --tokenizer PATH      tokenizer.json or tokenizer.model (required)\n"
    "  --vae DIR             diffusers AutoencoderKL folder (required)\n"
    "  --url-col NAME        image column (default url)\n"
    "  --caption-col NAME    caption column (default caption)\n"
    "  --key-col NAME        key column (default: a key per row, derived from its line number,\n"
    "                        image and caption: the same manifest gives the same keys); a\n"
    "                        key seen on an earlier row is a duplicate_key failure\n"
    "  --size N              crop side in pixels (default 256)\n"
    "  --threads N           decode/tokenize threads and VAE kernel threads (default and 0: all CPUs)\n"
    "  --batch N             VAE batch (default 8, at most 64)\n"
    "  --latent-dtype T      bf16 (default), f16 or f32\n"
    "  --shard-records N     roll shards at N records (default 100000)\n"
    "  --shard-size SIZE     roll shards at SIZE bytes (default 256M)\n"
    "  --no-bos              do not prepend <|begin_of_text|> to the token ids\n"
    "  --max-failures N      exit 1 when more than N rows failed (the run still finishes)\n"
    "  --metrics-port N      serve Prometheus metrics on http://ADDR:N/metrics (default 0: off)\n"
    "  --metrics-addr ADDR   address to bind the metrics endpoint to (default 127.0.0.1)\n"
    "  --register DIR        register the metrics endpoint in DIR for `transfuse top --discover`\n"
    "                        (serves on a free port when --metrics-port is 0)\n"
    "  --max-failure-rate X  exit 1 when more than the fraction X of the rows failed\n"
    "  --tokenizer-regex M   js (default: ids as the transformers.js reference gives) or rust\n"
    "                        (as Hugging Face's Rust tokenizers and tiktoken give; they differ\n"
    "                        only on rare characters such as U+FEFF; the manifest records which)\n\n"
    "Exit status: 0 done (failed rows are counted in the stats), 1 done but a failure\n"
    "limit was passed, 2 bad command line (nothing done), 3 could not run (unreadable\n"
    "manifest, tokenizer or VAE; an output folder holding other data; a write error),\n"
    "130 stopped by Ctrl-C or SIGTERM (rerun to resume).\n";

int ingest_main(int argc, char **argv)
{
    IngestOptions o = {.bos = 1};
    static const struct option opts[] = {
        {"manifest", required_argument, 0, 'm'},     {"out", required_argument, 0, 'o'},
        {"tokenizer", required_argument, 0, 't'},    {"vae", required_argument, 0, 'v'},
        {"url-col", required_argument, 0, 'U'},      {"caption-col", required_argument, 0, 'C'},
        {"key-col", required_argument, 0, 'K'},      {"size", required_argument, 0, 's'},
        {"threads", required_argument, 0, 'j'},      {"batch", required_argument, 0, 'b'},
        {"latent-dtype", required_argument, 0, 'd'}, {"shard-records", required_argument, 0, 'n'},
        {"shard-size", required_argument, 0, 'S'},   {"no-bos", no_argument, 0, 'B'},
        {"tokenizer-regex", required_argument, 0, 'R'}, {"max-failures", required_argument, 0, 'F'},
        {"max-failure-rate", required_argument, 0, 'r'}, {"metrics-port", required_argument, 0, 'P'},
        {"metrics-addr", required_argument, 0, 'A'}, {"register", required_argument, 0, 'G'},
        {"help", no_argument, 0, 'h'},               {0}};
    int64_t max_failures = -1;
    double max_rate = -1;
    long metrics_port = 0;
    const char *metrics_addr = NULL, *register_dir = NULL;
    TfError err = {{0}};
    TfOpts op = {.prog = "transfuse ingest", .argc = argc, .argv = argv, .shortopts = "h", .longopts = opts};
    long v;
    int c;
    while ((c = tf_opts_next(&op)) != -1) {
        const char *arg = op.arg;
        switch (c) {
        case 'm': o.manifest = arg; break;
        case 'o': o.out = arg; break;
        case 't': o.tokenizer = arg; break;
        case 'v': o.vae = arg; break;
        case 'U': o.columns.image = arg; break;
        case 'C': o.columns.caption = arg; break;
        case 'K': o.columns.key = arg; break;
        case 's':
            if (tf_parse_long("--size", arg, 8, 4096, &v, &err))
                goto usage;
            o.size = (int)v;
            break;
        case 'j':
            if (tf_parse_threads("--threads", arg, 1024, &o.threads, &err))
                goto usage;
            break;
        case 'b':
            if (tf_parse_long("--batch", arg, 1, 64, &v, &err))
                goto usage;
            o.batch = (int)v;
            break;
        case 'd':
            if (strcmp(arg, "bf16") && strcmp(arg, "f16") && strcmp(arg, "f32")) {
                tf_fail(&err, "--latent-dtype must be bf16, f16 or f32");
                goto usage;
            }
            o.latent_dtype = arg;
            break;
        case 'n':
            if (tf_parse_long("--shard-records", arg, 1, LONG_MAX, &v, &err))
                goto usage;
            o.shard_records = (uint64_t)v;
            break;
        case 'S':
            if (tf_parse_size("--shard-size", arg, &o.shard_bytes, &err))
                goto usage;
            break;
        case 'B': o.bos = 0; break;
        case 'R':
            if (strcmp(arg, "js") && strcmp(arg, "rust")) {
                tf_fail(&err, "--tokenizer-regex must be js or rust");
                goto usage;
            }
            o.regex_rust = !strcmp(arg, "rust");
            break;
        case 'F':
            if (tf_parse_long("--max-failures", arg, 0, LONG_MAX, &v, &err))
                goto usage;
            max_failures = v;
            break;
        case 'r': {
            char *end;
            errno = 0;
            max_rate = strtod(arg, &end);
            if (errno || end == arg || *end || !(max_rate >= 0 && max_rate <= 1)) {
                tf_fail(&err, "--max-failure-rate: '%s' is not a fraction in [0, 1]", arg);
                goto usage;
            }
            break;
        }
        case 'P':
            if (tf_parse_long("--metrics-port", arg, 0, 65535, &metrics_port, &err))
                goto usage;
            break;
        case 'A': metrics_addr = arg; break;
        case 'G': register_dir = arg; break;
        case 'h': fputs(HELP, stdout); return TF_EXIT_OK;
        default: return TF_EXIT_USAGE;
        }
    }
    if (op.first_operand != argc) {
        tf_fail(&err, "unexpected argument '%s'", argv[op.first_operand]);
        goto usage;
    }
    if (!o.manifest || !o.out || !o.tokenizer || !o.vae) {
        tf_fail(&err, "--manifest, --out, --tokenizer and --vae are required");
        goto usage;
    }
    o.stop = tf_cli_stop_flag();
    TfMetricsServer *metrics =
        tf_metrics_cli_start_registered("ingest", metrics_addr, metrics_port, register_dir, &err);
    if (!metrics && err.msg[0]) {
        fprintf(stderr, "transfuse ingest: %s\n", err.msg);
        return TF_EXIT_FAIL;
    }
    image_tune_process_malloc(); /* libjpeg's progressive buffers stay on the heap */
    IngestStats st;
    int rc = ingest_run(&o, &st, &err);
    tf_metrics_server_free(metrics);
    if (rc) {
        fprintf(stderr, "transfuse ingest: %s\n", err.msg);
        return TF_EXIT_FAIL;
    }
    char why[256] = "";
    int over = !st.stopped && ingest_stats_over_limit(&st, max_failures, max_rate, why, sizeof why);
    json_t *fails = json_object();
    for (int i = 1; i < INGEST_FAIL_CLASSES; i++)
        if (st.failures[i])
            json_object_set_new(fails, ingest_failure_name(i), json_integer((json_int_t)st.failures[i]));
    json_t *report = json_pack("{s:s,s:I,s:I,s:I,s:I,s:O,s:f,s:f,s:b}", "manifest", o.manifest, "rows",
                               (json_int_t)st.rows, "written", (json_int_t)st.written, "skipped_existing",
                               (json_int_t)st.skipped_existing, "failed", (json_int_t)st.failed, "failures", fails,
                               "seconds", st.seconds, "rows_per_second", st.seconds > 0 ? st.rows / st.seconds : 0.0,
                               "stopped", st.stopped);
    if (report && over)
        json_object_set_new(report, "over_limit", json_string(why));
    char path[4096];
    if (tf_path_join(path, sizeof path, o.out, "ingest-stats.json") == 0 &&
        tf_json_write_file_atomic(path, report, &err))
        fprintf(stderr, "transfuse ingest: %s\n", err.msg);
    fprintf(stderr, "ingest: %llu rows: %llu written, %llu already there, %llu failed", (unsigned long long)st.rows,
            (unsigned long long)st.written, (unsigned long long)st.skipped_existing, (unsigned long long)st.failed);
    const char *k;
    json_t *jv;
    int first = 1;
    json_object_foreach(fails, k, jv)
    {
        fprintf(stderr, "%s%s %lld", first ? " (" : ", ", k, (long long)json_integer_value(jv));
        first = 0;
    }
    fprintf(stderr, "%s in %.1f s (%.1f rows/s) -> %s\n", first ? "" : ")", st.seconds,
            st.seconds > 0 ? st.rows / st.seconds : 0.0, o.out);
    json_decref(fails);
    json_decref(report);
    if (over)
        fprintf(stderr, "transfuse ingest: failure limit passed: %s\n", why);
    return st.stopped ? TF_EXIT_STOPPED : over ? TF_EXIT_CHECK : TF_EXIT_OK;
usage:
    fprintf(stderr, "transfuse ingest: %s (see transfuse ingest --help)\n", err.msg);
    return TF_EXIT_USAGE;
}

/* ---- `transfuse ingest`: the subcommands, and the local mode without one ---- */

static const TfCommand INGEST_COMMANDS[] = {
    {"run", "ingest from the web on one machine: manifests -> jobs -> fetch, crop, tokenize -> records", ingest_run_main},
    {"fetch", "the fetcher on its own: URLs in, one outcome line per URL out", ingest_fetch_main},
    {"encode", "stage 2 on its own: crops (folder or topic) -> VAE latents -> final records", ingest_encode_main},
    {"plan", "split manifests into jobs (Job messages) for `ingest worker`", ingest_plan_main},
    {"worker", "a consumer-group member: stage 1 jobs from a topic (--jobs) or stage 2 (--encode)", ingest_worker_main},
    {"local", "local image files to records with latents (also: its options right after `ingest`)", ingest_main},
};

static const char INGEST_ABOUT[] =
    "`transfuse ingest --manifest F --out DIR --tokenizer T --vae V` (options, no subcommand)\n"
    "is `transfuse ingest local`: the local pipeline.";

int ingest_dispatch(int argc, char **argv)
{
    /* the local mode: its options right after `ingest` */
    if (argc >= 2 && argv[1][0] == '-' && strcmp(argv[1], "-h") && strcmp(argv[1], "--help"))
        return ingest_main(argc, argv);
    return tf_cli_dispatch("transfuse ingest", INGEST_ABOUT, NULL, INGEST_COMMANDS,
                           sizeof INGEST_COMMANDS / sizeof INGEST_COMMANDS[0], argc, argv);
}
