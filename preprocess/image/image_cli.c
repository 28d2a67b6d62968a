/* image_cli.c: `transfuse preprocess crop` (write the crops as PNGs and one
 * tab-separated verdict per input, for people to eyeball) and `transfuse
 * preprocess bench` (images/s over files held in memory, with TurboJPEG's
 * plain scaled decode timed alongside as the floor). Both run a small
 * thread pool with one cropper per thread.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <turbojpeg.h>

#include "image_internal.h"

#define IMAGE_CLI_MAX_FILE (512u << 20)

/* Options both subcommands share. */
typedef struct CliOpts {
    ImageCropOptions crop;
    long threads;
    long reps;
    const char *out_dir;
    int floor;
    int first_path; /* argv index of the first path */
} CliOpts;

static const char CROP_OPTIONS_HELP[] =
    "  --size N          output side in pixels (default 256)\n"
    "  --filter NAME     lanczos (default), bicubic, bilinear, box\n"
    "  --min-side N      refuse images whose short side is below N (too_small)\n"
    "  --no-upscale      refuse images smaller than --size instead of enlarging them\n"
    "  --max-aspect X    refuse images whose long/short side ratio is above X (bad_aspect)\n"
    "  --max-pixels N    refuse images with more than N pixels, read from the header\n"
    "                    before decoding (too_large; default 100M; K/M/G suffixes)\n"
    "  --no-dct-scaling  decode JPEGs at full size (slower; for comparisons)\n"
    "  --no-prune        keep the AC scans of progressive JPEGs at 1/8 scale\n";

/* Parses the options of crop (bench = 0) or bench (bench = 1) with the
 * common parser. Returns 0, or TF_EXIT_USAGE after printing why. */
static int cli_parse(int argc, char **argv, int bench, CliOpts *o)
{
    enum { OPT_SIZE = 256, OPT_THREADS, OPT_FILTER, OPT_MIN_SIDE, OPT_MAX_ASPECT, OPT_MAX_PIXELS, OPT_OUT, OPT_REPS,
           OPT_NO_UPSCALE, OPT_NO_DCT, OPT_NO_PRUNE, OPT_NO_FLOOR };
    static const struct option crop_opts[] = {
        {"size", required_argument, 0, OPT_SIZE},           {"threads", required_argument, 0, OPT_THREADS},
        {"filter", required_argument, 0, OPT_FILTER},       {"min-side", required_argument, 0, OPT_MIN_SIDE},
        {"max-aspect", required_argument, 0, OPT_MAX_ASPECT}, {"max-pixels", required_argument, 0, OPT_MAX_PIXELS},
        {"no-upscale", no_argument, 0, OPT_NO_UPSCALE},     {"no-dct-scaling", no_argument, 0, OPT_NO_DCT},
        {"no-prune", no_argument, 0, OPT_NO_PRUNE},         {"out", required_argument, 0, OPT_OUT},
        {"help", no_argument, 0, 'h'},                      {0}};
    static const struct option bench_opts[] = {
        {"size", required_argument, 0, OPT_SIZE},           {"threads", required_argument, 0, OPT_THREADS},
        {"filter", required_argument, 0, OPT_FILTER},       {"min-side", required_argument, 0, OPT_MIN_SIDE},
        {"max-aspect", required_argument, 0, OPT_MAX_ASPECT}, {"max-pixels", required_argument, 0, OPT_MAX_PIXELS},
        {"no-upscale", no_argument, 0, OPT_NO_UPSCALE},     {"no-dct-scaling", no_argument, 0, OPT_NO_DCT},
        {"no-prune", no_argument, 0, OPT_NO_PRUNE},         {"reps", required_argument, 0, OPT_REPS},
        {"no-floor", no_argument, 0, OPT_NO_FLOOR},         {"help", no_argument, 0, 'h'},
        {0}};
    const char *prog = bench ? "transfuse preprocess bench" : "transfuse preprocess crop";
    TfError err = {{0}};
    image_crop_options_init(&o->crop);
    o->threads = bench ? 1 : tf_cpu_count();
    o->reps = 2;
    o->out_dir = NULL;
    o->floor = 1;
    TfOpts op = {.prog = prog, .argc = argc, .argv = argv, .shortopts = "h", .longopts = bench ? bench_opts : crop_opts};
    int c, threads;
    long n;
    while ((c = tf_opts_next(&op)) != -1) {
        const char *v = op.arg;
        switch (c) {
        case OPT_NO_UPSCALE: o->crop.upscale = 0; break;
        case OPT_NO_DCT: o->crop.dct_scaling = 0; break;
        case OPT_NO_PRUNE: o->crop.prune_scans = 0; break;
        case OPT_NO_FLOOR: o->floor = 0; break;
        case OPT_OUT: o->out_dir = v; break;
        case OPT_SIZE:
            if (tf_parse_long("--size", v, 1, 16384, &n, &err))
                goto bad;
            o->crop.size = (int)n;
            break;
        case OPT_THREADS:
            if (tf_parse_threads("--threads", v, 1024, &threads, &err))
                goto bad;
            o->threads = threads;
            break;
        case OPT_REPS:
            if (tf_parse_long("--reps", v, 1, 1000000, &o->reps, &err))
                goto bad;
            break;
        case OPT_MIN_SIDE:
            if (tf_parse_long("--min-side", v, 0, 1000000, &n, &err))
                goto bad;
            o->crop.min_side = (int)n;
            break;
        case OPT_FILTER:
            if (image_filter_parse(v, &o->crop.filter)) {
                tf_fail(&err, "--filter: '%s' is not lanczos, bicubic, bilinear or box", v);
                goto bad;
            }
            break;
        case OPT_MAX_ASPECT: {
            char *end;
            errno = 0;
            double x = strtod(v, &end);
            if (errno || *end || end == v || !(x >= 1.0) || x > 1e9) {
                tf_fail(&err, "--max-aspect: '%s' is not a ratio >= 1", v);
                goto bad;
            }
            o->crop.max_aspect = x;
            break;
        }
        case OPT_MAX_PIXELS: {
            uint64_t px;
            if (tf_parse_size("--max-pixels", v, &px, &err))
                goto bad;
            if (px == 0) {
                tf_fail(&err, "--max-pixels must be above 0");
                goto bad;
            }
            o->crop.max_pixels = px;
            break;
        }
        default: return TF_EXIT_USAGE; /* tf_opts_next said why */
        }
    }
    o->first_path = op.first_operand;
    if (o->first_path >= argc) {
        fprintf(stderr, "%s: no input files (see --help)\n", prog);
        return TF_EXIT_USAGE;
    }
    if (!bench && !o->out_dir) {
        fprintf(stderr, "%s: --out DIR is required (see --help)\n", prog);
        return TF_EXIT_USAGE;
    }
    return 0;
bad:
    fprintf(stderr, "%s: %s (see --help)\n", prog, err.msg);
    return TF_EXIT_USAGE;
}

