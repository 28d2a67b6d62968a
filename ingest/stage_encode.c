/* stage_encode.c: stage 2 of ingest from the web. Samples that stage 1
 * wrote (the crop in Sample.image, no latents) are read through the record
 * source, their crops encoded by the VAE in batches to the posterior's
 * mean and log-variance, the crop dropped or kept, and the final records
 * written to the sink (folder and/or topic). Keys already in the output
 * are skipped, so a job redone after a crash or a rebalance adds nothing
 * twice; the stats file JOB.encode.json is written only once the output
 * is durable. Also `transfuse ingest encode`, the stage on its own. */
#include "ingest_internal.h"
#include "stats_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define TAG "encode"
#define MAX_BATCH 64

void ingest_encode_options_init(IngestEncodeOptions *o)
{
    memset(o, 0, sizeof *o);
    o->batch = 8;
    o->latent_dtype = "bf16";
}

/* ---- the stage ---- */

/* A record taken into the batch: its bytes (copied: the source's buffer
 * lives only until its next call). */
typedef struct Slot {
    uint8_t *payload;
    size_t len, cap;
} Slot;

static int slot_take(Slot *s, const uint8_t *payload, size_t len, TfError *err)
{
    if (len > s->cap) {
        uint8_t *p = realloc(s->payload, len);
        if (!p)
            return tf_fail(err, "out of memory");
        s->payload = p;
        s->cap = len;
    }
    memcpy(s->payload, payload, len);
    s->len = len;
    return 0;
}

/* One failed record of `reason`: stats and transfuse_ingest_failures_total.
 * (Rows are stage 1's to count, in the metrics and in common.progress:
 * stage 2 adds only what it encodes and what waits for the VAE.) */
static void fail_count(IngestJobStats *st, const char *reason)
{
    ingest_job_stats_fail(st, reason);
    st->attempted++;
    ingest_metrics_failure(reason);
}

/* Writes STATS_DIR/JOB.encode.json (the job is done from then on). */
static int stats_write(const IngestEncodeOptions *o, const char *stats_dir, const IngestJobStats *st, TfError *err)
{
    json_t *j = ingest_job_stats_json(o->common.job, "encode", o->from, 0, 0, st);
    if (!j)
        return tf_fail(err, "out of memory");
    int rc = ingest_job_stats_write(stats_dir, o->common.job, "encode", j, err);
    json_decref(j);
    return rc;
}

typedef struct Encoder {
    const IngestEncodeOptions *o;
    IngestJobStats *st;
    IngestStageMetrics metrics;
    TfKernels *k;               /* o->kernels or own_k */
    TfKernels *own_k;
    int size;                   /* crop side, from the first crop (0: not known yet) */
    uint32_t shape[3];          /* latent (L, size/f, size/f) */
    size_t per;                 /* elements per latent */
    int proto_dtype;
    TfDtype dtype;
    const ShardKeySet *done_folder, *done_topic; /* keys each output holds already (NULL: none) */
    ShardKeySet *own_folder, *own_topic;
    ShardKeySet *taken;         /* keys taken into a batch in this call */
    ShardKeySet *const *written; /* the caller's: sets to add the keys appended to */
    size_t n_written;
    IngestOut *out;
    Slot slots[MAX_BATCH];
    unsigned where[MAX_BATCH];  /* INGEST_OUT_*: the outputs that lack the slot's key */
    uint8_t *rgb;               /* (S,S,3) */
    float *images, *mean, *logvar; /* (B,3,S,S), (B,L,h,w) x2 */
    uint8_t *scratch;           /* 2 * per * 4 */
    TfRateLimit limit;
} Encoder;

/* Sizes the buffers for crops of side `size` and opens the output with the
 * facts of the final records. */
