/* plan.c: `transfuse ingest plan`: manifests split into jobs (slices of
 * rows, cut at row offsets the streaming reader gives, so a 100M-row
 * manifest is planned in one pass in bounded memory), written as Job
 * messages to a Kafka topic (key = job id, partitions round-robin so the
 * group's members get even shares) or as JSON lines to a file. */
#include "ingest.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PLAN_TAG "ingest-plan"

/* 1 when the file starts with gzip or zstd magic bytes. */
static int file_compressed(const char *path)
{
    unsigned char m[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(m, 1, 4, f);
    fclose(f);
    return (n >= 2 && m[0] == 0x1f && m[1] == 0x8b) || (n == 4 && m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd);
}

/* Job ids prefix shard names (JOB-NNNNNN.tfrecord), which the shard
 * writer takes up to 63 bytes: a stem longer than this is cut and told
 * apart by a hash of the whole file name. */
#define JOB_STEM_MAX 48

void ingest_job_name_base(const char *manifest, char *out, size_t cap)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", manifest);
    const char *b = basename(tmp);
    size_t k = 0, n = strlen(b);
    size_t keep = n > JOB_STEM_MAX ? JOB_STEM_MAX - 9 : n;
    for (const char *p = b; *p && k + 1 < cap && k < keep; p++)
        out[k++] = ingest_job_name_ok((char[]){*p, 0}) ? *p : '_';
    out[k] = 0;
    if (n > JOB_STEM_MAX && k + 10 < cap) {
        unsigned char h[32];
        char hex[65];
        tf_sha256(b, n, h);
        tf_hex(h, 4, hex);
        snprintf(out + k, cap - k, "_%s", hex);
    }
    if (!k)
        snprintf(out, cap, "manifest");
}

void ingest_manifest_identity(const char *manifest, char *out, size_t cap)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", manifest);
    snprintf(out, cap, "%s", basename(tmp));
}

/* Builds job `index` of manifest m and hands it to emit. */
static int emit_one(const IngestPlanOptions *po, size_t m, const char *path, const struct stat *st, const char *identity,
                    const char *base, uint32_t index, uint64_t start, uint64_t end, uint64_t line, uint64_t rows,
                    int (*emit)(void *ctx, const IngestJob *job, TfError *err), void *ctx, TfError *err)
{
    char id[256];
    snprintf(id, sizeof id, "%s.%06u", base, index);
    IngestJob j = TRANSFUSE__V1__JOB__INIT;
    j.id = id;
    j.manifest = (char *)(po->manifest_uris && po->manifest_uris[m] ? po->manifest_uris[m] : path);
    j.manifest_size = (uint64_t)st->st_size;
    j.manifest_mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    j.identity = (char *)identity;
    j.start = start;
    j.end = end;
    j.first_line = line;
    j.rows = rows;
    j.index = index;
    j.options_digest = (char *)(po->options_digest ? po->options_digest : "");
    j.compressed = file_compressed(path);
    j.url_col = (char *)(po->columns.image ? po->columns.image : "url");
    j.caption_col = (char *)(po->columns.caption ? po->columns.caption : "caption");
    j.key_col = (char *)(po->columns.key ? po->columns.key : "");
    j.hash_col = (char *)(po->columns.hash ? po->columns.hash : "");
    return emit(ctx, &j, err);
}