/* Runs fn on n workers: args[0] on the calling thread, args[1..n) on
 * threads of their own, then waits for them. The workers take items from
 * a shared counter, so a thread that cannot be started only makes the run
 * slower (it is logged): every item is still done. Returns the number of
 * workers that ran. */
static int pool_run(int n, void *(*fn)(void *), void *args, size_t arg_size)
{
    pthread_t *t = n > 1 ? calloc((size_t)n, sizeof *t) : NULL;
    int started = 1;
    for (; t && started < n; started++) {
        int e = pthread_create(&t[started], NULL, fn, (char *)args + (size_t)started * arg_size);
        if (e) {
            tf_log(TF_LOG_WARN, "preprocess", "could not start thread %d of %d (%s); going on with %d", started + 1,
                   n, strerror(e), started);
            break;
        }
    }
    fn(args);
    for (int i = 1; i < started; i++)
        pthread_join(t[i], NULL);
    free(t);
    return started;
}

/* ---- crop ------------------------------------------------------------------ */

typedef struct CropResult {
    int done;
    int status; /* ImageStatus, or -1 when the file could not be read */
    char detail[320];
} CropResult;

typedef struct CropJob {
    const CliOpts *o;
    char **paths;
    size_t n;
    CropResult *results;
    atomic_size_t next;
    pthread_mutex_t lock;
    size_t printed;
    long counts[IMAGE_STATUS_COUNT + 1];
    TfProgress progress;
} CropJob;

typedef struct CropWorker {
    CropJob *job;
} CropWorker;