static int encoder_start(Encoder *e, RecordSource *src, int size, TfError *err)
{
    const IngestEncodeOptions *o = e->o;
    const VaeConfig *cfg = vae_config(o->vae);
    int f = vae_downsample_factor(cfg);
    if (size % f)
        return tf_fail(err, "crop size %d is not a multiple of the VAE's downsampling factor %d", size, f);
    e->size = size;
    e->shape[0] = (uint32_t)cfg->latent_channels;
    e->shape[1] = e->shape[2] = (uint32_t)(size / f);
    e->per = (size_t)e->shape[0] * e->shape[1] * e->shape[2];
    size_t B = (size_t)o->batch, S = (size_t)size;
    e->rgb = malloc(S * S * 3);
    e->images = malloc(B * 3 * S * S * sizeof(float));
    e->mean = malloc(B * e->per * sizeof(float));
    e->logvar = malloc(B * e->per * sizeof(float));
    e->scratch = malloc(2 * e->per * 4);
    if (!e->rgb || !e->images || !e->mean || !e->logvar || !e->scratch)
        return tf_fail(err, "out of memory");

    const ShardFacts *in = record_source_facts(src);
    ShardFacts facts = {0};
    snprintf(facts.tokenizer_id, sizeof facts.tokenizer_id, "%s", o->tokenizer_id ? o->tokenizer_id : in->tokenizer_id);
    if (!o->tokenizer_id)
        snprintf(facts.tokenizer_name, sizeof facts.tokenizer_name, "%s", in->tokenizer_name);
    snprintf(facts.vae_id, sizeof facts.vae_id, "%s", vae_identity(o->vae));
    facts.latent_scaling = cfg->scaling_factor;
    facts.latent_shift = cfg->shift_factor;
    snprintf(facts.latent_dtype, sizeof facts.latent_dtype, "%s", o->latent_dtype);
    facts.latent_rank = 3;
    memcpy(facts.latent_shape, e->shape, sizeof e->shape);
    if (!(e->out = ingest_out_open(&o->common.sink, o->common.job, &facts, o->common.stop, err)))
        return -1;
    return 0;
}

/* Encodes the b records of the batch and appends the final records.
 * Returns 0, 1 when a stop request dropped the batch, or -1 with err. */
static int batch_finish(Encoder *e, int b, TfError *err)
{
    const IngestEncodeOptions *o = e->o;
    double t0 = tf_now();
    tf_gauge_set(e->metrics.encode_queue, (double)b);
    ingest_progress_add(o->common.progress, INGEST_P_ENCODE_QUEUE, b);
    int rc = vae_encode(o->vae, e->k, e->images, b, e->size, e->size, e->mean, e->logvar, o->common.stop, err);
    ingest_progress_add(o->common.progress, INGEST_P_ENCODE_QUEUE, -b);
    tf_gauge_set(e->metrics.encode_queue, 0);
    if (rc)
        return tf_stop_requested(o->common.stop) ? 1 : -1;
    tf_histogram_observe(e->metrics.encode_batch, tf_now() - t0);
    tf_counter_add(e->metrics.encoded, (uint64_t)b);
    ingest_progress_add(o->common.progress, INGEST_P_ENCODED, b);
    for (int i = 0; i < b; i++) {
        Sample *s = sample_decode(e->slots[i].payload, e->slots[i].len, NULL, err);
        if (!s)
            return -1; /* decoded once already: cannot happen short of memory */
        Transfuse__V1__Tensor tm, tl;
        ingest_latent_tensors(&tm, &tl, e->mean + (size_t)i * e->per, e->logvar + (size_t)i * e->per, e->per,
                              e->shape, e->proto_dtype, e->dtype, e->scratch);
        Transfuse__V1__Tensor *old_m = s->latent_mean, *old_l = s->latent_logvar;
        Transfuse__V1__EncodedImage *old_im = s->image;
        s->latent_mean = &tm;
        s->latent_logvar = &tl;
        if (!o->keep_crop)
            s->image = NULL;
        rc = ingest_out_append(e->out, s, e->where[i], err);
        s->latent_mean = old_m;
        s->latent_logvar = old_l;
        s->image = old_im;
        for (size_t w = 0; !rc && w < e->n_written; w++)
            if (shard_keyset_add(e->written[w], s->key, strlen(s->key), 0, NULL) < 0)
                rc = tf_fail(err, "out of memory");
        sample_free(s);
        if (rc)
            return -1;
        e->st->succeeded++;
        e->st->attempted++;
    }
    return 0;
}

