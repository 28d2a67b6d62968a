/* run.c: `transfuse ingest run`: ingest from the web on one machine, no
 * broker. The manifests are planned into jobs (ingest_plan: slices of
 * --job-size rows, the same jobs `ingest plan` gives), N local workers take
 * jobs from a shared list and run on each stage 1 (ingest_stage_fetch:
 * crops into the crops folder) and then stage 2 (ingest_stage_encode: the
 * job's crops to latents, into the output); the main thread draws the
 * progress line. A job whose JOB.encode.json exists is done and skipped on
 * a rerun (one with only JOB.fetch.json gets stage 2 only); --retry-failed
 * redoes the failed rows of done jobs and encodes what they add.
 * SIGINT/SIGTERM: the jobs in hand stop (their finished records published,
 * no stats file for the stage stopped), exit 130, and a rerun resumes them. */
#include "fetch/fetch_internal.h"
#include "ingest_internal.h"
#include "stats_internal.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TAG "ingest-run"

typedef struct RunJob {
    char *id, *manifest, *identity;
    uint64_t start, end, first_line, rows;
    ShardKeySet *only_lines;     /* --retry-failed: the lines to redo */
    int fetch;                   /* stage 1 to run (else its crops are there: stage 2 only) */
} RunJob;

typedef struct RunJobs {
    RunJob *v;
    size_t n, cap;
} RunJobs;

static int job_collect(void *ctx, const IngestJob *j, TfError *err)
{
    RunJobs *js = ctx;
    if (js->n == js->cap) {
        size_t cap = js->cap ? js->cap * 2 : 64;
        RunJob *v = realloc(js->v, cap * sizeof *v);
        if (!v)
            return tf_fail(err, "out of memory");
        js->v = v;
        js->cap = cap;
    }
    RunJob *r = &js->v[js->n];
    memset(r, 0, sizeof *r);
    r->id = strdup(j->id);
    r->manifest = strdup(j->manifest);
    r->identity = strdup(j->identity ? j->identity : "");
    if (!r->id || !r->manifest || !r->identity) {
        free(r->id);
        free(r->manifest);
        free(r->identity);
        return tf_fail(err, "out of memory");
    }
    r->start = j->start;
    r->end = j->end;
    r->first_line = j->first_line;
    r->rows = j->rows;
    js->n++;
    return 0;
}

static void jobs_free(RunJobs *js)
{
    for (size_t i = 0; i < js->n; i++) {
        free(js->v[i].id);
        free(js->v[i].manifest);
        free(js->v[i].identity);
        shard_keyset_free(js->v[i].only_lines);
    }
    free(js->v);
    memset(js, 0, sizeof *js);
}

/* ---- the workers ---- */

typedef struct RunShared {
    const IngestFetchOptions *base; /* everything but the job's own fields */
    const IngestEncodeOptions *enc; /* stage 2, likewise (kernels: each worker's own) */
    const ShardKeySet *topic_keys;  /* --to: the output topic's keys at the start (read-only, shared) */
    RunJob **todo;
    size_t n_todo, next;
    pthread_mutex_t lock;
    pthread_cond_t finished_cv;
    int running;                    /* workers not finished */
    /* totals over the jobs run (under lock) */
    uint64_t attempted, succeeded, skipped, failed, bytes, jobs_done, jobs_stopped, jobs_failed;
    uint64_t encoded, enc_skipped, enc_failed;
    json_t *failures;               /* {reason: n}, both stages */
    char first_error[512];
} RunShared;

/* Adds a stage call's failures to the totals (under sh->lock). */
static void failures_add(RunShared *sh, const json_t *failures)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)failures, k, v)
    {
        json_t *have = json_object_get(sh->failures, k);
        json_object_set_new(sh->failures, k, json_integer((have ? json_integer_value(have) : 0) + json_integer_value(v)));
    }
}

/* A stage call that could not run: counted, the first error kept. */
static void job_failed(RunShared *sh, const char *job, const char *stage, const char *msg)
{
    pthread_mutex_lock(&sh->lock);
    sh->jobs_failed++;
    if (!sh->first_error[0])
        snprintf(sh->first_error, sizeof sh->first_error, "job %s (%s): %s", job, stage, msg);
    pthread_mutex_unlock(&sh->lock);
    tf_log(TF_LOG_ERROR, TAG, "job %s (%s): %s (not done; a rerun redoes it)", job, stage, msg);
}