static void crop_detail_ok(char *out, size_t cap, const ImageCropInfo *in)
{
    int n = snprintf(out, cap, "%s %dx%d scale 1/%d crop %d,%d %dx%d", image_format_name(in->format), in->width,
                     in->height, in->scale_denom, in->crop_x, in->crop_y, in->crop_w, in->crop_h);
    if (in->orientation_applied && n > 0 && (size_t)n < cap)
        n += snprintf(out + n, cap - (size_t)n, " exif-orientation %d", in->orientation);
    if (in->had_alpha && n > 0 && (size_t)n < cap)
        n += snprintf(out + n, cap - (size_t)n, " alpha-on-white");
    if (in->scans_pruned && n > 0 && (size_t)n < cap)
        n += snprintf(out + n, cap - (size_t)n, " ac-scans-skipped %d", in->scans_pruned);
    if (in->warnings && n > 0 && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, " warnings %d", in->warnings);
}

/* Prints every finished result that is next in input order. Call locked. */
static void crop_flush(CropJob *job)
{
    while (job->printed < job->n && job->results[job->printed].done) {
        CropResult *r = &job->results[job->printed];
        const char *cls = r->status < 0 ? "unreadable" : image_status_name((ImageStatus)r->status);
        printf("%s\t%s\t%s\n", job->paths[job->printed], cls, r->detail);
        job->counts[r->status < 0 ? IMAGE_STATUS_COUNT : r->status]++;
        job->printed++;
    }
    fflush(stdout);
}

static void *crop_worker(void *arg)
{
    CropJob *job = ((CropWorker *)arg)->job;
    const CliOpts *o = job->o;
    TfError err = {{0}};
    ImageCropper *c = image_cropper_new(&o->crop, &err);
    size_t sz = (size_t)o->crop.size;
    uint8_t *rgb = malloc(sz * sz * 3);
    for (;;) {
        size_t i = atomic_fetch_add(&job->next, 1);
        if (i >= job->n)
            break;
        CropResult *r = &job->results[i];
        const char *path = job->paths[i];
        if (!c || !rgb) {
            r->status = IMAGE_NO_MEMORY;
            snprintf(r->detail, sizeof r->detail, "out of memory");
        } else {
            size_t len = 0;
            err.msg[0] = 0;
            char *data = tf_read_file(path, IMAGE_CLI_MAX_FILE, &len, &err);
            if (!data) {
                r->status = -1;
                snprintf(r->detail, sizeof r->detail, "%s", err.msg);
            } else {
                ImageCropInfo info;
                ImageStatus st = image_cropper_run(c, data, len, rgb, &info, &err);
                free(data);
                r->status = st;
                if (st == IMAGE_OK) {
                    const char *base = strrchr(path, '/');
                    base = base ? base + 1 : path;
                    char name[1024], out[4096];
                    snprintf(name, sizeof name, "%s.png", base);
                    if (tf_path_join(out, sizeof out, o->out_dir, name) ||
                        image_png_write(out, rgb, o->crop.size, o->crop.size, &err)) {
                        r->status = -1;
                        snprintf(r->detail, sizeof r->detail, "cannot write output: %s", err.msg);
                    } else {
                        crop_detail_ok(r->detail, sizeof r->detail, &info);
                    }
                } else {
                    snprintf(r->detail, sizeof r->detail, "%s", err.msg);
                }
            }
        }
        pthread_mutex_lock(&job->lock);
        r->done = 1;
        crop_flush(job);
        tf_progress_update(&job->progress, job->printed);
        pthread_mutex_unlock(&job->lock);
    }
    free(rgb);
    image_cropper_free(c);
    return NULL;
}

static void crop_usage(FILE *f)
{
    fprintf(f,
            "usage: transfuse preprocess crop [options] --out DIR FILE...\n\n"
            "Decodes each JPEG, PNG or WebP file, applies its EXIF orientation, composites\n"
            "alpha onto white, resizes the short side to --size with an antialiasing filter\n"
            "and cuts out the centre square. Writes DIR/<file name>.png (e.g. a.jpg ->\n"
            "DIR/a.jpg.png) and prints one line per input on stdout, in input order:\n"
            "  PATH <tab> ok|truncated|corrupt|unsupported|too_small|too_large|bad_aspect|\n"
            "             not_image|no_memory|unreadable <tab> DETAIL\n"
            "where DETAIL is the source format and size, the JPEG scale used and the crop\n"
            "box in source pixels, or the reason for the failure. A summary goes to stderr.\n"
            "Exits 0 when it ran (whatever each file's outcome), 2 on usage errors (nothing\n"
            "is written), 3 when the output folder cannot be made.\n\n"
            "options:\n"
            "  --out DIR         folder for the PNGs (created if missing; required)\n"
            "  --threads N       worker threads (default and 0: one per CPU)\n"
            "%s",
            CROP_OPTIONS_HELP);
}

