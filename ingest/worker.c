/* worker.c: `transfuse ingest worker`, one member of a Kafka consumer
 * group (kafka_group_*) sharing ingest work with the other members:
 *   stage 1 (--jobs): the group consumes the jobs topic `ingest plan`
 *     filled; each Job message is one manifest slice for ingest_stage_fetch;
 *   stage 2 (--encode --from kafka://.../crops): the group shares the crops
 *     topic's partitions (membership only); each assigned partition is read
 *     in chunks [committed, committed + --chunk) up to its high watermark,
 *     and each chunk is one call of the encode stage (job TOPIC.pP.OFFSET).
 * The stage runs on a thread while this thread keeps the member in the
 * group. A job's offset is committed only after the stage returned 0
 * without a stop, i.e. after its output is durable; a job whose partition
 * is revoked is stopped and committed only if it had finished; a worker
 * that dies leaves its job to the partition's next owner, which redoes it:
 * keys already in the output are skipped, so nothing is duplicated.
 * SIGINT/SIGTERM: the job in hand stops (not committed), the member leaves
 * the group, exit 130. */
#include "fetch/fetch_internal.h"
#include "ingest_internal.h"
#include "stats_internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAG "ingest-worker"

typedef struct Worker {
    int encode;                  /* 1: stage 2 over a crops topic; 0: stage-1 jobs */
    char bootstrap[1024], topic[256]; /* the group's topic: jobs, or crops */
    const char *group;
    const char *const *config;   /* -X */
    KafkaGroup *g;
    const TfStopFlag *stop;      /* the process's */
    TfStopFlag job_stop;         /* the job in hand's: the process's stop, or a revocation */

    /* the job in hand */
    int busy;
    int32_t part;
    int64_t next_offset;         /* committed when the job finished */
    char job[256];
    pthread_t thread;
    atomic_int finished;
    int rc;
    IngestJobStats st;
    TfError err;
    int failed;                  /* a job failed: the worker ends (exit 3) */
    uint64_t jobs_done, jobs_skipped;

    /* stage 2 */
    IngestEncodeCli enc;
    int64_t chunk;               /* records per job */
    IngestEncodeOptions eo;      /* the job's: enc.opts + its source */
    KafkaSourceOptions ko;
    KafkaPosition *kstart, *kend;
    int32_t kpart;
    char reader_group[300];
    ShardKeySet **folder_keys;   /* per crops partition: the keys of its output shards, or NULL
                                    (not loaded: on first use, after a revocation or a failure) */
    size_t n_parts;
    ShardKeySet *topic_keys;     /* the output topic's keys, read up to topic_pos */
    KafkaPosition *topic_pos;
    KafkaTopicInfo info;         /* crops topic watermarks */
    double described_at;

    /* stage 1 */
    IngestFetchOptions fo;
    IngestJob *j;
    Tokenizer *tok;
    const char *tokenizer_path;
    long size, png_level;
    int crop_format, bos;
    IngestSink sink;
    const char *stats_dir_opt;
    int threads;
} Worker;

/* ---- the job thread ---- */

static void *job_main(void *arg)
{
    Worker *w = arg;
    if (w->encode) {
        ShardKeySet *fk = w->enc.opts.common.sink.out ? w->folder_keys[w->part] : NULL;
        ShardKeySet *tk = w->enc.opts.common.sink.to ? w->topic_keys : NULL;
        ShardKeySet *written[2];
        size_t nw = 0;
        if (fk)
            written[nw++] = fk;
        if (tk)
            written[nw++] = tk;
        w->rc = ingest_stage_encode_keys(&w->eo, fk, tk, written, nw, &w->st, &w->err);
    } else {
        w->rc = ingest_stage_fetch(&w->fo, &w->st, &w->err);
    }
    atomic_store(&w->finished, 1);
    return NULL;
}

static int job_start(Worker *w, TfError *err)
{
    atomic_store(&w->job_stop, 0);
    atomic_store(&w->finished, 0);
    memset(&w->st, 0, sizeof w->st);
    memset(&w->err, 0, sizeof w->err);
    int e = pthread_create(&w->thread, NULL, job_main, w);
    if (e)
        return tf_fail(err, "cannot start the job thread: %s", strerror(e));
    w->busy = 1;
    return 0;
}

/* Forgets what the key caches hold of partition p's job (keys appended
 * but maybe not durable): they are read again from the outputs. */