/* 1 when the record's crop can size the buffers: square, of a side the
 * VAE can take. The first such record fixes the crop side of the call. */
static int crop_side(const Encoder *e, const Sample *s)
{
    const Transfuse__V1__EncodedImage *im = s->image;
    int f = vae_downsample_factor(vae_config(e->o->vae));
    if (!im || im->width != im->height || im->width < 8 || im->width > 4096 || (int)im->width % f)
        return 0;
    return (int)im->width;
}

/* Takes one record into the batch at index b (or counts its outcome).
 * Returns 1 when it joined the batch, 0 when it did not, -1 with err. */
static int record_take(Encoder *e, RecordSource *src, const Record *rec, int b, TfError *err)
{
    const Sample *s = rec->sample;
    const IngestSink *sink = &e->o->common.sink;
    unsigned where = 0;
    if (shard_keyset_has(e->taken, rec->key, rec->key_len, NULL))
        where = 0;
    else {
        if (sink->out && !shard_keyset_has(e->done_folder, rec->key, rec->key_len, NULL))
            where |= INGEST_OUT_FOLDER;
        if (sink->to && !shard_keyset_has(e->done_topic, rec->key, rec->key_len, NULL))
            where |= INGEST_OUT_TOPIC;
    }
    if (!where) {
        e->st->skipped++;
        e->st->attempted++;
        return 0;
    }
    int side;
    if (!e->size && (side = crop_side(e, s)) && encoder_start(e, src, side, err))
        return -1;
    TfError cerr = {{0}};
    if (!e->size)
        tf_fail(&cerr, "no square crop of a side the VAE takes (Sample.image)");
    if (!e->size || ingest_crop_pixels(s, e->size, e->rgb, &cerr)) {
        tf_log_limited(&e->limit, TF_LOG_WARN, TAG, "%.*s (%s record %llu): bad_crop: %s", (int)rec->key_len,
                       rec->key, rec->shard, (unsigned long long)rec->record, cerr.msg);
        fail_count(e->st, "bad_crop");
        return 0;
    }
    if (shard_keyset_add(e->taken, rec->key, rec->key_len, 0, NULL) < 0 ||
        slot_take(&e->slots[b], rec->payload, rec->len, err))
        return tf_fail(err, "out of memory");
    e->where[b] = where;
    e->st->bytes += s->image->data.len;
    ingest_crop_to_image(e->rgb, e->size, e->images + (size_t)b * 3 * (size_t)e->size * (size_t)e->size);
    return 1;
}

int ingest_stage_encode(const IngestEncodeOptions *o, IngestJobStats *stats, TfError *err)
{
    return ingest_stage_encode_keys(o, NULL, NULL, NULL, 0, stats, err);
}