int ingest_plan(const IngestPlanOptions *po, int (*emit)(void *ctx, const IngestJob *job, TfError *err), void *ctx,
                IngestPlanStats *ps, TfError *err)
{
    memset(ps, 0, sizeof *ps);
    if (po->job_rows == 0)
        return tf_fail(err, "ingest plan: --job-size must be at least 1");
    for (size_t m = 0; m < po->n_manifests; m++) {
        const char *path = po->manifests[m];
        struct stat st;
        if (stat(path, &st))
            return tf_fail(err, "cannot open manifest %s: %s", path, strerror(errno));
        char identity[512], base[200];
        ingest_manifest_identity(path, identity, sizeof identity);
        ingest_job_name_base(path, base, sizeof base);
        ManifestReaderOptions ro = {.path = path, .format = po->format, .columns = po->columns, .identity = identity};
        ManifestReader *r = manifest_reader_open(&ro, err);
        if (!r)
            return -1;
        /* Jobs are emitted one behind, so each knows its end. */
        uint64_t job_start = manifest_reader_offset(r), job_line = manifest_reader_line(r), rows = 0;
        uint32_t index = 0;
        int rc = 0;
        IngestRow row;
        char why[256];
        uint32_t first_job = (uint32_t)ps->jobs;
        for (;;) {
            memset(&row, 0, sizeof row);
            int k = manifest_reader_next(r, &row, why, sizeof why, err);
            if (k < 0) {
                rc = -1;
                break;
            }
            if (k == MANIFEST_END)
                break;
            rows++;
            ps->rows++;
            if (k == MANIFEST_BAD_ROW)
                ps->bad_rows++;
            if (rows == po->job_rows) {
                uint64_t next = manifest_reader_offset(r);
                if (emit_one(po, m, path, &st, identity, base, index, job_start, next, job_line, rows, emit, ctx,
                             err)) {
                    rc = -1;
                    break;
                }
                index++;
                ps->jobs++;
                job_start = next;
                job_line = manifest_reader_line(r);
                rows = 0;
            }
        }
        if (rc == 0 && rows) { /* the last job runs to the end */
            if (emit_one(po, m, path, &st, identity, base, index, job_start, 0, job_line, rows, emit, ctx, err))
                rc = -1;
            else
                ps->jobs++;
        }
        ps->bytes += manifest_reader_file_bytes(r);
        manifest_reader_free(r);
        if (rc)
            return -1;
        tf_log(TF_LOG_INFO, PLAN_TAG, "%s: %u job(s)", path, (unsigned)(ps->jobs - first_job));
    }
    return 0;
}

/* ---- the command ---- */

typedef struct PlanOut {
    KafkaSink *sink;
    int32_t partitions;
    FILE *file;          /* JSON lines (a temporary file renamed at the end, or stdout) */
} PlanOut;

