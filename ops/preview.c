/* preview.c: `transfuse shards preview PATH --out sheet.png`, a contact
 * sheet of the first records of a dataset folder or a Kafka topic: each
 * cell the crop (Sample.image: PNG/JPEG/WebP through the preprocess image
 * decoder, or raw RGB), or with --vae DIR the latent decoded by the VAE,
 * with the key and the caption under it. Text is set by pango on cairo
 * with real fonts (DejaVu): UTF-8 captions wrap at word boundaries and end
 * with an ellipsis when longer than the cell.
 *
 * The picture is written under a temporary name and renamed into place.
 * Records are untrusted: image sizes are checked before anything is
 * allocated, invalid UTF-8 is replaced, and a record that cannot be shown
 * becomes a cell that says why. */
#include "ops.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pango/pangocairo.h>

#include "preprocess.h"
#include "shards.h"

#define PREVIEW_TAG "preview"
#define PREVIEW_MAX_LIMIT 1024
#define PREVIEW_MAX_RAW_SIDE 4096
#define PREVIEW_MARGIN 16
#define PREVIEW_GAP 12
#define PREVIEW_HEADER 44
#define PREVIEW_TEXT_LINES 4

static void preview_usage(FILE *out)
{
    fprintf(out,
            "usage: transfuse shards preview PATH --out sheet.png [--limit N] [--columns C]\n"
            "                                [--size PX] [--vae DIR] [--threads N] [--json]\n\n"
            "A contact sheet of the first records of PATH (a dataset folder, or\n"
            "kafka://HOST:PORT/TOPIC from the beginning of every partition): the stored\n"
            "crop of each record (Sample.image) or, with --vae, its latent decoded by that\n"
            "VAE, with its key and caption. Records without a picture get a cell that says\n"
            "so; damaged records are skipped and counted.\n\n"
            "options:\n"
            "  --out FILE.png   the sheet (written under a temporary name, then renamed)\n"
            "  --limit N        records to show (default 24, at most %d)\n"
            "  --columns C      cells per row (default: about square, at most 8)\n"
            "  --size PX        side of each picture in pixels (default 192)\n"
            "  --vae DIR        decode Sample.latent_mean with this VAE (diffusers\n"
            "                   layout) instead of showing the stored crop; refused when\n"
            "                   the data names another VAE identity\n"
            "  --threads N      threads for the VAE decoder (default 0: all CPUs)\n"
            "  --json           print where each cell is: {\"out\", \"cells\": [{key, x, y,\n"
            "                   size, source}]}\n"
            "  -h, --help       this help\n",
            PREVIEW_MAX_LIMIT);
}

typedef struct Cell {
    char *key, *caption;
    uint8_t *rgb;      /* w*h*3, or NULL */
    int w, h;
    char source[16];   /* "png", "jpeg", "webp", "rgb8", "vae", or "" */
    char why[160];     /* why there is no picture */
} Cell;

typedef struct Preview {
    int limit, size, threads;
    const char *vae_dir;
    Vae *vae;
    TfKernels *k;
    ImageCropper *cropper;
    Cell *cells;
    int n;
    uint64_t damaged;
    char vae_id_seen[80]; /* the identity the data names, when known */
} Preview;

/* ---- pictures from a record ---- */

static int latent_to_f32(const Transfuse__V1__Tensor *t, float *out, size_t n, TfError *err)
{
    size_t es = t->dtype == TRANSFUSE__V1__DTYPE__DTYPE_F32 ? 4
                : (t->dtype == TRANSFUSE__V1__DTYPE__DTYPE_F16 || t->dtype == TRANSFUSE__V1__DTYPE__DTYPE_BF16) ? 2
                                                                                                               : 0;
    if (!es)
        return tf_fail(err, "latent dtype %d is not f32, f16 or bf16", (int)t->dtype);
    if (t->data.len != n * es)
        return tf_fail(err, "latent holds %zu bytes, its shape says %zu", t->data.len, n * es);
    const uint8_t *d = t->data.data;
    for (size_t i = 0; i < n; i++) {
        if (es == 4) {
            uint32_t u = (uint32_t)d[4 * i] | (uint32_t)d[4 * i + 1] << 8 | (uint32_t)d[4 * i + 2] << 16 |
                         (uint32_t)d[4 * i + 3] << 24;
            memcpy(&out[i], &u, 4);
        } else {
            uint16_t h = (uint16_t)(d[2 * i] | d[2 * i + 1] << 8);
            out[i] = t->dtype == TRANSFUSE__V1__DTYPE__DTYPE_F16 ? tf_f16_to_f32(h) : tf_bf16_to_f32(h);
        }
    }
    return 0;
}