int ingest_stage_encode_keys(const IngestEncodeOptions *o, const ShardKeySet *done_folder,
                             const ShardKeySet *done_topic, ShardKeySet *const *written, size_t n_written,
                             IngestJobStats *stats, TfError *err)
{
    memset(stats, 0, sizeof *stats);
    double t0 = tf_now();
    if (!o->from || !o->vae || !o->common.job)
        return tf_fail(err, "encode: input, VAE and job name are required");
    if (!ingest_job_name_ok(o->common.job))
        return tf_fail(err, "encode: job name '%.64s' is not [A-Za-z0-9._-]+", o->common.job);
    if (o->batch < 1 || o->batch > MAX_BATCH)
        return tf_fail(err, "encode: batch %d is not in [1, %d]", o->batch, MAX_BATCH);
    Encoder e = {.o = o, .st = stats, .limit = {.burst = 20, .period_s = 10}};
    if (ingest_latent_dtype_parse(o->latent_dtype ? o->latent_dtype : "bf16", &e.proto_dtype, &e.dtype))
        return tf_fail(err, "encode: latent dtype '%s' is not bf16, f16 or f32", o->latent_dtype);
    char stats_dir[4096];
    if (ingest_stats_dir(&o->common, stats_dir, sizeof stats_dir, err))
        return -1;
    if (ingest_job_stats_init(stats, err))
        return -1;
    ingest_stage_metrics_init(&e.metrics);

    int rc = -1;
    RecordSource *src = NULL;
    e.written = written;
    e.n_written = n_written;
    if (!(e.taken = shard_keyset_new()))
        goto oom;
    if (o->common.done) {
        e.done_folder = e.done_topic = o->common.done;
    } else if (done_folder || done_topic) {
        e.done_folder = done_folder;
        e.done_topic = done_topic;
    } else {
        /* each output's own keys: a record one output has and the other
         * lacks (a kill between the two) goes to the other only */
        if ((o->common.sink.out && !(e.own_folder = shard_keyset_new())) ||
            (o->common.sink.to && !(e.own_topic = shard_keyset_new())))
            goto oom;
        if (ingest_sink_keys(&o->common.sink, NULL, e.own_folder, e.own_topic, err))
            goto done;
        e.done_folder = e.own_folder;
        e.done_topic = e.own_topic;
    }
    if (!(e.k = o->kernels) && !(e.k = e.own_k = tf_kernels_new(TF_BACKEND_CPU, o->common.threads, err)))
        goto done;

    IngestPrefix pf = {o->from_prefix, o->from_prefix ? strlen(o->from_prefix) : 0};
    KafkaSourceOptions ko = {.until = KAFKA_UNTIL_SNAPSHOT, .commit_interval_ms = -1, .group_id = "transfuse-encode"};
    RecordSourceOptions so = {.path = o->from, .check = 1, .stop = o->common.stop, .kafka = o->kafka ? o->kafka : &ko};
    if (o->from_prefix) {
        so.shard_filter = ingest_prefix_filter;
        so.filter_ctx = &pf;
    }
    if (!(src = record_source_open(&so, err)))
        goto done;
    int b = 0, eof = 0, stopped = 0;
    while (!eof && !stopped) {
        Record rec;
        ShardProblem prob;
        int r = record_source_next(src, &rec, 200, &prob, err);
        if (r < 0)
            goto done;
        if (tf_stop_requested(o->common.stop)) {
            stopped = 1;
            break;
        }
        if (r == RECORD_SOURCE_END)
            eof = 1;
        else if (r == RECORD_SOURCE_PROBLEM) {
            char what[700];
            shard_problem_format(&prob, what, sizeof what);
            tf_log_limited(&e.limit, TF_LOG_WARN, TAG, "bad_record: %s", what);
            fail_count(stats, "bad_record");
        } else if (r == RECORD_SOURCE_RECORD) {
            int t = record_take(&e, src, &rec, b, err);
            if (t < 0)
                goto done;
            b += t;
        }
        if (b == o->batch || (eof && b)) {
            int f = batch_finish(&e, b, err);
            if (f < 0)
                goto done;
            stopped = f == 1;
            b = 0;
        }
    }
    if (e.out && ingest_out_finish(e.out, err)) {
        if (!stopped)
            goto done;
        tf_log(TF_LOG_WARN, TAG, "stopped; the output could not be made durable (%s): the job is redone", err->msg);
    }
    stats->seconds = tf_now() - t0;
    if (stopped || tf_stop_requested(o->common.stop)) {
        stats->stopped = 1;
        rc = 0;
        goto done;
    }
    if (stats_write(o, stats_dir, stats, err))
        goto done;
    rc = 0;
    goto done;
oom:
    tf_fail(err, "out of memory");
done:
    stats->seconds = tf_now() - t0;
    tf_gauge_set(e.metrics.encode_queue, 0);
    record_source_free(src);
    ingest_out_free(e.out);
    for (int i = 0; i < MAX_BATCH; i++)
        free(e.slots[i].payload);
    free(e.rgb);
    free(e.images);
    free(e.mean);
    free(e.logvar);
    free(e.scratch);
    shard_keyset_free(e.taken);
    shard_keyset_free(e.own_folder);
    shard_keyset_free(e.own_topic);
    tf_kernels_free(e.own_k);
    return rc;
}