int image_crop_main(int argc, char **argv)
{
    if (tf_cli_wants_help(argc, argv)) {
        crop_usage(stdout);
        return TF_EXIT_OK;
    }
    CliOpts o;
    int prc = cli_parse(argc, argv, 0, &o);
    if (prc)
        return prc;
    image_tune_process_malloc();
    TfError err = {{0}};
    ImageCropper *probe = image_cropper_new(&o.crop, &err);
    if (!probe) {
        fprintf(stderr, "transfuse preprocess crop: %s\n", err.msg);
        return TF_EXIT_USAGE;
    }
    image_cropper_free(probe);
    if (tf_mkdir_p(o.out_dir, &err)) {
        fprintf(stderr, "transfuse preprocess crop: %s\n", err.msg);
        return TF_EXIT_FAIL;
    }
    CropJob job;
    memset(&job, 0, sizeof job);
    job.o = &o;
    job.paths = argv + o.first_path;
    job.n = (size_t)(argc - o.first_path);
    job.results = calloc(job.n, sizeof *job.results);
    long nt = o.threads < (long)job.n ? o.threads : (long)job.n;
    CropWorker *workers = calloc((size_t)nt, sizeof *workers);
    if (!job.results || !workers) {
        fprintf(stderr, "transfuse preprocess crop: out of memory\n");
        free(job.results);
        free(workers);
        return TF_EXIT_FAIL;
    }
    for (long t = 0; t < nt; t++)
        workers[t].job = &job;
    atomic_init(&job.next, 0);
    pthread_mutex_init(&job.lock, NULL);
    tf_progress_init(&job.progress, "crop", job.n, "files");
    double t0 = tf_now();
    nt = pool_run((int)nt, crop_worker, workers, sizeof *workers);
    double dt = tf_now() - t0;
    tf_progress_finish(&job.progress, job.printed);
    pthread_mutex_destroy(&job.lock);
    fprintf(stderr, "crop: %zu files in %.2f s (%.1f files/s, %ld threads): ok %ld", job.n, dt,
            dt > 0 ? (double)job.n / dt : 0.0, nt, job.counts[IMAGE_OK]);
    for (int s = 1; s <= IMAGE_STATUS_COUNT; s++)
        if (job.counts[s])
            fprintf(stderr, ", %s %ld", s == IMAGE_STATUS_COUNT ? "unreadable" : image_status_name((ImageStatus)s),
                    job.counts[s]);
    fprintf(stderr, "\n");
    free(job.results);
    free(workers);
    return TF_EXIT_OK;
}

/* ---- bench ------------------------------------------------------------------ */

typedef struct BenchFile {
    char *path;
    uint8_t *data;
    size_t len;
    ImageFormat format;
    double mp;
} BenchFile;

typedef struct BenchList {
    BenchFile *v;
    size_t n, cap;
} BenchList;

static int bench_wanted(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png") ||
                   !strcasecmp(dot, ".webp"));
}

static int bench_add(BenchList *l, const char *path)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        BenchFile *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    memset(&l->v[l->n], 0, sizeof l->v[0]);
    l->v[l->n].path = strdup(path);
    if (!l->v[l->n].path)
        return -1;
    l->n++;
    return 0;
}