/* Decodes the record's latent mean with the VAE into cell->rgb. */
static int cell_from_latent(Preview *pv, const Sample *s, Cell *cell, TfError *err)
{
    const Transfuse__V1__Tensor *t = s->latent_mean;
    const VaeConfig *cfg = vae_config(pv->vae);
    int f = vae_downsample_factor(cfg);
    if (!t || t->n_shape != 3)
        return tf_fail(err, "no latent (C,h,w) in the record");
    if ((int)t->shape[0] != cfg->latent_channels)
        return tf_fail(err, "latent has %u channels, the VAE %d", t->shape[0], cfg->latent_channels);
    if (t->shape[1] < 1 || t->shape[2] < 1 || t->shape[1] * (uint64_t)f > 2048 || t->shape[2] * (uint64_t)f > 2048)
        return tf_fail(err, "latent %ux%u decodes to more than 2048 pixels a side", t->shape[1], t->shape[2]);
    int h = (int)t->shape[1], w = (int)t->shape[2];
    size_t n = (size_t)cfg->latent_channels * h * w, npx = (size_t)h * f * w * f;
    float *z = malloc(n * sizeof *z), *img = malloc(3 * npx * sizeof *img);
    cell->rgb = malloc(3 * npx);
    int rc = -1;
    if (!z || !img || !cell->rgb) {
        tf_fail(err, "out of memory");
        goto done;
    }
    if (latent_to_f32(t, z, n, err))
        goto done;
    /* The record keeps the unscaled posterior mean; the decoder wants the
     * model's latent: z = (mean - shift) * scaling. */
    for (size_t i = 0; i < n; i++)
        z[i] = (z[i] - cfg->shift_factor) * cfg->scaling_factor;
    if (vae_decode(pv->vae, pv->k, z, 1, h, w, img, err))
        goto done;
    /* (B,3,H,W) in about [-1,1] to HWC bytes, rounded as `vae decode` writes PNGs */
    for (size_t i = 0; i < npx; i++)
        for (int c = 0; c < 3; c++) {
            float v = (img[(size_t)c * npx + i] + 1.0f) * 127.5f;
            v = v < 0 ? 0 : v > 255 ? 255 : v;
            cell->rgb[i * 3 + (size_t)c] = (uint8_t)lrintf(v);
        }
    cell->w = w * f;
    cell->h = h * f;
    snprintf(cell->source, sizeof cell->source, "vae");
    rc = 0;
done:
    free(z);
    free(img);
    if (rc) {
        free(cell->rgb);
        cell->rgb = NULL;
    }
    return rc;
}

/* The stored crop: raw RGB as it is, encoded formats through the image
 * decoder at the cell's size (the crop is square; other shapes are
 * centre-cropped as the pipeline would). */
static int cell_from_image(Preview *pv, const Sample *s, Cell *cell, TfError *err)
{
    const Transfuse__V1__EncodedImage *im = s->image;
    if (!im || !im->data.len)
        return tf_fail(err, "no stored crop (Sample.image): use --vae DIR to decode the latent");
    const char *fmt = im->format ? im->format : "";
    if (!strcmp(fmt, "rgb8")) { /* what ingest stage 1 writes: (H,W,3) u8, HWC */
        if (im->width < 1 || im->height < 1 || im->width > PREVIEW_MAX_RAW_SIDE || im->height > PREVIEW_MAX_RAW_SIDE)
            return tf_fail(err, "raw image %ux%u is empty or larger than %d a side", im->width, im->height,
                           PREVIEW_MAX_RAW_SIDE);
        size_t need = (size_t)im->width * im->height * 3;
        if (im->data.len != need)
            return tf_fail(err, "raw image %ux%u needs %zu bytes, holds %zu", im->width, im->height, need,
                           im->data.len);
        if (!(cell->rgb = malloc(need)))
            return tf_fail(err, "out of memory");
        memcpy(cell->rgb, im->data.data, need);
        cell->w = (int)im->width;
        cell->h = (int)im->height;
        snprintf(cell->source, sizeof cell->source, "rgb8");
        return 0;
    }
    size_t need = (size_t)pv->size * pv->size * 3;
    if (!(cell->rgb = malloc(need)))
        return tf_fail(err, "out of memory");
    ImageCropInfo info;
    ImageStatus st = image_cropper_run(pv->cropper, im->data.data, im->data.len, cell->rgb, &info, err);
    if (st != IMAGE_OK) {
        free(cell->rgb);
        cell->rgb = NULL;
        return tf_fail_context(err, "stored crop (%s): %s", fmt[0] ? fmt : "no format", image_status_name(st));
    }
    cell->w = cell->h = pv->size;
    snprintf(cell->source, sizeof cell->source, "%s", image_format_name(info.format));
    return 0;
}