/* ---- `transfuse ingest encode` ---- */

static const char ENCODE_HELP[] =
    "usage: transfuse ingest encode --from PATH|kafka://HOST:PORT/TOPIC (--out DIR | --to kafka://...)\n"
    "                               --vae DIR [options]\n\n"
    "Stage 2 of ingest: reads the Samples stage 1 wrote (the crop in Sample.image, \"rgb8\"\n"
    "raw or \"png\"; no latents) through the record source, encodes the crops with the VAE\n"
    "in batches, adds the latent mean and log-variance, drops the crop (unless --keep-crop)\n"
    "and writes the final records to a dataset folder and/or an existing topic. A record\n"
    "whose crop is missing, not square, of another size than the first, or not decodable\n"
    "is one failure \"bad_crop\"; keys already in the output are skipped, so running again\n"
    "adds nothing twice. Once the output is durable (shards renamed into place and in the\n"
    "manifest, every delivery report successful) the job's stats go to\n"
    "STATS_DIR/JOB.encode.json. Ctrl-C or SIGTERM drops the batch in hand, publishes what\n"
    "was finished before it and exits 130 (no stats file: rerun to finish).\n\n"
    "  --from PATH           crops: a dataset folder, one shard file, or kafka://HOST:PORT/TOPIC\n"
    "                        (a topic is read to the high watermarks seen at the start)\n"
    "  --from-prefix P       folders: only shards whose name starts with P (a stage-1 job's: JOB-)\n"
    "  --out DIR             dataset folder for the final records (created or appended to)\n"
    "  --to kafka://HOST:PORT/TOPIC   an existing topic for the final records (also with --out)\n"
    "  --vae DIR             diffusers AutoencoderKL folder (required)\n"
    "  --job NAME            job name: stats file NAME.encode.json, shard names NAME-NNNNNN\n"
    "                        (default: the input's file or topic name)\n"
    "  --stats-dir DIR       where stats go (default OUT/ingest-jobs; required with --to only)\n"
    "  --keep-crop           keep Sample.image in the final records\n"
    "  --batch N             VAE batch (default 8, at most 64)\n"
    "  --threads N           VAE kernel threads (default and 0: all CPUs)\n"
    "  --latent-dtype T      bf16 (default), f16 or f32\n"
    "  --tokenizer-id ID     tokenizer identity of the output (default: the crops' own)\n"
    "  --shard-records N     roll shards at N records (default 100000)\n"
    "  --shard-size SIZE     roll shards at SIZE bytes (default 256M)\n"
    "  --flow-group G        --to on the embedded broker: stay at most 3 MiB per partition ahead\n"
    "                        of what consumer group G committed\n"
    "  -X key=value          librdkafka property (repeatable)\n"
    "  --metrics-port N      serve Prometheus metrics on http://ADDR:N/metrics (default 0: off)\n"
    "  --metrics-addr ADDR   address to bind the metrics endpoint to (default 127.0.0.1)\n"
    "  --register DIR        register the metrics endpoint in DIR for `transfuse top --discover`\n\n"
    "Exit status: 0 done (bad crops are counted in the stats), 2 bad command line (nothing\n"
    "done), 3 could not run (unreadable input or VAE, an output holding other data, a write\n"
    "or delivery error), 130 stopped (rerun to resume).\n";