/* Stage 2 of one job: its crops (shards JOB-* of the crops folder) to
 * latents. Keys already in the output: the job's own shards there, and the
 * topic's as read once at the start of the run (a job's keys are its rows':
 * only the job itself writes them, and it runs once per run). Returns 1
 * done, 0 stopped, -1 failed (logged). */
static int run_encode(RunShared *sh, const RunJob *j, TfKernels *k)
{
    IngestEncodeOptions eo = *sh->enc;
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s-", j->id);
    eo.common.job = j->id;
    eo.from_prefix = prefix;
    eo.kernels = k;
    ShardKeySet *fk = eo.common.sink.out ? shard_keyset_new() : NULL;
    IngestJobStats st;
    TfError err = {{0}};
    int rc = -1;
    memset(&st, 0, sizeof st);
    char mpath[4200];
    snprintf(mpath, sizeof mpath, "%s/%s", eo.from, SHARD_MANIFEST_NAME);
    if (eo.common.sink.out && !fk) {
        tf_fail(&err, "out of memory");
    } else if (access(mpath, F_OK) != 0) {
        /* no crops published at all (every row so far failed): nothing to
         * encode, and the job is done */
        json_t *js = NULL;
        if (!ingest_job_stats_init(&st, &err) &&
            (js = ingest_job_stats_json(j->id, "encode", eo.from, 0, 0, &st)) &&
            !ingest_job_stats_write(eo.common.stats_dir, j->id, "encode", js, &err))
            rc = 0;
        else if (!js)
            tf_fail(&err, "out of memory");
        json_decref(js);
    } else if (!ingest_sink_keys(&eo.common.sink, prefix, fk, NULL, &err)) {
        rc = ingest_stage_encode_keys(&eo, fk, sh->topic_keys, NULL, 0, &st, &err);
    }
    shard_keyset_free(fk);
    if (rc) {
        job_failed(sh, j->id, "encode", err.msg);
        ingest_job_stats_deinit(&st);
        return -1;
    }
    pthread_mutex_lock(&sh->lock);
    sh->encoded += st.succeeded;
    sh->enc_skipped += st.skipped;
    sh->enc_failed += st.failed;
    failures_add(sh, st.failures);
    if (st.stopped)
        sh->jobs_stopped++;
    else
        sh->jobs_done++;
    pthread_mutex_unlock(&sh->lock);
    int done = !st.stopped;
    ingest_job_stats_deinit(&st);
    return done;
}

static void *run_worker(void *arg)
{
    RunShared *sh = arg;
    const TfStopFlag *stop = sh->base->common.stop;
    TfError kerr = {{0}};
    TfKernels *k = tf_kernels_new(TF_BACKEND_CPU, sh->enc->common.threads, &kerr);
    if (!k)
        job_failed(sh, "-", "encode", kerr.msg);
    for (; k;) {
        pthread_mutex_lock(&sh->lock);
        RunJob *j = !tf_stop_requested(stop) && sh->next < sh->n_todo ? sh->todo[sh->next++] : NULL;
        pthread_mutex_unlock(&sh->lock);
        if (!j)
            break;
        if (j->fetch) {
            IngestFetchOptions o = *sh->base;
            o.common.job = j->id;
            o.manifest.path = j->manifest;
            o.manifest.identity = j->identity;
            o.manifest.start = j->start;
            o.manifest.end = j->end;
            o.manifest.first_line = j->first_line;
            o.only_lines = j->only_lines;
            IngestJobStats st;
            TfError err = {{0}};
            int rc = ingest_stage_fetch(&o, &st, &err);
            int stopped = !rc && st.stopped;
            if (rc) {
                job_failed(sh, j->id, "fetch", err.msg);
            } else {
                pthread_mutex_lock(&sh->lock);
                sh->attempted += st.attempted;
                sh->succeeded += st.succeeded;
                sh->skipped += st.skipped;
                sh->failed += st.failed;
                sh->bytes += st.bytes;
                failures_add(sh, st.failures);
                if (stopped)
                    sh->jobs_stopped++;
                pthread_mutex_unlock(&sh->lock);
            }
            ingest_job_stats_deinit(&st);
            if (rc || stopped)
                continue;
        }
        if (!tf_stop_requested(stop))
            run_encode(sh, j, k);
        else {
            pthread_mutex_lock(&sh->lock);
            sh->jobs_stopped++; /* its crops are there; stage 2 runs on the rerun */
            pthread_mutex_unlock(&sh->lock);
        }
    }
    tf_kernels_free(k);
    pthread_mutex_lock(&sh->lock);
    sh->running--;
    pthread_cond_broadcast(&sh->finished_cv);
    pthread_mutex_unlock(&sh->lock);
    return NULL;
}