/* Adds one record as the next cell. */
static int preview_add(Preview *pv, const Sample *s)
{
    Cell *cell = &pv->cells[pv->n++];
    memset(cell, 0, sizeof *cell);
    /* valid UTF-8 from here on (pango and the JSON layout want it) */
    cell->key = g_utf8_make_valid(s->key ? s->key : "", -1);
    cell->caption = g_utf8_make_valid(s->caption ? s->caption : "", -1);
    if (!cell->key || !cell->caption)
        return -1;
    TfError err = {{0}};
    int rc = pv->vae ? cell_from_latent(pv, s, cell, &err) : cell_from_image(pv, s, cell, &err);
    if (rc)
        snprintf(cell->why, sizeof cell->why, "%s", err.msg);
    return 0;
}

/* ---- reading records (one loop per home; the shared record source
 * replaces both once it lands in shards.h) ---- */

static int preview_check_vae(Preview *pv, const char *named, TfError *err)
{
    if (!pv->vae || !named || !named[0])
        return 0;
    snprintf(pv->vae_id_seen, sizeof pv->vae_id_seen, "%s", named);
    if (strcmp(named, vae_identity(pv->vae)))
        return tf_fail(err, "the records were encoded by VAE %.16s..., --vae %s is %.16s...: decoding would "
                            "show noise",
                       named, pv->vae_dir, vae_identity(pv->vae));
    return 0;
}

static int preview_read_folder(Preview *pv, const char *dir, TfError *err)
{
    ShardManifest *m = shard_manifest_load(dir, err);
    if (!m)
        return -1;
    int rc = preview_check_vae(pv, m->facts.vae_id, err);
    ShardArena arena;
    shard_arena_init(&arena, 1 << 20);
    for (size_t i = 0; !rc && i < m->n_shards && pv->n < pv->limit; i++) {
        char path[4096];
        if (tf_path_join(path, sizeof path, dir, m->shards[i].name)) {
            rc = tf_fail(err, "%s: path too long", dir);
            break;
        }
        ShardFile *f = shard_file_open(path, err);
        if (!f) {
            rc = -1;
            break;
        }
        ShardCursor cur;
        shard_cursor_init(&cur, f);
        const uint8_t *payload;
        size_t len;
        ShardProblem prob;
        int r;
        while (pv->n < pv->limit && (r = shard_cursor_next(&cur, &payload, &len, &prob)) != 0) {
            if (r < 0) {
                pv->damaged++;
                continue;
            }
            shard_arena_reset(&arena);
            TfError derr;
            Sample *s = sample_decode(payload, len, &arena, &derr);
            if (!s) {
                pv->damaged++;
                continue;
            }
            if (preview_add(pv, s)) {
                rc = tf_fail(err, "out of memory");
                break;
            }
        }
        shard_file_free(f);
    }
    shard_arena_deinit(&arena);
    shard_manifest_free(m);
    return rc;
}