int ingest_encode_cli_flag(IngestEncodeCli *c, int flag, const char *arg, TfError *err)
{
    IngestEncodeOptions *o = &c->opts;
    long v;
    switch (flag) {
    case INGEST_ENC_OUT: o->common.sink.out = arg; break;
    case INGEST_ENC_TO:
        if (!kafka_url_is(arg))
            return tf_fail(err, "--to wants kafka://HOST:PORT/TOPIC, not %s", arg);
        o->common.sink.to = arg;
        break;
    case INGEST_ENC_VAE: c->vae_dir = arg; break;
    case INGEST_ENC_STATS: o->common.stats_dir = arg; break;
    case INGEST_ENC_KEEP: o->keep_crop = 1; break;
    case INGEST_ENC_BATCH:
        if (tf_parse_long("--batch", arg, 1, MAX_BATCH, &v, err))
            return -1;
        o->batch = (int)v;
        break;
    case INGEST_ENC_THREADS:
        if (tf_parse_threads("--threads", arg, 1024, &o->common.threads, err))
            return -1;
        break;
    case INGEST_ENC_DTYPE:
        if (strcmp(arg, "bf16") && strcmp(arg, "f16") && strcmp(arg, "f32"))
            return tf_fail(err, "--latent-dtype must be bf16, f16 or f32");
        o->latent_dtype = arg;
        break;
    case INGEST_ENC_TOKID: o->tokenizer_id = arg; break;
    case INGEST_ENC_SHARD_RECORDS:
        if (tf_parse_long("--shard-records", arg, 1, LONG_MAX, &v, err))
            return -1;
        o->common.sink.shard_records = (uint64_t)v;
        break;
    case INGEST_ENC_SHARD_SIZE:
        if (tf_parse_size("--shard-size", arg, &o->common.sink.shard_bytes, err))
            return -1;
        break;
    case INGEST_ENC_FLOW: o->common.sink.flow_group = arg; break;
    case 'X':
        if (c->n_config + 1 >= sizeof c->config / sizeof c->config[0] || !strchr(arg, '='))
            return tf_fail(err, "-X key=value (at most %zu)", sizeof c->config / sizeof c->config[0] - 1);
        c->config[c->n_config++] = arg;
        c->config[c->n_config] = NULL;
        o->common.sink.kafka_config = c->config;
        break;
    case INGEST_ENC_METRICS_PORT:
        if (tf_parse_long("--metrics-port", arg, 0, 65535, &c->metrics_port, err))
            return -1;
        break;
    case INGEST_ENC_METRICS_ADDR: c->metrics_addr = arg; break;
    case INGEST_ENC_REGISTER: c->register_dir = arg; break;
    default: return 0;
    }
    return 1;
}

int ingest_encode_cli_check(IngestEncodeCli *c, TfError *err)
{
    IngestEncodeOptions *o = &c->opts;
    if (!c->vae_dir)
        return tf_fail(err, "--vae is required");
    if (!o->common.sink.out && !o->common.sink.to)
        return tf_fail(err, "--out or --to (or both) is required");
    if (!o->common.sink.out && !o->common.stats_dir)
        return tf_fail(err, "--to without --out needs --stats-dir for the stats files");
    return 0;
}

int ingest_encode_cli_load(IngestEncodeCli *c, TfError *err)
{
    /* The encoder's per-layer buffers are tens of MiB: kept on the heap
     * instead of mmap/munmap per layer (measured: 40% more CPU per image
     * than `vae encode`, which does the same, before this). */
    image_tune_process_malloc();
    if (!(c->vae = vae_load(c->vae_dir, VAE_LOAD_ENCODER, err)))
        return -1;
    if (!(c->kernels = tf_kernels_new(TF_BACKEND_CPU, c->opts.common.threads, err)))
        return -1;
    c->opts.vae = c->vae;
    c->opts.kernels = c->kernels;
    return 0;
}

void ingest_encode_cli_deinit(IngestEncodeCli *c)
{
    tf_kernels_free(c->kernels);
    vae_free(c->vae);
    c->kernels = NULL;
    c->vae = NULL;
}