/* ---- the command ---- */

static const char RUN_HELP[] =
    "usage: transfuse ingest run --manifest F [--manifest F...] (--out DIR | --to kafka://HOST:PORT/TOPIC)\n"
    "                            --tokenizer FILE --vae DIR [options]\n\n"
    "Ingest from the web on one machine, without a broker, in the two stages of\n"
    "`ingest worker`: the manifests (TSV, CSV, JSON lines; gzip or zstd told by magic\n"
    "bytes) are planned into jobs of --job-size rows (the jobs `ingest plan` makes),\n"
    "and --workers local workers run each job through stage 1 (fetch with libcurl,\n"
    "many transfers in flight; decode and centre-crop; tokenize: Samples with the crop,\n"
    "tokens and provenance into shards JOB-NNNNNN.tfrecord of the crops folder) and\n"
    "then stage 2 (the job's crops through the VAE encoder: the final records, with\n"
    "latent mean and log-variance, into DIR and/or the topic). Every row ends as one\n"
    "record or one failure with its reason. Per job, DIR/ingest-jobs/JOB.fetch.json\n"
    "(counts, failures by reason, bytes, latencies), JOB.failures.jsonl (one line per\n"
    "failed row) and JOB.encode.json are written once each stage's output is durable:\n"
    "a job with both is done and skipped when the command runs again. `transfuse\n"
    "shards stat DIR` shows the records and the failure table.\n"
    "Ctrl-C or SIGTERM: the jobs in hand stop, the records they finished are kept,\n"
    "exit 130; running again resumes (rows whose key is there are skipped).\n\n"
    "  --manifest F          a manifest; repeatable (keys depend on its file name and rows)\n"
    "  --out DIR             dataset folder for the final records and the stats\n"
    "  --to kafka://HOST:PORT/TOPIC   an existing topic for the final records (with or\n"
    "                        without --out)\n"
    "  --crops DIR           the stage-1 records (crops), a folder (default DIR/crops;\n"
    "                        required with --to alone)\n"
    "  --stats-dir DIR       where the job stats go (default DIR/ingest-jobs; required with\n"
    "                        --to alone)\n"
    "  --tokenizer FILE      tokenizer.json or tokenizer.model (required)\n"
    "  --vae DIR             diffusers AutoencoderKL folder (required)\n"
    "  --job-size N          rows per job (default 10000)\n"
    "  --workers N           jobs run at once (default 1)\n"
    "  --threads N           decode/crop threads and VAE kernel threads per worker\n"
    "                        (default: the CPUs / --workers)\n"
    "  --url-col NAME, --caption-col NAME, --key-col NAME, --hash-col NAME\n"
    "                        manifest columns (defaults url, caption; none; none)\n"
    "  --size N              crop side (default 256; a multiple of the VAE's factor)\n"
    "  --crop-format F       the crops' format: raw (default: rgb8 bytes) or png\n"
    "  --png-level N         zlib level of png crops (default 1)\n"
    "  --keep-crop           keep the crop in the final records (default: latents only)\n"
    "  --batch N             VAE batch (default 8)\n"
    "  --latent-dtype T      bf16 (default), f16 or f32\n"
    "  --no-bos              do not prepend <|begin_of_text|> to the token ids\n"
    "  --tokenizer-regex M   js (default) or rust (see `transfuse ingest local --help`)\n"
    "  --max-in-flight N     rows between read and outcome per worker (default 4 x --concurrency)\n"
    "  --retry-failed        redo the failed rows of done jobs: transient failures (dns,\n"
    "                        connect, timeout, network, truncated, 408, 429, 5xx); the\n"
    "                        successes go to new shards, good shards are not rewritten\n"
    "  --retry-all           with --retry-failed: every failed row, not only transient ones\n"
    "  --shard-records N     roll shards at N records (default 100000)\n"
    "  --shard-size SIZE     roll shards at SIZE bytes (default 256M)\n"
    "  --flow-group G        Kafka flow control against group G's commits (mock broker)\n"
    "  -X key=value          librdkafka property (repeatable)\n"
    "  --max-failures N      exit 1 when more than N rows failed (the run still finishes)\n"
    "  --max-failure-rate X  exit 1 when more than the fraction X of the rows failed\n"
    "  --metrics-port N      serve Prometheus metrics on http://ADDR:N/metrics (default 0: off)\n"
    "  --metrics-addr ADDR   address of the metrics endpoint (default 127.0.0.1)\n"
    "  --register DIR        register the metrics endpoint in DIR for `transfuse top --discover`\n"
    "fetching (as `transfuse ingest fetch`):\n"
    "%s"
    "  (--allow-local-files: file:// URLs and local paths, relative ones from the manifest's\n"
    "  folder: the embedded default)\n\n"
    "Exit status: 0 done, 1 done but a failure limit was passed, 2 bad command line,\n"
    "3 a job could not run (unreadable manifest, tokenizer or VAE, output holding other\n"
    "data, a write or delivery error; the other jobs still run), 130 stopped (rerun to\n"
    "resume).\n";