static int preview_read_topic(Preview *pv, const char *url, TfError *err)
{
    char bootstrap[1024], topic[256];
    if (kafka_url_parse(url, bootstrap, sizeof bootstrap, topic, sizeof topic, err))
        return -1;
    KafkaSourceOptions o = {.bootstrap = bootstrap,
                            .topic = topic,
                            .group_id = "transfuse-preview",
                            .until = KAFKA_UNTIL_SNAPSHOT,
                            .commit_interval_ms = -1};
    KafkaPosition *start = kafka_position_new(topic);
    KafkaTopicInfo info;
    if (!start)
        return tf_fail(err, "out of memory");
    /* From the oldest record kept, never from a group's offsets. */
    if (kafka_topic_describe(bootstrap, topic, NULL, &info, err)) {
        kafka_position_free(start);
        return -1;
    }
    for (size_t i = 0; i < info.n; i++)
        kafka_position_set(start, info.parts[i].partition, info.parts[i].low > 0 ? info.parts[i].low : 0, NULL);
    kafka_topic_info_deinit(&info);
    o.start = start;
    KafkaSource *src = kafka_source_new(&o, err);
    kafka_position_free(start);
    if (!src)
        return -1;
    const TfStopFlag *stop = tf_cli_stop_flag();
    ShardArena arena;
    shard_arena_init(&arena, 1 << 20);
    int rc = 0, checked = 0;
    while (pv->n < pv->limit && !tf_stop_requested(stop)) {
        KafkaRecord rec;
        int r = kafka_source_next(src, &rec, 200, err);
        if (r < 0) {
            rc = -1;
            break;
        }
        if (r == KAFKA_END)
            break;
        if (r != KAFKA_RECORD)
            continue;
        if (!checked) {
            char id[80];
            if (kafka_source_record_header(src, KAFKA_HEADER_VAE, id, sizeof id) && (rc = preview_check_vae(pv, id, err)))
                break;
            checked = 1;
        }
        shard_arena_reset(&arena);
        TfError derr;
        Sample *s = sample_decode(rec.payload, rec.len, &arena, &derr);
        if (!s) {
            pv->damaged++;
            continue;
        }
        if (preview_add(pv, s)) {
            rc = tf_fail(err, "out of memory");
            break;
        }
    }
    shard_arena_deinit(&arena);
    kafka_source_free(src);
    return rc;
}

/* ---- drawing ---- */

static void draw_text(cairo_t *cr, PangoLayout *lay, const char *font, const char *text, int x, int y, int width,
                      int lines, double grey)
{
    PangoFontDescription *fd = pango_font_description_from_string(font);
    pango_layout_set_font_description(lay, fd);
    pango_font_description_free(fd);
    char *valid = g_utf8_make_valid(text, -1); /* the header holds a path, any bytes */
    pango_layout_set_text(lay, valid, -1);
    g_free(valid);
    pango_layout_set_width(lay, width * PANGO_SCALE);
    pango_layout_set_wrap(lay, PANGO_WRAP_WORD_CHAR);
    pango_layout_set_ellipsize(lay, PANGO_ELLIPSIZE_END);
    pango_layout_set_height(lay, -lines); /* negative: at most this many lines */
    cairo_set_source_rgb(cr, grey, grey, grey);
    cairo_move_to(cr, x, y);
    pango_cairo_show_layout(cr, lay);
}

/* Paints rgb (w x h, HWC) into the square at x, y of side `size`, scaled
 * to cover it (centre-cropped when not square). */
static int draw_rgb(cairo_t *cr, const uint8_t *rgb, int w, int h, int x, int y, int size)
{
    cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h);
    if (cairo_surface_status(img) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(img);
        return -1;
    }
    cairo_surface_flush(img);
    unsigned char *dst = cairo_image_surface_get_data(img);
    int stride = cairo_image_surface_get_stride(img);
    for (int r = 0; r < h; r++) {
        uint32_t *row = (uint32_t *)(void *)(dst + (size_t)r * (size_t)stride);
        const uint8_t *src = rgb + (size_t)r * (size_t)w * 3;
        for (int c = 0; c < w; c++)
            row[c] = 0xff000000u | (uint32_t)src[3 * c] << 16 | (uint32_t)src[3 * c + 1] << 8 | src[3 * c + 2];
    }
    cairo_surface_mark_dirty(img);
    double scale = (double)size / (w < h ? w : h);
    cairo_save(cr);
    cairo_rectangle(cr, x, y, size, size);
    cairo_clip(cr);
    cairo_translate(cr, x + (size - w * scale) / 2, y + (size - h * scale) / 2);
    cairo_scale(cr, scale, scale);
    cairo_set_source_surface(cr, img, 0, 0);
    cairo_pattern_set_filter(cairo_get_source(cr), scale == 1.0 ? CAIRO_FILTER_NEAREST : CAIRO_FILTER_GOOD);
    cairo_paint(cr);
    cairo_restore(cr);
    cairo_surface_destroy(img);
    return 0;
}