static int emit_job(void *ctx, const IngestJob *j, TfError *err)
{
    PlanOut *o = ctx;
    if (o->sink) {
        size_t len;
        uint8_t *b = ingest_job_encode(j, &len);
        if (!b)
            return tf_fail(err, "out of memory");
        int rc = kafka_sink_send(o->sink, (int32_t)(j->index % (uint32_t)o->partitions), b, len, j->id, strlen(j->id),
                                 err);
        free(b);
        return rc;
    }
    json_t *js = ingest_job_to_json(j);
    char *line = js ? json_dumps(js, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(js);
    if (!line)
        return tf_fail(err, "out of memory");
    int rc = fprintf(o->file, "%s\n", line) < 0 ? tf_fail(err, "writing jobs: %s", strerror(errno)) : 0;
    free(line);
    return rc;
}

static const char PLAN_HELP[] =
    "usage: transfuse ingest plan --manifest F [--manifest F...] --job-size N\n"
    "                             [--to kafka://HOST:PORT/TOPIC | --out FILE] [options]\n\n"
    "Splits manifests into jobs of N rows (byte ranges of the manifest cut at row\n"
    "starts; the file is streamed, never loaded) for `transfuse ingest worker`.\n"
    "With --to, each job is a transfuse.v1.Job message (key: the job id; partitions\n"
    "round-robin); with --out, JSON lines; with neither, JSON lines on stdout.\n"
    "gzip/zstd manifests (told by magic bytes) are split by the offsets of the\n"
    "decompressed text; a worker decompresses from the start and skips to its job.\n"
    "Job ids are NAME.NNNNNN (the manifest's file name and the job index); the keys\n"
    "of a job's rows depend only on the manifest's name and the rows, so a job\n"
    "planned or run again gives the same keys.\n\n"
    "  --manifest F          a manifest (.tsv, .csv, .jsonl; optionally .gz/.zst); repeatable\n"
    "  --uri F=URI           the path workers open for manifest F (default: F as given);\n"
    "                        repeatable, e.g. a shared mount seen elsewhere\n"
    "  --job-size N          rows per job (required)\n"
    "  --to kafka://HOST:PORT/TOPIC   publish the jobs to an existing topic\n"
    "  --out FILE            write the jobs as JSON lines (atomically)\n"
    "  --url-col, --caption-col, --key-col, --hash-col NAME   columns (as `ingest run`)\n"
    "  --size N, --crop-format raw|png, --png-level N, --no-bos\n"
    "                        stage options the workers must run with (their digest is in\n"
    "                        every job; a worker with other options refuses the job)\n"
    "  -X key=value          librdkafka property\n\n"
    "Exit status: 0 planned, 2 bad command line, 3 unreadable manifest or broker error.\n";

int ingest_plan_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"manifest", required_argument, 0, 'm'}, {"job-size", required_argument, 0, 'n'},
        {"to", required_argument, 0, 't'},       {"out", required_argument, 0, 'o'},
        {"url-col", required_argument, 0, 'U'},  {"caption-col", required_argument, 0, 'C'},
        {"key-col", required_argument, 0, 'K'},  {"hash-col", required_argument, 0, 'H'},
        {"size", required_argument, 0, 's'},     {"crop-format", required_argument, 0, 'f'},
        {"png-level", required_argument, 0, 'L'}, {"no-bos", no_argument, 0, 'B'},
        {"uri", required_argument, 0, 'u'},      {"help", no_argument, 0, 'h'},
        {0}};
    TfOpts op = {.prog = "transfuse ingest plan", .argc = argc, .argv = argv, .shortopts = "hX:", .longopts = opts};
    TfError err = {{0}};
    const char *manifests[256], *uris[256] = {0}, *uri_args[256];
    const char *config[64];
    size_t n_man = 0, n_uri = 0, n_cfg = 0;
    IngestPlanOptions po = {0};
    const char *to = NULL, *out = NULL;
    long size = 256, png_level = 1, job_rows = 0;
    int crop_format = INGEST_CROP_RAW, bos = 1, c, status = TF_EXIT_FAIL;
    while ((c = tf_opts_next(&op)) != -1) {
        switch (c) {
        case 'h': fputs(PLAN_HELP, stdout); return TF_EXIT_OK;
        case 'm':
            if (n_man == 256) { fprintf(stderr, "transfuse ingest plan: at most 256 manifests\n"); return TF_EXIT_USAGE; }
            manifests[n_man++] = op.arg;
            break;
        case 'u':
            if (n_uri == 256 || !strchr(op.arg, '=')) { fprintf(stderr, "transfuse ingest plan: --uri F=URI\n"); return TF_EXIT_USAGE; }
            uri_args[n_uri++] = op.arg;
            break;
        case 'n': if (tf_parse_long("--job-size", op.arg, 1, (long)1 << 40, &job_rows, &err)) goto usage; break;
        case 't': to = op.arg; break;
        case 'o': out = op.arg; break;
        case 'U': po.columns.image = op.arg; break;
        case 'C': po.columns.caption = op.arg; break;
        case 'K': po.columns.key = op.arg; break;
        case 'H': po.columns.hash = op.arg; break;
        case 's': if (tf_parse_long("--size", op.arg, 8, 4096, &size, &err)) goto usage; break;
        case 'L': if (tf_parse_long("--png-level", op.arg, 0, 9, &png_level, &err)) goto usage; break;
        case 'f':
            if (!strcmp(op.arg, "raw")) crop_format = INGEST_CROP_RAW;
            else if (!strcmp(op.arg, "png")) crop_format = INGEST_CROP_PNG;
            else { tf_fail(&err, "--crop-format: raw or png, not %s", op.arg); goto usage; }
            break;
        case 'B': bos = 0; break;
        case 'X':
            if (n_cfg == 63 || !strchr(op.arg, '=')) { fprintf(stderr, "transfuse ingest plan: -X key=value\n"); return TF_EXIT_USAGE; }
            config[n_cfg++] = op.arg;
            break;
        default: return TF_EXIT_USAGE;
        }
    }
    config[n_cfg] = NULL;
    if (op.first_operand < argc) { tf_fail(&err, "unexpected operand %s", argv[op.first_operand]); goto usage; }
    if (!n_man || !job_rows) { tf_fail(&err, "--manifest and --job-size are required"); goto usage; }
    if (to && out) { tf_fail(&err, "--to and --out: one of the two"); goto usage; }
    if (to && !kafka_url_is(to)) { tf_fail(&err, "--to wants kafka://HOST:PORT/TOPIC"); goto usage; }
    for (size_t i = 0; i < n_uri; i++) {
        size_t fl = (size_t)(strchr(uri_args[i], '=') - uri_args[i]);
        size_t k = 0;
        for (; k < n_man; k++)
            if (strlen(manifests[k]) == fl && !strncmp(manifests[k], uri_args[i], fl))
                break;
        if (k == n_man) { tf_fail(&err, "--uri %s names no --manifest", uri_args[i]); goto usage; }
        uris[k] = uri_args[i] + fl + 1;
    }
    char digest[INGEST_DIGEST_HEX + 1];
    ingest_options_digest(&po.columns, (int)size, crop_format, (int)png_level, bos, digest);
    po.manifests = manifests;
    po.manifest_uris = uris;
    po.n_manifests = n_man;
    po.job_rows = (uint64_t)job_rows;
    po.options_digest = digest;

    PlanOut o = {0};
    char tmp[4200] = "";
    if (to) {
        char bs[1024], topic[256];
        if (kafka_url_parse(to, bs, sizeof bs, topic, sizeof topic, &err))
            goto usage;
        KafkaSinkOptions so = {.bootstrap = bs, .topic = topic, .config = config, .stop = tf_cli_stop_flag()};
        o.sink = kafka_sink_new(&so, &err);
        if (!o.sink)
            goto fail;
        o.partitions = kafka_sink_partitions(o.sink);
    } else if (out) {
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out, (long)getpid());
        o.file = fopen(tmp, "w");
        if (!o.file) { tf_fail(&err, "cannot write %s: %s", tmp, strerror(errno)); goto fail; }
    } else
        o.file = stdout;
    IngestPlanStats ps;
    double t0 = tf_now();
    if (ingest_plan(&po, emit_job, &o, &ps, &err))
        goto fail;
    if (o.sink && kafka_sink_flush(o.sink, 120000, &err))
        goto fail;
    if (out) {
        if (fflush(o.file) || fsync(fileno(o.file)) || fclose(o.file)) {
            o.file = NULL;
            tf_fail(&err, "writing %s: %s", tmp, strerror(errno));
            goto fail;
        }
        o.file = NULL;
        if (rename(tmp, out)) { tf_fail(&err, "renaming %s: %s", tmp, strerror(errno)); goto fail; }
        tmp[0] = 0;
        if (tf_fsync_parent(out, &err))
            goto fail;
    }
    fprintf(stderr, "planned %llu job(s) of up to %ld rows: %llu rows (%llu unusable), %llu manifest bytes read, %.1f s%s%s\n",
            (unsigned long long)ps.jobs, job_rows, (unsigned long long)ps.rows, (unsigned long long)ps.bad_rows,
            (unsigned long long)ps.bytes, tf_now() - t0, to ? " -> " : out ? " -> " : "", to ? to : out ? out : "");
    status = TF_EXIT_OK;
fail:
    if (status != TF_EXIT_OK)
        fprintf(stderr, "transfuse ingest plan: %s\n", err.msg);
    if (o.file && o.file != stdout)
        fclose(o.file);
    if (tmp[0])
        unlink(tmp);
    kafka_sink_free(o.sink);
    return status;
usage:
    fprintf(stderr, "transfuse ingest plan: %s\n", err.msg);
    return TF_EXIT_USAGE;
}