/* Parses a fraction in [0, 1]. */
static int parse_fraction(const char *flag, const char *text, double *out, TfError *err)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= 0 && v <= 1))
        return tf_fail(err, "%s: '%s' is not a fraction in [0, 1]", flag, text);
    *out = v;
    return 0;
}

static int progress_enabled(void)
{
    const char *e = getenv("TRANSFUSE_PROGRESS");
    return (e && !strcmp(e, "1")) || isatty(STDERR_FILENO);
}

int ingest_run_main(int argc, char **argv)
{
    static const struct option own[] = {
        {"manifest", required_argument, 0, 'm'},      {"out", required_argument, 0, 'o'},
        {"to", required_argument, 0, 't'},            {"stats-dir", required_argument, 0, 'D'},
        {"tokenizer", required_argument, 0, 'k'},     {"vae", required_argument, 0, 'v'},
        {"job-size", required_argument, 0, 'n'},      {"workers", required_argument, 0, 'w'},
        {"threads", required_argument, 0, 'j'},       {"url-col", required_argument, 0, 'U'},
        {"caption-col", required_argument, 0, 'C'},   {"key-col", required_argument, 0, 'K'},
        {"hash-col", required_argument, 0, 'H'},      {"size", required_argument, 0, 's'},
        {"crop-format", required_argument, 0, 'f'},   {"png-level", required_argument, 0, 'L'},
        {"no-bos", no_argument, 0, 'B'},              {"tokenizer-regex", required_argument, 0, 'R'},
        {"max-in-flight", required_argument, 0, 'i'}, {"retry-failed", no_argument, 0, 'r'},
        {"retry-all", no_argument, 0, 'a'},           {"shard-records", required_argument, 0, 'N'},
        {"shard-size", required_argument, 0, 'S'},    {"flow-group", required_argument, 0, 'g'},
        {"max-failures", required_argument, 0, 'F'},  {"max-failure-rate", required_argument, 0, 'x'},
        {"metrics-port", required_argument, 0, 'P'},  {"metrics-addr", required_argument, 0, 'A'},
        {"register", required_argument, 0, 'G'},      {"help", no_argument, 0, 'h'},
        {"crops", required_argument, 0, 'Z'},         {"batch", required_argument, 0, 'b'},
        {"latent-dtype", required_argument, 0, 'l'},  {"keep-crop", no_argument, 0, 'e'},
        {0}};
    IngestFetchOptions o;
    ingest_fetch_options_init(&o);
    IngestEncodeOptions eo;
    ingest_encode_options_init(&eo);
    const char *vae_dir = NULL, *crops = NULL;
    FetchCliArgs fa = {0};
    TfError err = {{0}};
    struct option *longopts = fetch_cli_longopts(own);
    const char *manifests[256], *config[65], *tokenizer = NULL, *metrics_addr = NULL, *register_dir = NULL;
    size_t n_man = 0, n_cfg = 0;
    long job_size = 10000, workers = 1, v, metrics_port = 0;
    int threads = 0, regex_rust = 0, retry = 0, retry_all = 0, status = TF_EXIT_USAGE;
    int64_t max_failures = -1;
    double max_rate = -1;
    if (!longopts) {
        fprintf(stderr, "transfuse ingest run: out of memory\n");
        return TF_EXIT_FAIL;
    }
    TfOpts op = {.prog = "transfuse ingest run", .argc = argc, .argv = argv, .shortopts = "hX:", .longopts = longopts};
    int c;
    while ((c = tf_opts_next(&op)) != -1) {
        const char *arg = op.arg;
        int bad = 0;
        switch (c) {
        case 'm':
            if (n_man == 256)
                bad = tf_fail(&err, "at most 256 manifests");
            else
                manifests[n_man++] = arg;
            break;
        case 'o': o.common.sink.out = arg; break;
        case 't':
            bad = !kafka_url_is(arg) ? tf_fail(&err, "--to wants kafka://HOST:PORT/TOPIC, not %s", arg) : 0;
            o.common.sink.to = arg;
            break;
        case 'D': o.common.stats_dir = arg; break;
        case 'k': tokenizer = arg; break;
        case 'v': vae_dir = arg; break;
        case 'Z': crops = arg; break;
        case 'b': bad = tf_parse_long("--batch", arg, 1, 64, &v, &err); eo.batch = (int)v; break;
        case 'l':
            if (strcmp(arg, "bf16") && strcmp(arg, "f16") && strcmp(arg, "f32"))
                bad = tf_fail(&err, "--latent-dtype must be bf16, f16 or f32");
            eo.latent_dtype = arg;
            break;
        case 'e': eo.keep_crop = 1; break;
        case 'n': bad = tf_parse_long("--job-size", arg, 1, (long)1 << 40, &job_size, &err); break;
        case 'w': bad = tf_parse_long("--workers", arg, 1, 256, &workers, &err); break;
        case 'j': bad = tf_parse_threads("--threads", arg, 1024, &threads, &err); break;
        case 'U': o.manifest.columns.image = arg; break;
        case 'C': o.manifest.columns.caption = arg; break;
        case 'K': o.manifest.columns.key = arg; break;
        case 'H': o.manifest.columns.hash = arg; break;
        case 's': bad = tf_parse_long("--size", arg, 8, 4096, &v, &err); o.crop.size = (int)v; break;
        case 'f':
            if (!strcmp(arg, "raw"))
                o.crop_format = INGEST_CROP_RAW;
            else if (!strcmp(arg, "png"))
                o.crop_format = INGEST_CROP_PNG;
            else
                bad = tf_fail(&err, "--crop-format: raw or png, not %s", arg);
            break;
        case 'L': bad = tf_parse_long("--png-level", arg, 0, 9, &v, &err); o.crop_png_level = (int)v; break;
        case 'B': o.tokenizer_flags &= ~(unsigned)TOKENIZER_ADD_BOS; break;
        case 'R':
            if (strcmp(arg, "js") && strcmp(arg, "rust"))
                bad = tf_fail(&err, "--tokenizer-regex must be js or rust");
            regex_rust = !strcmp(arg, "rust");
            break;
        case 'i': bad = tf_parse_long("--max-in-flight", arg, 1, 10000000, &v, &err); o.max_rows_in_flight = (size_t)v; break;
        case 'r': retry = 1; break;
        case 'a': retry_all = 1; break;
        case 'N': bad = tf_parse_long("--shard-records", arg, 1, LONG_MAX, &v, &err); o.common.sink.shard_records = (uint64_t)v; break;
        case 'S': bad = tf_parse_size("--shard-size", arg, &o.common.sink.shard_bytes, &err); break;
        case 'g': o.common.sink.flow_group = arg; break;
        case 'X':
            if (n_cfg == 64 || !strchr(arg, '='))
                bad = tf_fail(&err, "-X key=value (at most 64)");
            else
                config[n_cfg++] = arg;
            break;
        case 'F': bad = tf_parse_long("--max-failures", arg, 0, LONG_MAX, &v, &err); max_failures = v; break;
        case 'x': bad = parse_fraction("--max-failure-rate", arg, &max_rate, &err); break;
        case 'P': bad = tf_parse_long("--metrics-port", arg, 0, 65535, &metrics_port, &err); break;
        case 'A': metrics_addr = arg; break;
        case 'G': register_dir = arg; break;
        case 'h':
            printf(RUN_HELP, FETCH_CLI_HELP);
            status = TF_EXIT_OK;
            goto out;
        default:
            if (c < FETCH_CLI_BASE)
                goto out; /* tf_opts_next said what */
            bad = fetch_cli_option(c, arg, &o.fetch, &fa, &err);
            break;
        }
        if (bad)
            goto usage;
    }
    config[n_cfg] = NULL;
    if (op.first_operand < argc) {
        tf_fail(&err, "unexpected operand %s", argv[op.first_operand]);
        goto usage;
    }
    if (!n_man || !tokenizer || !vae_dir || (!o.common.sink.out && !o.common.sink.to)) {
        tf_fail(&err, "--manifest, --tokenizer, --vae and --out or --to are required");
        goto usage;
    }
    if (!o.common.sink.out && (!o.common.stats_dir || !crops)) {
        tf_fail(&err, "--to without --out needs --stats-dir and --crops (where the job stats and the crops go)");
        goto usage;
    }
    if (retry_all && !retry) {
        tf_fail(&err, "--retry-all goes with --retry-failed");
        goto usage;
    }
    fetch_cli_args_apply(&fa, &o.fetch);
    o.common.sink.kafka_config = n_cfg ? config : NULL;
    /* stage 2 writes the output; stage 1 the crops folder */
    eo.common.sink = o.common.sink;
    char crops_dir[4096], stats_dir[4096];
    if (!crops && tf_path_join(crops_dir, sizeof crops_dir, o.common.sink.out, "crops")) {
        tf_fail(&err, "--out path too long");
        goto usage;
    }
    if (crops)
        snprintf(crops_dir, sizeof crops_dir, "%s", crops);
    if (ingest_stats_dir(&o.common, stats_dir, sizeof stats_dir, &err))
        goto usage;
    o.common.stats_dir = eo.common.stats_dir = stats_dir;
    memset(&o.common.sink, 0, sizeof o.common.sink);
    o.common.sink.out = crops_dir;
    o.common.sink.shard_records = eo.common.sink.shard_records;
    o.common.sink.shard_bytes = eo.common.sink.shard_bytes;
    eo.from = crops_dir;
    o.manifest.resolve_relative = o.fetch.allow_file;
    TfStopFlag *stop = tf_cli_stop_flag();
    o.common.stop = eo.common.stop = stop;

    /* from here on, failures are run failures */
    status = TF_EXIT_FAIL;
    RunJobs jobs = {0};
    RunShared sh = {.base = &o, .enc = &eo};
    pthread_mutex_init(&sh.lock, NULL);
    pthread_cond_init(&sh.finished_cv, NULL);
    pthread_t *tids = NULL;
    int started = 0;
    Tokenizer *tok = NULL;
    Vae *vae = NULL;
    FetchShare *share = NULL;
    ShardKeySet *topic_keys = NULL;
    TfMetricsServer *ms = NULL;
    IngestProgress *prog = ingest_progress_new();
    sh.failures = json_object();
    if (!prog || !sh.failures) {
        tf_fail(&err, "out of memory");
        goto fail;
    }
    o.common.progress = eo.common.progress = prog;
    if (!(tok = tokenizer_load_regex(tokenizer, regex_rust ? TOKENIZER_REGEX_RUST : TOKENIZER_REGEX_JS, &err)))
        goto fail;
    o.tokenizer = tok;
    if (!(vae = vae_load(vae_dir, VAE_LOAD_ENCODER, &err)))
        goto fail;
    eo.vae = vae;
    int factor = vae_downsample_factor(vae_config(vae));
    if (o.crop.size % factor) {
        tf_fail(&err, "--size %d is not a multiple of the VAE's downsampling factor %d", o.crop.size, factor);
        goto fail;
    }
    if (!(share = fetch_share_new(&err))) /* DNS results and TLS sessions, shared by the workers' fetchers */
        goto fail;
    o.fetch.share = share;
    IngestFetchOptions probe = o; /* bad fetch options fail before any work */
    probe.fetch.stop = stop;
    Fetcher *f = fetcher_new(&probe.fetch, &err);
    if (!f)
        goto fail;
    fetcher_free(f);
    ms = tf_metrics_cli_start_registered("ingest", metrics_addr, metrics_port, register_dir, &err);
    if (!ms && err.msg[0])
        goto fail;
    image_tune_process_malloc();

    /* plan */
    double t0 = tf_now();
    IngestPlanOptions po = {.manifests = manifests, .n_manifests = n_man, .columns = o.manifest.columns,
                            .job_rows = (uint64_t)job_size};
    IngestPlanStats ps;
    if (ingest_plan(&po, job_collect, &jobs, &ps, &err))
        goto fail;
    /* which jobs to run: not done (stage 1 and 2, or stage 2 only), or done with failed rows to retry */
    sh.todo = calloc(jobs.n ? jobs.n : 1, sizeof *sh.todo);
    if (!sh.todo) {
        tf_fail(&err, "out of memory");
        goto fail;
    }
    uint64_t planned = 0, done_before = 0, retrying = 0;
    for (size_t i = 0; i < jobs.n; i++) {
        RunJob *j = &jobs.v[i];
        int fd = ingest_job_done(stats_dir, j->id, "fetch", NULL, &err), ed = 0;
        if (fd < 0 || (fd && (ed = ingest_job_done(stats_dir, j->id, "encode", NULL, &err)) < 0))
            goto fail;
        if (!fd) {
            j->fetch = 1;
            sh.todo[sh.n_todo++] = j;
            planned += j->rows;
            continue;
        }
        long k = 0;
        if (retry) {
            if (!(j->only_lines = shard_keyset_new())) {
                tf_fail(&err, "out of memory");
                goto fail;
            }
            if ((k = ingest_retry_lines(stats_dir, j->id, retry_all, j->only_lines, &err)) < 0)
                goto fail;
        }
        if (k > 0) {
            j->fetch = 1;
            planned += (uint64_t)k;
            retrying++;
        }
        if (k > 0 || !ed)
            sh.todo[sh.n_todo++] = j; /* stage 1 for the retried rows, and/or stage 2 */
        else
            done_before++;
    }
    if (eo.common.sink.to && sh.n_todo) {
        if (!(topic_keys = shard_keyset_new())) {
            tf_fail(&err, "out of memory");
            goto fail;
        }
        if (record_source_keys(eo.common.sink.to, topic_keys, NULL, &err))
            goto fail;
        sh.topic_keys = topic_keys;
    }
    tf_log(TF_LOG_INFO, TAG, "%llu row(s) in %zu job(s) of up to %ld rows; %llu done before; %zu to run (%llu with "
           "failed rows retried), %llu row(s) to fetch",
           (unsigned long long)ps.rows, jobs.n, job_size, (unsigned long long)done_before, sh.n_todo,
           (unsigned long long)retrying, (unsigned long long)planned);
    ingest_progress_plan(prog, planned);
    tf_gauge_set(tf_gauge("transfuse_ingest_rows_planned", "Rows in the manifest of the run", NULL), (double)planned);

    /* run */
    size_t n_workers = (size_t)workers < sh.n_todo ? (size_t)workers : sh.n_todo;
    /* threads per worker: --threads, else the CPUs shared by the workers that will run */
    int per = n_workers ? tf_cpu_count() / (int)n_workers : 1;
    o.common.threads = eo.common.threads = threads ? threads : per > 0 ? per : 1;
    tids = calloc(n_workers ? n_workers : 1, sizeof *tids);
    if (!tids) {
        tf_fail(&err, "out of memory");
        goto fail;
    }
    sh.running = (int)n_workers;
    for (; started < (int)n_workers; started++) {
        int e = pthread_create(&tids[started], NULL, run_worker, &sh);
        if (e) { /* fewer workers: slower, not wrong (none at all: the run fails) */
            tf_fail(&err, "cannot start worker %d of %zu: %s", started + 1, n_workers, strerror(e));
            tf_log(TF_LOG_WARN, TAG, "%s; going on with %d", err.msg, started);
            pthread_mutex_lock(&sh.lock);
            sh.running -= (int)n_workers - started;
            pthread_mutex_unlock(&sh.lock);
            break;
        }
    }
    if (n_workers && !started)
        goto fail;
    int draw = progress_enabled();
    IngestProgressSnapshot before, now;
    ingest_progress_read(prog, &before);
    double t_before = tf_now(), t_run = t_before;
    pthread_mutex_lock(&sh.lock);
    while (sh.running > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&sh.finished_cv, &sh.lock, &ts);
        /* the progress line every second on a terminal, else a log line every 30 s */
        if (sh.running > 0 && (draw || tf_now() - t_before >= 30)) {
            pthread_mutex_unlock(&sh.lock);
            ingest_progress_read(prog, &now);
            double tn = tf_now();
            char line[400];
            ingest_progress_format(&now, &before, tn - t_before, tn - t_run, line, sizeof line);
            if (draw)
                fprintf(stderr, "\r\033[K%s", line);
            else
                tf_log(TF_LOG_INFO, TAG, "%s", line);
            before = now;
            t_before = tn;
            pthread_mutex_lock(&sh.lock);
        }
    }
    pthread_mutex_unlock(&sh.lock);
    for (int t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    if (draw)
        fputs("\r\033[K", stderr);
    started = 0;

    /* summary */
    double secs = tf_now() - t0;
    uint64_t rows = sh.attempted;
    fprintf(stderr,
            "ingest run: %zu job(s): %llu run, %llu stopped, %llu could not run, %llu done before; %llu rows: %llu "
            "written, %llu already there, %llu failed",
            jobs.n, (unsigned long long)sh.jobs_done, (unsigned long long)sh.jobs_stopped,
            (unsigned long long)sh.jobs_failed, (unsigned long long)done_before, (unsigned long long)rows,
            (unsigned long long)sh.succeeded, (unsigned long long)sh.skipped, (unsigned long long)sh.failed);
    const char *k;
    json_t *jv;
    int first = 1;
    json_object_foreach(sh.failures, k, jv)
    {
        fprintf(stderr, "%s%s %lld", first ? " (" : ", ", k, (long long)json_integer_value(jv));
        first = 0;
    }
    fprintf(stderr, "%s; %.1f MB in %.1f s (%.1f rows/s); encode: %llu encoded, %llu already there, %llu failed\n",
            first ? "" : ")", (double)sh.bytes / 1e6, secs, secs > 0 ? (double)rows / secs : 0.0,
            (unsigned long long)sh.encoded, (unsigned long long)sh.enc_skipped, (unsigned long long)sh.enc_failed);
    IngestStats lim = {.rows = rows, .failed = sh.failed + sh.enc_failed};
    char why[256] = "";
    int over = ingest_stats_over_limit(&lim, max_failures, max_rate, why, sizeof why);
    if (sh.jobs_failed) {
        fprintf(stderr, "transfuse ingest run: %s\n", sh.first_error);
        status = TF_EXIT_FAIL;
    } else if (tf_stop_requested(stop) && (sh.jobs_stopped || sh.next < sh.n_todo)) {
        fprintf(stderr, "transfuse ingest run: stopped; run the same command again to resume\n");
        status = TF_EXIT_STOPPED;
    } else if (over) {
        fprintf(stderr, "transfuse ingest run: failure limit passed: %s\n", why);
        status = TF_EXIT_CHECK;
    } else
        status = TF_EXIT_OK;
    goto done;
fail:
    fprintf(stderr, "transfuse ingest run: %s\n", err.msg);
done:
    for (int t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    free(tids);
    free(sh.todo);
    json_decref(sh.failures);
    pthread_cond_destroy(&sh.finished_cv);
    pthread_mutex_destroy(&sh.lock);
    jobs_free(&jobs);
    tf_metrics_server_free(ms);
    tokenizer_free(tok);
    vae_free(vae);
    fetch_share_free(share); /* after the workers: it outlives every fetcher */
    shard_keyset_free(topic_keys);
    ingest_progress_free(prog);
out:
    fetch_cli_args_deinit(&fa);
    free(longopts);
    return status;
usage:
    fprintf(stderr, "transfuse ingest run: %s (see transfuse ingest run --help)\n", err.msg);
    fetch_cli_args_deinit(&fa);
    free(longopts);
    return TF_EXIT_USAGE;
}