static int preview_draw(const Preview *pv, const char *path, const char *out, int columns, json_t *layout,
                        TfError *err)
{
    int n = pv->n, size = pv->size;
    int cols = columns > 0 ? columns : (int)ceil(sqrt((double)(n ? n : 1)));
    if (cols > 8 && columns <= 0)
        cols = 8;
    if (cols > n && n > 0)
        cols = n;
    int rows = n ? (n + cols - 1) / cols : 1;
    int text_h = 18 + 15 * PREVIEW_TEXT_LINES; /* key line + caption lines */
    int cell_w = size, cell_h = size + 6 + text_h;
    int W = 2 * PREVIEW_MARGIN + cols * cell_w + (cols - 1) * PREVIEW_GAP;
    int H = PREVIEW_HEADER + PREVIEW_MARGIN + rows * cell_h + (rows - 1) * PREVIEW_GAP;
    if (W < 480)
        W = 480;
    cairo_surface_t *sheet = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
    if (cairo_surface_status(sheet) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(sheet);
        return tf_fail(err, "cannot make a %dx%d picture", W, H);
    }
    cairo_t *cr = cairo_create(sheet);
    PangoLayout *lay = pango_cairo_create_layout(cr);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    char head[600];
    snprintf(head, sizeof head, "%s  ·  %d record%s%s%s", path, n, n == 1 ? "" : "s",
             pv->vae ? "  ·  latents decoded by the VAE" : "  ·  stored crops",
             pv->damaged ? "  ·  damaged records skipped" : "");
    draw_text(cr, lay, "DejaVu Sans Bold 12", head, PREVIEW_MARGIN, 12, W - 2 * PREVIEW_MARGIN, 1, 0.1);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        const Cell *c = &pv->cells[i];
        int x = PREVIEW_MARGIN + (i % cols) * (cell_w + PREVIEW_GAP);
        int y = PREVIEW_HEADER + (i / cols) * (cell_h + PREVIEW_GAP);
        if (c->rgb) {
            if (draw_rgb(cr, c->rgb, c->w, c->h, x, y, size)) {
                rc = tf_fail(err, "cannot draw record %d", i);
                break;
            }
        } else {
            cairo_set_source_rgb(cr, 0.93, 0.93, 0.93);
            cairo_rectangle(cr, x, y, size, size);
            cairo_fill(cr);
            draw_text(cr, lay, "DejaVu Sans 9", c->why, x + 8, y + 8, size - 16, 8, 0.35);
        }
        draw_text(cr, lay, "DejaVu Sans Mono Bold 9", c->key, x, y + size + 6, cell_w, 1, 0.15);
        draw_text(cr, lay, "DejaVu Sans 9", c->caption, x, y + size + 6 + 18, cell_w, PREVIEW_TEXT_LINES, 0.25);
        if (layout)
            json_array_append_new(json_object_get(layout, "cells"),
                                  json_pack("{s:s, s:i, s:i, s:i, s:s}", "key", c->key, "x", x, "y", y,
                                            "size", size, "source", c->rgb ? c->source : ""));
    }
    g_object_unref(lay);
    cairo_destroy(cr);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out, (long)getpid());
    if (!rc) {
        cairo_status_t st = cairo_surface_write_to_png(sheet, tmp);
        if (st != CAIRO_STATUS_SUCCESS)
            rc = tf_fail(err, "%s: %s", out, cairo_status_to_string(st));
        else if (rename(tmp, out))
            rc = tf_fail(err, "rename %s -> %s: %s", tmp, out, strerror(errno));
        if (rc)
            unlink(tmp);
    }
    cairo_surface_destroy(sheet);
    if (layout) {
        json_object_set_new(layout, "width", json_integer(W));
        json_object_set_new(layout, "height", json_integer(H));
    }
    return rc;
}