/* One line on stderr: the job's outcome counts. */
void ingest_encode_report(const char *job, const IngestJobStats *st)
{
    fprintf(stderr, "encode %s: %llu records: %llu encoded, %llu already there, %llu failed", job,
            (unsigned long long)st->attempted, (unsigned long long)st->succeeded, (unsigned long long)st->skipped,
            (unsigned long long)st->failed);
    const char *k;
    json_t *v;
    int first = 1;
    json_object_foreach(st->failures, k, v)
    {
        fprintf(stderr, "%s%s %lld", first ? " (" : ", ", k, (long long)json_integer_value(v));
        first = 0;
    }
    fprintf(stderr, "%s in %.1f s (%.2f images/s)%s\n", first ? "" : ")", st->seconds,
            st->seconds > 0 ? st->succeeded / st->seconds : 0.0, st->stopped ? ", stopped" : "");
}

int ingest_encode_main(int argc, char **argv)
{
    static const struct option opts[] = {
        INGEST_ENCODE_LONGOPTS,
        {"from", required_argument, 0, 'f'},
        {"from-prefix", required_argument, 0, 'p'},
        {"job", required_argument, 0, 'J'},
        {"help", no_argument, 0, 'h'},
        {0}};
    TfOpts op = {.prog = "transfuse ingest encode", .argc = argc, .argv = argv, .shortopts = "hX:", .longopts = opts};
    TfError err = {{0}};
    IngestEncodeCli cli = {0};
    ingest_encode_options_init(&cli.opts);
    IngestEncodeOptions *o = &cli.opts;
    char job[200] = "";
    int c, r;
    while ((c = tf_opts_next(&op)) != -1) {
        if ((r = ingest_encode_cli_flag(&cli, c, op.arg, &err)) < 0)
            goto usage;
        if (r)
            continue;
        switch (c) {
        case 'f': o->from = op.arg; break;
        case 'p': o->from_prefix = op.arg; break;
        case 'J':
            if (!ingest_job_name_ok(op.arg)) {
                tf_fail(&err, "--job: '%s' is not [A-Za-z0-9._-]+", op.arg);
                goto usage;
            }
            snprintf(job, sizeof job, "%s", op.arg);
            break;
        case 'h': fputs(ENCODE_HELP, stdout); return TF_EXIT_OK;
        default: return TF_EXIT_USAGE;
        }
    }
    if (op.first_operand != argc) {
        tf_fail(&err, "unexpected argument '%s'", argv[op.first_operand]);
        goto usage;
    }
    if (!o->from) {
        tf_fail(&err, "--from is required");
        goto usage;
    }
    if (ingest_encode_cli_check(&cli, &err))
        goto usage;
    if (!job[0]) {
        char from[4096];
        snprintf(from, sizeof from, "%s", o->from);
        size_t n = strlen(from);
        while (n > 1 && from[n - 1] == '/')
            from[--n] = 0;
        ingest_job_name_base(from, job, sizeof job);
    }
    o->common.job = job;
    o->common.stop = tf_cli_stop_flag();
    int status = TF_EXIT_FAIL;
    IngestJobStats st = {0};
    TfMetricsServer *metrics =
        tf_metrics_cli_start_registered("encode", cli.metrics_addr, cli.metrics_port, cli.register_dir, &err);
    if (!metrics && err.msg[0])
        goto fail;
    if (ingest_encode_cli_load(&cli, &err))
        goto fail;
    if (ingest_stage_encode(o, &st, &err))
        goto fail;
    ingest_encode_report(job, &st);
    status = st.stopped ? TF_EXIT_STOPPED : TF_EXIT_OK;
    goto done;
fail:
    fprintf(stderr, "transfuse ingest encode: %s\n", err.msg);
done:
    ingest_job_stats_deinit(&st);
    tf_metrics_server_free(metrics);
    ingest_encode_cli_deinit(&cli);
    return status;
usage:
    fprintf(stderr, "transfuse ingest encode: %s (see transfuse ingest encode --help)\n", err.msg);
    return TF_EXIT_USAGE;
}