static void keys_drop(Worker *w, int32_t p)
{
    if (!w->encode)
        return;
    if ((size_t)p < w->n_parts) {
        shard_keyset_free(w->folder_keys[p]);
        w->folder_keys[p] = NULL;
    }
    if (w->topic_keys) {
        shard_keyset_free(w->topic_keys);
        w->topic_keys = NULL;
        kafka_position_free(w->topic_pos);
        w->topic_pos = NULL;
    }
}

/* Ends the job in hand: stops it when `stop_it` (a revocation, the
 * process's stop), waits for it, and commits its offset when it finished
 * with its output durable. Safe inside on_revoke. */
static void job_end(Worker *w, int stop_it)
{
    if (!w->busy)
        return;
    if (stop_it)
        atomic_store(&w->job_stop, 1);
    pthread_join(w->thread, NULL);
    w->busy = 0;
    TfError err = {{0}};
    if (w->rc && atomic_load(&w->job_stop)) {
        /* an error on the way out of a stop we asked for (a delivery wait
         * given up): the job is not done, and that is all */
        tf_log(TF_LOG_INFO, TAG, "job %s stopped (%s; not committed: redone later)", w->job, w->err.msg);
        keys_drop(w, w->part);
    } else if (w->rc) {
        tf_log(TF_LOG_ERROR, TAG, "job %s failed: %s (not committed: redone by the partition's next owner)", w->job,
               w->err.msg);
        w->failed = 1;
        keys_drop(w, w->part);
    } else if (w->st.stopped) {
        tf_log(TF_LOG_INFO, TAG, "job %s stopped (not committed: redone later)", w->job);
        keys_drop(w, w->part);
    } else {
        if (w->encode)
            ingest_encode_report(w->job, &w->st);
        else
            fprintf(stderr, "job %s: %" PRIu64 " rows: %" PRIu64 " ok, %" PRIu64 " already there, %" PRIu64
                    " failed in %.1f s\n", w->job, w->st.attempted, w->st.succeeded, w->st.skipped, w->st.failed,
                    w->st.seconds);
        if (kafka_group_commit(w->g, w->part, w->next_offset, &err))
            tf_log(TF_LOG_WARN, TAG, "job %s done, but its offset was not committed (%s): its next owner redoes it "
                   "and skips its keys", w->job, err.msg);
        else
            w->jobs_done++;
    }
    ingest_job_stats_deinit(&w->st);
    ingest_job_free(w->j);
    w->j = NULL;
}

static void on_revoke(void *ctx, const int32_t *parts, size_t n)
{
    Worker *w = ctx;
    for (size_t i = 0; i < n; i++) {
        if (w->busy && parts[i] == w->part) {
            tf_log(TF_LOG_INFO, TAG, "partition %" PRId32 " revoked: stopping job %s", parts[i], w->job);
            job_end(w, 1);
        }
        /* another member writes its output from now on */
        if (w->encode && (size_t)parts[i] < w->n_parts) {
            shard_keyset_free(w->folder_keys[parts[i]]);
            w->folder_keys[parts[i]] = NULL;
        }
    }
}