int preview_main(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'},        {"out", required_argument, NULL, 'o'},
                                         {"limit", required_argument, NULL, 'n'}, {"columns", required_argument, NULL, 'c'},
                                         {"size", required_argument, NULL, 's'},  {"vae", required_argument, NULL, 'v'},
                                         {"threads", required_argument, NULL, 't'}, {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    Preview pv = {.limit = 24, .size = 192};
    const char *out = NULL;
    long l, columns = 0;
    int json = 0;
    TfError err = {{0}};
    TfOpts o = {.prog = "transfuse shards preview", .argc = argc, .argv = argv, .shortopts = "ho:n:",
                .longopts = opts};
    int c;
    while ((c = tf_opts_next(&o)) != -1) {
        const char *v = o.arg;
        switch (c) {
        case 'h': preview_usage(stdout); return TF_EXIT_OK;
        case 'o': out = v; break;
        case 'n':
            if (tf_parse_long("--limit", v, 1, PREVIEW_MAX_LIMIT, &l, &err))
                goto usage;
            pv.limit = (int)l;
            break;
        case 'c':
            if (tf_parse_long("--columns", v, 1, 64, &columns, &err))
                goto usage;
            break;
        case 's':
            if (tf_parse_long("--size", v, 32, 1024, &l, &err))
                goto usage;
            pv.size = (int)l;
            break;
        case 'v': pv.vae_dir = v; break;
        case 't':
            if (tf_parse_threads("--threads", v, 1024, &pv.threads, &err))
                goto usage;
            break;
        case 'j': json = 1; break;
        default: return TF_EXIT_USAGE;
        }
    }
    if (!out) {
        tf_fail(&err, "--out FILE.png is required");
        goto usage;
    }
    if (argc - o.first_operand != 1) {
        tf_fail(&err, "give one PATH (a dataset folder or kafka://HOST:PORT/TOPIC)");
        goto usage;
    }
    const char *path = argv[o.first_operand];
    int rc = TF_EXIT_FAIL;
    json_t *layout = NULL;
    if (!pv.threads)
        pv.threads = tf_cpu_count();
    pv.cells = calloc((size_t)pv.limit, sizeof *pv.cells);
    ImageCropOptions co;
    image_crop_options_init(&co);
    co.size = pv.size;
    if (!pv.cells || !(pv.cropper = image_cropper_new(&co, &err))) {
        fprintf(stderr, "transfuse shards preview: %s\n", err.msg[0] ? err.msg : "out of memory");
        goto done;
    }
    if (pv.vae_dir && (!(pv.vae = vae_load(pv.vae_dir, VAE_LOAD_DECODER, &err)) ||
                       !(pv.k = tf_kernels_new(TF_BACKEND_CPU, pv.threads, &err)))) {
        fprintf(stderr, "transfuse shards preview: %s\n", err.msg);
        rc = TF_EXIT_USAGE;
        goto done;
    }
    int read_rc = kafka_url_is(path) ? preview_read_topic(&pv, path, &err) : preview_read_folder(&pv, path, &err);
    if (read_rc) {
        fprintf(stderr, "transfuse shards preview: %s\n", err.msg);
        rc = strstr(err.msg, "decoding would show noise") ? TF_EXIT_USAGE : TF_EXIT_FAIL;
        goto done;
    }
    if (json)
        layout = json_pack("{s:s, s:[]}", "out", out, "cells");
    if (preview_draw(&pv, path, out, (int)columns, layout, &err)) {
        fprintf(stderr, "transfuse shards preview: %s\n", err.msg);
        goto done;
    }
    if (layout) {
        char *text = json_dumps(layout, JSON_COMPACT);
        if (text)
            printf("%s\n", text);
        free(text);
    }
    int shown = 0;
    for (int i = 0; i < pv.n; i++)
        shown += pv.cells[i].rgb != NULL;
    tf_log(TF_LOG_INFO, PREVIEW_TAG, "wrote %s: %d record(s), %d with a picture%s", out, pv.n, shown,
           pv.damaged ? ", damaged records skipped" : "");
    if (pv.damaged)
        tf_log(TF_LOG_WARN, PREVIEW_TAG, "%llu damaged record(s) skipped (see transfuse shards verify)",
               (unsigned long long)pv.damaged);
    rc = TF_EXIT_OK;
done:
    json_decref(layout);
    for (int i = 0; pv.cells && i < pv.n; i++) {
        g_free(pv.cells[i].key);
        g_free(pv.cells[i].caption);
        free(pv.cells[i].rgb);
    }
    free(pv.cells);
    image_cropper_free(pv.cropper);
    vae_free(pv.vae);
    tf_kernels_free(pv.k);
    /* Font and glyph caches live as long as the process: they are not
     * dropped here. cairo_debug_reset_static_data() and FcFini() assert
     * that nothing uses them any more, and pango may still hold fonts from
     * its font-loading thread then (seen: cairo-hash.c's live_entries
     * assertion aborting 1 run in 3 on a loaded machine). The sanitizer
     * build suppresses those libraries' caches instead (tests/lsan.supp). */
    return rc;
usage:
    fprintf(stderr, "transfuse shards preview: %s (see transfuse shards preview --help)\n", err.msg);
    return TF_EXIT_USAGE;
}