/* Adds `path`, or the image files under it when it is a folder. */
static int bench_collect(BenchList *l, const char *path, int depth, TfError *err)
{
    struct stat st;
    if (stat(path, &st))
        return tf_fail(err, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return depth == 0 || bench_wanted(path) ? bench_add(l, path) : 0;
    if (depth > 16)
        return 0;
    DIR *d = opendir(path);
    if (!d)
        return tf_fail(err, "%s: %s", path, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char sub[4096];
        if (tf_path_join(sub, sizeof sub, path, e->d_name))
            continue;
        rc = bench_collect(l, sub, depth + 1, err);
    }
    closedir(d);
    return rc;
}

static int bench_cmp(const void *a, const void *b)
{
    return strcmp(((const BenchFile *)a)->path, ((const BenchFile *)b)->path);
}

typedef struct BenchJob {
    const CliOpts *o;
    BenchFile **files;
    size_t n;   /* files in this run */
    size_t total; /* n * reps */
    atomic_size_t next;
    atomic_long fails;
} BenchJob;

typedef struct BenchWorker {
    BenchJob *job;
} BenchWorker;

static void *bench_worker(void *arg)
{
    BenchJob *job = ((BenchWorker *)arg)->job;
    ImageCropper *c = image_cropper_new(&job->o->crop, NULL);
    size_t sz = (size_t)job->o->crop.size;
    uint8_t *rgb = malloc(sz * sz * 3);
    for (;;) {
        size_t i = atomic_fetch_add(&job->next, 1);
        if (i >= job->total)
            break;
        BenchFile *f = job->files[i % job->n];
        if (!c || !rgb || image_cropper_run(c, f->data, f->len, rgb, NULL, NULL) != IMAGE_OK)
            atomic_fetch_add(&job->fails, 1);
    }
    free(rgb);
    image_cropper_free(c);
    return NULL;
}

/* Times reps passes over files with o->threads threads. Returns seconds. */
static double bench_time(const CliOpts *o, BenchFile **files, size_t n, long *fails)
{
    BenchJob job;
    memset(&job, 0, sizeof job);
    job.o = o;
    job.files = files;
    job.n = n;
    job.total = n * (size_t)o->reps;
    atomic_init(&job.next, 0);
    atomic_init(&job.fails, 0);
    BenchWorker w[1024];
    for (long t = 0; t < o->threads; t++)
        w[t].job = &job;
    double t0 = tf_now();
    pool_run((int)o->threads, bench_worker, w, sizeof w[0]);
    double dt = tf_now() - t0;
    *fails = atomic_load(&job.fails);
    return dt;
}

/* TurboJPEG's plain scaled decode of each JPEG at the scale the cropper
 * picks: what decoding alone costs, with none of our work. One thread. */
static double bench_floor(const CliOpts *o, BenchFile **files, size_t n, size_t *decoded)
{
    tjhandle tj = tjInitDecompress();
    ImageCropper *c = image_cropper_new(&o->crop, NULL);
    uint8_t *buf = NULL;
    size_t cap = 0;
    *decoded = 0;
    double t0 = tf_now();
    for (long r = 0; r < o->reps && tj && c; r++)
        for (size_t i = 0; i < n; i++) {
            int w, h, sub, cs;
            if (tjDecompressHeader3(tj, files[i]->data, (unsigned long)files[i]->len, &w, &h, &sub, &cs))
                continue;
            int d = image_jpeg_pick_denom(c, w, h);
            tjscalingfactor sf = {1, d};
            int sw = TJSCALED(w, sf), sh = TJSCALED(h, sf);
            size_t need = (size_t)sw * (size_t)sh * 3;
            if (need > cap) {
                free(buf);
                buf = malloc(need);
                cap = buf ? need : 0;
                if (!buf)
                    continue;
            }
            if (tjDecompress2(tj, files[i]->data, (unsigned long)files[i]->len, buf, sw, 0, sh, TJPF_RGB, 0) == 0 ||
                tjGetErrorCode(tj) == TJERR_WARNING)
                (*decoded)++;
        }
    double dt = tf_now() - t0;
    free(buf);
    image_cropper_free(c);
    if (tj)
        tjDestroy(tj);
    return dt;
}

static void bench_usage(FILE *f)
{
    fprintf(f,
            "usage: transfuse preprocess bench [options] FILE_OR_DIR...\n\n"
            "Loads the JPEG, PNG and WebP files (folders are searched recursively) into\n"
            "memory, then times decode + resize + centre crop over them, --reps passes,\n"
            "per format and over all files: images/s and source megapixels/s. For JPEGs it\n"
            "also times TurboJPEG's plain decode at the same DCT scale (the floor: what\n"
            "decoding alone costs) on one thread. Results on stdout, one line per group.\n\n"
            "Exits 0 when it ran, 2 on usage errors, 3 when an input cannot be read.\n\n"
            "options:\n"
            "  --threads N       worker threads (default 1; 0: one per CPU)\n"
            "  --reps N          passes over the files (default 2)\n"
            "  --no-floor        skip the TurboJPEG floor measurement\n"
            "%s",
            CROP_OPTIONS_HELP);
}

int image_bench_main(int argc, char **argv)
{
    if (tf_cli_wants_help(argc, argv)) {
        bench_usage(stdout);
        return TF_EXIT_OK;
    }
    CliOpts o;
    int prc = cli_parse(argc, argv, 1, &o);
    if (prc)
        return prc;
    image_tune_process_malloc();
    if (o.threads > 1024)
        o.threads = 1024;
    TfError err = {{0}};
    ImageCropper *probe = image_cropper_new(&o.crop, &err);
    if (!probe) {
        fprintf(stderr, "transfuse preprocess bench: %s\n", err.msg);
        return TF_EXIT_USAGE;
    }
    BenchList l = {0};
    BenchFile **group = NULL;
    int rc = TF_EXIT_FAIL;
    for (int i = o.first_path; i < argc; i++)
        if (bench_collect(&l, argv[i], 0, &err)) {
            fprintf(stderr, "transfuse preprocess bench: %s\n", err.msg);
            goto done;
        }
    if (l.n == 0) {
        fprintf(stderr, "transfuse preprocess bench: no JPEG, PNG or WebP files found\n");
        goto done;
    }
    qsort(l.v, l.n, sizeof l.v[0], bench_cmp);
    group = calloc(l.n, sizeof *group);
    if (!group)
        goto done;
    double mp_all = 0;
    for (size_t i = 0; i < l.n; i++) {
        BenchFile *f = &l.v[i];
        f->data = (uint8_t *)tf_read_file(f->path, IMAGE_CLI_MAX_FILE, &f->len, &err);
        if (!f->data) {
            fprintf(stderr, "transfuse preprocess bench: %s\n", err.msg);
            goto done;
        }
        f->format = image_format_sniff(f->data, f->len);
        size_t sz = (size_t)o.crop.size;
        uint8_t *rgb = malloc(sz * sz * 3);
        ImageCropInfo info;
        /* Also the warm-up: every file once, untimed. */
        if (rgb && image_cropper_run(probe, f->data, f->len, rgb, &info, &err) == IMAGE_OK)
            f->mp = (double)info.width * info.height / 1e6;
        else
            tf_log(TF_LOG_WARN, "bench", "%s: %s (timed anyway)", f->path, err.msg);
        free(rgb);
        mp_all += f->mp;
    }
    printf("# %zu files, %.1f MP, size %d, filter %s, threads %ld, reps %ld\n", l.n, mp_all, o.crop.size,
           image_filter_name(o.crop.filter), o.threads, o.reps);
    static const ImageFormat groups[] = {IMAGE_FORMAT_JPEG, IMAGE_FORMAT_PNG, IMAGE_FORMAT_WEBP, IMAGE_FORMAT_UNKNOWN};
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        size_t n = 0;
        double mp = 0;
        for (size_t i = 0; i < l.n; i++)
            if (groups[g] == IMAGE_FORMAT_UNKNOWN || l.v[i].format == groups[g]) {
                group[n++] = &l.v[i];
                mp += l.v[i].mp;
            }
        if (!n)
            continue;
        long fails = 0;
        double dt = bench_time(&o, group, n, &fails);
        double imgs = (double)n * o.reps;
        printf("%s\tfiles=%zu\tmp=%.1f\tseconds=%.3f\timages_per_s=%.2f\tmp_per_s=%.1f\tfailed=%ld\n",
               groups[g] == IMAGE_FORMAT_UNKNOWN ? "all" : image_format_name(groups[g]), n, mp, dt, imgs / dt,
               mp * o.reps / dt, fails);
        fflush(stdout);
        if (groups[g] == IMAGE_FORMAT_JPEG && o.floor) {
            size_t decoded = 0;
            double ft = bench_floor(&o, group, n, &decoded);
            printf("jpeg-floor\tfiles=%zu\tseconds=%.3f\timages_per_s=%.2f\tcrop_vs_floor_time=%.2f\t"
                   "(TurboJPEG tjDecompress2 at the same scale, 1 thread, %zu decoded)\n",
                   n, ft, imgs / ft, o.threads == 1 ? dt / ft : 0.0, decoded);
            fflush(stdout);
        }
    }
    rc = TF_EXIT_OK;
done:
    image_cropper_free(probe);
    for (size_t i = 0; i < l.n; i++) {
        free(l.v[i].path);
        free(l.v[i].data);
    }
    free(l.v);
    free(group);
    return rc;
}