static void on_assign(void *ctx, const int32_t *parts, size_t n)
{
    Worker *w = ctx;
    char list[512] = "";
    size_t k = 0;
    for (size_t i = 0; i < n && k + 16 < sizeof list; i++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s%" PRId32, i ? "," : "", parts[i]);
    tf_log(TF_LOG_INFO, TAG, "assigned partition(s) %s of %s (now %zu)", list, w->topic,
           kafka_group_assignment(w->g, NULL, NULL));
}

/* ---- stage 2: chunks of the crops topic's partitions ---- */

/* Adds the keys the output topic gained since the last call (all of them
 * the first time). */
static int topic_keys_refresh(Worker *w, TfError *err)
{
    char bs[1024], topic[256];
    if (kafka_url_parse(w->enc.opts.common.sink.to, bs, sizeof bs, topic, sizeof topic, err))
        return -1;
    if (!w->topic_keys && !(w->topic_keys = shard_keyset_new()))
        return tf_fail(err, "out of memory");
    char group[320];
    snprintf(group, sizeof group, "%s-keys", w->group);
    KafkaSourceOptions ko = {.bootstrap = bs, .topic = topic, .group_id = group, .start = w->topic_pos,
                             .until = KAFKA_UNTIL_SNAPSHOT, .commit_interval_ms = -1, .config = w->config};
    KafkaSource *s = kafka_source_new(&ko, err);
    if (!s)
        return -1;
    int rc;
    KafkaRecord r;
    while ((rc = kafka_source_next(s, &r, 200, err)) != KAFKA_END) {
        if (rc < 0)
            break;
        if (tf_stop_requested(w->stop)) {
            rc = tf_fail(err, "stopped");
            break;
        }
        if (rc == KAFKA_RECORD && r.key_len && shard_keyset_add(w->topic_keys, r.key, r.key_len, 0, NULL) < 0) {
            rc = tf_fail(err, "out of memory");
            break;
        }
    }
    if (rc == KAFKA_END) {
        kafka_position_free(w->topic_pos);
        if (!(w->topic_pos = kafka_position_copy(kafka_source_position(s))))
            rc = tf_fail(err, "out of memory");
    }
    kafka_source_free(s);
    return rc == KAFKA_END ? 0 : -1;
}

/* The crops topic's watermarks, at most once a second. */
static int describe(Worker *w, TfError *err)
{
    if (tf_now() - w->described_at < 1.0)
        return 0;
    kafka_topic_info_deinit(&w->info);
    if (kafka_topic_describe(w->bootstrap, w->topic, w->config, &w->info, err))
        return -1;
    if (w->info.n > w->n_parts) {
        ShardKeySet **f = realloc(w->folder_keys, w->info.n * sizeof *f);
        if (!f)
            return tf_fail(err, "out of memory");
        memset(f + w->n_parts, 0, (w->info.n - w->n_parts) * sizeof *f);
        w->folder_keys = f;
        w->n_parts = w->info.n;
    }
    w->described_at = tf_now();
    return 0;
}

/* Starts the next chunk of an assigned partition that has records past
 * its committed offset. Returns 1 when a job started, 0 when there is
 * nothing to do, -1 with err. */
static int encode_next(Worker *w, TfError *err)
{
    const int32_t *parts;
    const int64_t *committed;
    size_t n = kafka_group_assignment(w->g, &parts, &committed);
    if (!n)
        return 0;
    if (describe(w, err))
        return -1;
    const IngestSink *sink = &w->enc.opts.common.sink;
    for (size_t i = 0; i < n; i++) {
        int32_t p = parts[i];
        const KafkaPartitionInfo *pi = NULL;
        for (size_t k = 0; k < w->info.n; k++)
            if (w->info.parts[k].partition == p)
                pi = &w->info.parts[k];
        if (!pi || pi->high < 0 || (size_t)p >= w->n_parts)
            continue;
        int64_t begin = committed[i] >= 0 ? committed[i] : pi->low > 0 ? pi->low : 0;
        if (begin >= pi->high)
            continue;
        int64_t end = pi->high - begin > w->chunk ? begin + w->chunk : pi->high;
        char prefix[300];
        snprintf(prefix, sizeof prefix, "%s.p%" PRId32 ".", w->topic, p);
        if (sink->out && !w->folder_keys[p]) {
            if (!(w->folder_keys[p] = shard_keyset_new()))
                return tf_fail(err, "out of memory");
            if (ingest_sink_keys(sink, prefix, w->folder_keys[p], NULL, err))
                return -1;
        }
        if (sink->to && topic_keys_refresh(w, err))
            return -1;
        snprintf(w->job, sizeof w->job, "%s%012" PRId64, prefix, begin);
        kafka_position_free(w->kstart);
        kafka_position_free(w->kend);
        w->kend = NULL;
        if (!(w->kstart = kafka_position_new(w->topic)) || !(w->kend = kafka_position_new(w->topic)) ||
            kafka_position_set(w->kstart, p, begin, err) || kafka_position_set(w->kend, p, end, err))
            return tf_fail(err, "out of memory");
        w->kpart = p;
        w->ko = (KafkaSourceOptions){.partitions = &w->kpart, .n_partitions = 1, .start = w->kstart, .end = w->kend,
                                     .until = KAFKA_UNTIL_SNAPSHOT, .commit_interval_ms = -1,
                                     .group_id = w->reader_group, .config = w->config};
        w->eo = w->enc.opts;
        w->eo.kafka = &w->ko;
        w->eo.common.job = w->job;
        w->eo.common.stop = &w->job_stop;
        w->part = p;
        w->next_offset = end;
        tf_log(TF_LOG_INFO, TAG, "job %s: partition %" PRId32 " offsets [%" PRId64 ", %" PRId64 ")", w->job, p, begin,
               end);
        return job_start(w, err) ? -1 : 1;
    }
    return 0;
}

/* ---- stage 1: Job messages ---- */

static ManifestFormat job_format(const char *f)
{
    return !f || !*f ? MANIFEST_AUTO : !strcmp(f, "tsv") ? MANIFEST_TSV : !strcmp(f, "csv") ? MANIFEST_CSV
           : !strcmp(f, "jsonl") ? MANIFEST_JSONL : MANIFEST_AUTO;
}

static const char *or_null(const char *s)
{
    return s && *s ? s : NULL;
}

/* Takes the next Job message. Returns 1 when a job started, 0 when there
 * was none (or it was done before: committed and skipped), -1 with err:
 * a job this worker must refuse (damaged, another file than planned,
 * other stage options), which stops the worker without committing it. */
static int fetch_next(Worker *w, TfError *err)
{
    KafkaRecord r;
    int rc = kafka_group_next(w->g, &r, 200, err);
    if (rc != KAFKA_RECORD)
        return rc < 0 ? -1 : 0;
    IngestJob *j = ingest_job_decode(r.payload, r.len, err);
    if (!j)
        return tf_fail_context(err, "partition %" PRId32 " offset %" PRId64, r.partition, r.offset);
    IngestColumns cols = {.image = or_null(j->url_col), .caption = or_null(j->caption_col),
                          .key = or_null(j->key_col), .hash = or_null(j->hash_col)};
    char digest[INGEST_DIGEST_HEX + 1];
    ingest_options_digest(&cols, (int)w->size, w->crop_format, (int)w->png_level, w->bos, digest);
    if (*j->options_digest && strcmp(digest, j->options_digest)) {
        tf_fail(err, "job %s was planned with other stage options (digest %s, this worker's %s: --size, "
                "--crop-format, --png-level, --no-bos and the columns must be those of `ingest plan`)",
                j->id, j->options_digest, digest);
        ingest_job_free(j);
        return -1;
    }
    if (ingest_job_check_file(j, err)) {
        ingest_job_free(j);
        return -1;
    }
    snprintf(w->job, sizeof w->job, "%s", j->id);
    w->part = r.partition;
    w->next_offset = r.offset + 1;
    w->fo.common.job = w->job;
    char stats_dir[4096];
    if (ingest_stats_dir(&w->fo.common, stats_dir, sizeof stats_dir, err)) {
        ingest_job_free(j);
        return -1;
    }
    int done = ingest_job_done(stats_dir, j->id, "fetch", NULL, err);
    if (done < 0) {
        ingest_job_free(j);
        return -1;
    }
    if (done) {
        /* done before (its stats file is written only once its output is
         * durable): only the commit was missing */
        tf_log(TF_LOG_INFO, TAG, "job %s is done already (%s/%s.fetch.json): committing it", j->id, stats_dir, j->id);
        ingest_job_free(j);
        if (kafka_group_commit(w->g, w->part, w->next_offset, err))
            tf_log(TF_LOG_WARN, TAG, "%s", err->msg);
        w->jobs_skipped++;
        return 0;
    }
    w->j = j;
    w->fo.manifest.path = j->manifest;
    w->fo.manifest.format = job_format(j->format);
    w->fo.manifest.columns = cols;
    w->fo.manifest.start = j->start;
    w->fo.manifest.end = j->end;
    w->fo.manifest.first_line = j->first_line;
    w->fo.manifest.identity = j->identity;
    w->fo.manifest.resolve_relative = 1;
    w->fo.common.stop = &w->job_stop;
    w->fo.fetch.stop = &w->job_stop;
    tf_log(TF_LOG_INFO, TAG, "job %s: %s bytes [%" PRIu64 ", %" PRIu64 ") from line %" PRIu64, j->id, j->manifest,
           j->start, j->end, j->first_line);
    return job_start(w, err) ? -1 : 1;
}

/* ---- the command ---- */

static const char WORKER_HELP[] =
    "usage: transfuse ingest worker --jobs kafka://HOST:PORT/TOPIC --group G --tokenizer FILE\n"
    "                               (--out DIR | --to kafka://...) [stage-1 options]\n"
    "       transfuse ingest worker --encode --from kafka://HOST:PORT/CROPS --group G --vae DIR\n"
    "                               (--out DIR | --to kafka://...) [stage-2 options]\n\n"
    "One member of a consumer group sharing ingest work with the other members, on this\n"
    "machine or others. Stage 1 (--jobs): each Job message `ingest plan` published is one\n"
    "manifest slice fetched, cropped and tokenized into Samples (the stage-1 records).\n"
    "Stage 2 (--encode): the crops topic's partitions are shared; each assigned partition\n"
    "is read from the group's committed offset in chunks of --chunk records, each chunk\n"
    "encoded by the VAE as one job (TOPIC.pP.OFFSET; shards TOPIC.pP.OFFSET-NNNNNN).\n"
    "A job's offset is committed only once its output is durable (shards renamed into\n"
    "place and in the manifest, every delivery report successful); a worker that dies\n"
    "leaves its job to the partition's next owner (after the session timeout), which\n"
    "redoes it skipping the keys already in the output, so every sample is written once.\n"
    "With --out the folder must be one all workers share. Ctrl-C or SIGTERM stops the job\n"
    "in hand (not committed), leaves the group and exits 130.\n\n"
    "  --group G             consumer group id (required; the same for every worker of a stage)\n"
    "  --out DIR             dataset folder for the output (shared by the workers)\n"
    "  --to kafka://HOST:PORT/TOPIC   an existing topic for the output (also with --out)\n"
    "  --stats-dir DIR       per-job stats files (default OUT/ingest-jobs; required with --to only)\n"
    "  --threads N           threads of a job (default and 0: all CPUs)\n"
    "  --session-timeout MS  a dead worker's partitions move after this (default 6000)\n"
    "  -X key=value          librdkafka property (repeatable)\n"
    "  --metrics-port N, --metrics-addr ADDR, --register DIR   as `transfuse ingest`\n"
    "stage 1:\n"
    "  --jobs kafka://HOST:PORT/TOPIC  the jobs topic\n"
    "  --tokenizer FILE      tokenizer.json or tokenizer.model (required)\n"
    "  --size N, --crop-format raw|png, --png-level N, --no-bos\n"
    "                        as planned (`ingest plan` puts their digest in every job; a job\n"
    "                        planned with other options is refused: exit 3, not committed)\n"
    "  fetching, as `transfuse ingest fetch`:\n%s"
    "stage 2:\n"
    "  --encode --from kafka://HOST:PORT/TOPIC   the crops topic\n"
    "  --vae DIR             diffusers AutoencoderKL folder (required)\n"
    "  --chunk N             records per job (default 1000)\n"
    "  --keep-crop, --batch N, --latent-dtype T, --tokenizer-id ID, --shard-records N,\n"
    "  --shard-size SIZE, --flow-group G   as `transfuse ingest encode`\n\n"
    "Exit status: 130 stopped by Ctrl-C/SIGTERM (the normal end), 2 bad command line,\n"
    "3 a job failed or was refused (it stays uncommitted: another worker, or this one\n"
    "restarted, redoes it).\n";

enum { /* above FETCH_CLI_BASE's (2000...) and INGEST_ENC_*'s (3000...) ranges: one table takes all three */
    W_JOBS = 4000, W_GROUP, W_ENCODE, W_FROM, W_CHUNK, W_TOKENIZER, W_SIZE, W_CROP_FORMAT, W_PNG_LEVEL, W_NO_BOS,
    W_SESSION,
};

int ingest_worker_main(int argc, char **argv)
{
    static const struct option opts[] = {
        INGEST_ENCODE_LONGOPTS,
        {"jobs", required_argument, 0, W_JOBS},
        {"group", required_argument, 0, W_GROUP},
        {"encode", no_argument, 0, W_ENCODE},
        {"from", required_argument, 0, W_FROM},
        {"chunk", required_argument, 0, W_CHUNK},
        {"tokenizer", required_argument, 0, W_TOKENIZER},
        {"size", required_argument, 0, W_SIZE},
        {"crop-format", required_argument, 0, W_CROP_FORMAT},
        {"png-level", required_argument, 0, W_PNG_LEVEL},
        {"no-bos", no_argument, 0, W_NO_BOS},
        {"session-timeout", required_argument, 0, W_SESSION},
        {"help", no_argument, 0, 'h'},
        {0}};
    struct option *longopts = fetch_cli_longopts(opts);
    Worker *w = calloc(1, sizeof *w);
    if (!w || !longopts) {
        fprintf(stderr, "transfuse ingest worker: out of memory\n");
        free(w);
        free(longopts);
        return TF_EXIT_FAIL;
    }
    TfOpts op = {.prog = "transfuse ingest worker", .argc = argc, .argv = argv, .shortopts = "hX:",
                 .longopts = longopts};
    TfError err = {{0}};
    FetchCliArgs fa = {0};
    FetchOptions fetch;
    fetch_options_init(&fetch);
    int fetch_flags = 0;
    ingest_encode_options_init(&w->enc.opts);
    w->chunk = 1000;
    w->size = 256;
    w->png_level = 1;
    w->bos = 1;
    w->crop_format = INGEST_CROP_RAW;
    const char *jobs = NULL, *from = NULL;
    long v, session_ms = 6000;
    int status = TF_EXIT_FAIL, c, r;
    TfMetricsServer *metrics = NULL;
    while ((c = tf_opts_next(&op)) != -1) {
        if ((r = ingest_encode_cli_flag(&w->enc, c, op.arg, &err)) < 0)
            goto usage;
        if (r)
            continue;
        switch (c) {
        case W_JOBS: jobs = op.arg; break;
        case W_GROUP: w->group = op.arg; break;
        case W_ENCODE: w->encode = 1; break;
        case W_FROM: from = op.arg; break;
        case W_CHUNK:
            if (tf_parse_long("--chunk", op.arg, 1, 1L << 40, &v, &err))
                goto usage;
            w->chunk = v;
            break;
        case W_TOKENIZER: w->tokenizer_path = op.arg; break;
        case W_SIZE:
            if (tf_parse_long("--size", op.arg, 8, 4096, &w->size, &err))
                goto usage;
            break;
        case W_CROP_FORMAT:
            if (!strcmp(op.arg, "raw"))
                w->crop_format = INGEST_CROP_RAW;
            else if (!strcmp(op.arg, "png"))
                w->crop_format = INGEST_CROP_PNG;
            else {
                tf_fail(&err, "--crop-format: raw or png, not %s", op.arg);
                goto usage;
            }
            break;
        case W_PNG_LEVEL:
            if (tf_parse_long("--png-level", op.arg, 0, 9, &w->png_level, &err))
                goto usage;
            break;
        case W_NO_BOS: w->bos = 0; break;
        case W_SESSION:
            if (tf_parse_long("--session-timeout", op.arg, 1000, 3600000, &session_ms, &err))
                goto usage;
            break;
        case 'h':
            printf(WORKER_HELP, FETCH_CLI_HELP);
            status = TF_EXIT_OK;
            goto out;
        default:
            if (c < FETCH_CLI_BASE || c >= INGEST_ENC_OUT) {
                if (c != '?') /* else tf_opts_next said what */
                    fprintf(stderr, "transfuse ingest worker: option value %d not handled (a bug)\n", c);
                status = TF_EXIT_USAGE;
                goto out;
            }
            if (fetch_cli_option(c, op.arg, &fetch, &fa, &err))
                goto usage;
            fetch_flags = 1;
            break;
        }
    }
    IngestEncodeOptions *eo = &w->enc.opts;
    if (op.first_operand != argc) {
        tf_fail(&err, "unexpected argument '%s'", argv[op.first_operand]);
        goto usage;
    }
    if (!w->group) {
        tf_fail(&err, "--group is required");
        goto usage;
    }
    const char *url = w->encode ? from : jobs;
    if (w->encode ? (jobs || !from) : (from || !jobs)) {
        tf_fail(&err, "give --jobs kafka://... (stage 1), or --encode --from kafka://... (stage 2)");
        goto usage;
    }
    if (!kafka_url_is(url) ||
        kafka_url_parse(url, w->bootstrap, sizeof w->bootstrap, w->topic, sizeof w->topic, &err)) {
        tf_fail(&err, "%s wants kafka://HOST:PORT/TOPIC, not %s", w->encode ? "--from" : "--jobs", url);
        goto usage;
    }
    w->config = w->enc.n_config ? w->enc.config : NULL;
    if (!eo->common.sink.out && !eo->common.sink.to) {
        tf_fail(&err, "--out or --to (or both) is required");
        goto usage;
    }
    if (!eo->common.sink.out && !eo->common.stats_dir) {
        tf_fail(&err, "--to without --out needs --stats-dir for the stats files");
        goto usage;
    }
    if (w->encode) {
        if (ingest_encode_cli_check(&w->enc, &err))
            goto usage;
        eo->from = url;
    } else {
        if (!w->tokenizer_path) {
            tf_fail(&err, "stage 1 needs --tokenizer");
            goto usage;
        }
        if (w->enc.vae_dir || eo->keep_crop) {
            tf_fail(&err, "--vae and --keep-crop are stage-2 options (--encode)");
            goto usage;
        }
    }
    if (w->encode && fetch_flags) {
        tf_fail(&err, "fetch options are stage-1 options (--jobs)");
        goto usage;
    }
    w->stop = tf_cli_stop_flag();
    metrics = tf_metrics_cli_start_registered(w->encode ? "encode" : "ingest", w->enc.metrics_addr,
                                              w->enc.metrics_port, w->enc.register_dir, &err);
    if (!metrics && err.msg[0])
        goto fail;
    if (w->encode) {
        if (ingest_encode_cli_load(&w->enc, &err))
            goto fail;
        snprintf(w->reader_group, sizeof w->reader_group, "%s-reader", w->group);
    } else {
        image_tune_process_malloc(); /* libjpeg's progressive buffers stay on the heap */
        if (!(w->tok = tokenizer_load(w->tokenizer_path, &err)))
            goto fail;
        ingest_fetch_options_init(&w->fo);
        w->fo.common.sink = eo->common.sink;
        w->fo.common.stats_dir = eo->common.stats_dir;
        w->fo.common.threads = eo->common.threads;
        w->fo.tokenizer = w->tok;
        w->fo.tokenizer_flags = w->bos ? TOKENIZER_ADD_BOS : 0;
        w->fo.crop.size = (int)w->size;
        w->fo.crop_format = (IngestCropFormat)w->crop_format;
        w->fo.crop_png_level = (int)w->png_level;
        w->fo.fetch = fetch;
        fetch_cli_args_apply(&fa, &w->fo.fetch);
    }
    KafkaGroupOptions go = {.bootstrap = w->bootstrap, .topic = w->topic, .group_id = w->group, .config = w->config,
                            .session_timeout_ms = (int)session_ms, .no_fetch = w->encode, .on_revoke = on_revoke,
                            .on_assign = on_assign,
                            .ctx = w};
    if (!(w->g = kafka_group_new(&go, &err)))
        goto fail;
    tf_log(TF_LOG_INFO, TAG, "member of group %s on %s (%s)", w->group, url, w->encode ? "stage 2: encode" : "stage 1: jobs");
    while (!tf_stop_requested(w->stop) && !w->failed) {
        if (w->busy) {
            if (kafka_group_serve(w->g, 100, &err))
                goto fail;
            if (w->busy && atomic_load(&w->finished))
                job_end(w, 0);
            continue;
        }
        int got = w->encode ? encode_next(w, &err) : fetch_next(w, &err);
        if (got < 0) {
            if (tf_stop_requested(w->stop))
                break;
            goto fail;
        }
        if (!got && w->encode && kafka_group_serve(w->g, 200, &err))
            goto fail;
    }
    job_end(w, 1);
    if (w->failed) {
        status = TF_EXIT_FAIL;
        fprintf(stderr, "transfuse ingest worker: a job failed (see above); leaving the group\n");
    } else {
        status = TF_EXIT_STOPPED;
    }
    goto done;
fail:
    fprintf(stderr, "transfuse ingest worker: %s\n", err.msg);
    status = TF_EXIT_FAIL;
done:
    job_end(w, 1);
    kafka_group_free(w->g); /* leaves the group: the others take over at once */
    fprintf(stderr, "ingest worker: %" PRIu64 " job(s) done, %" PRIu64 " found done already\n", w->jobs_done,
            w->jobs_skipped);
    tf_metrics_server_free(metrics);
    for (size_t i = 0; i < w->n_parts; i++)
        shard_keyset_free(w->folder_keys[i]);
    free(w->folder_keys);
    shard_keyset_free(w->topic_keys);
    kafka_position_free(w->topic_pos);
    kafka_position_free(w->kstart);
    kafka_position_free(w->kend);
    kafka_topic_info_deinit(&w->info);
    ingest_encode_cli_deinit(&w->enc);
    tokenizer_free(w->tok);
out:
    fetch_cli_args_deinit(&fa);
    free(longopts);
    free(w);
    return status;
usage:
    fprintf(stderr, "transfuse ingest worker: %s (see transfuse ingest worker --help)\n", err.msg);
    status = TF_EXIT_USAGE;
    goto out;
}
