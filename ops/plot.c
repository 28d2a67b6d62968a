/* plot.c: `transfuse plot LOG... --out FILE.png`. Reads trainer logs (the
 * JSON lines of `transfuse train --log`: step, loss_lm, loss_diffusion, lr,
 * grad_norm, tokens_per_s, val_loss_* now and then) and ingest progress logs
 * (one line per second with cumulative t, rows, ok, failed,
 * failed_by_reason, bytes: the format in docs/OPERATIONS.md), and draws
 * them with Debian's gnuplot (pngcairo): loss curves raw and smoothed,
 * learning rate, tokens/s over steps; rows/s, MB/s and the failure mix
 * over time. Several logs are several runs on the same panels.
 *
 * gnuplot gets a script and data files in a private temporary folder; the
 * picture is written under a temporary name and renamed onto --out only
 * when gnuplot succeeded. Logs are untrusted text: lines are length
 * limited, non-JSON lines are counted and skipped, strings reach gnuplot
 * only inside quoted strings with its quote doubled, and enhanced text
 * (which interprets _ ^ { } @) is off. */
#include "ops.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PLOT_TAG "plot"
#define PLOT_MAX_RUNS 16
#define PLOT_MAX_LINE (1u << 20)
#define PLOT_MAX_POINTS 5000000
#define PLOT_MAX_REASONS 8

extern char **environ;

/* Line colours, one per run (matplotlib's default cycle). */
static const char *PLOT_COLORS[] = {"1f77b4", "d62728", "2ca02c", "ff7f0e", "9467bd",
                                    "8c564b", "e377c2", "7f7f7f", "bcbd22", "17becf"};
#define PLOT_N_COLORS (sizeof PLOT_COLORS / sizeof PLOT_COLORS[0])

typedef struct Series {
    double *x, *y;
    size_t n, cap;
} Series;

typedef struct Run {
    char label[128];
    const char *path;
    /* trainer, by step */
    Series lm, diff, lr, tps, gnorm, hold_lm, hold_diff;
    size_t nan_lm, nan_diff;
    /* ingest, by t: cumulative counters */
    Series rows, bytes, failed;
    Series reason[PLOT_MAX_REASONS];
    char reason_name[PLOT_MAX_REASONS][48];
    int n_reasons;
    size_t bad_lines, lines;
} Run;

static void plot_usage(FILE *out)
{
    fprintf(out,
            "usage: transfuse plot LOG... --out FILE.png [--smooth W] [--size WxH] [--title T]\n"
            "                      [--labels A,B,...]\n\n"
            "Draws trainer logs (`transfuse train --log`: loss curves LM and diffusion, raw\n"
            "and smoothed, with held-out (--val) losses as points; learning rate; tokens/s, all over\n"
            "steps) and ingest progress logs (`transfuse ingest --progress-log`: rows/s and\n"
            "MB/s, and the failure mix by reason, over time) into one PNG with gnuplot.\n"
            "Each LOG is one run; several runs share the panels, one colour each. Lines\n"
            "that are not JSON objects are skipped and counted.\n\n"
            "options:\n"
            "  --out FILE.png   the picture (written under a temporary name, then renamed)\n"
            "  --smooth W       weight of the exponential moving average, in [0, 1)\n"
            "                   (default 0.9; 0 draws the raw curves only)\n"
            "  --size WxH       pixels (default 1600 wide, 420 per row of panels)\n"
            "  --title T        a title over the whole picture\n"
            "  --labels LIST    run names, comma separated (default: the log file names)\n"
            "  -h, --help       this help\n");
}

static int series_add(Series *s, double x, double y)
{
    if (s->n == PLOT_MAX_POINTS)
        return -1;
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 256;
        double *nx = realloc(s->x, nc * sizeof *nx);
        if (!nx)
            return -1;
        s->x = nx;
        double *ny = realloc(s->y, nc * sizeof *ny);
        if (!ny)
            return -1;
        s->y = ny;
        s->cap = nc;
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
    return 0;
}

static void series_free(Series *s)
{
    free(s->x);
    free(s->y);
}

static void run_free(Run *r)
{
    Series *all[] = {&r->lm, &r->diff, &r->lr, &r->tps, &r->gnorm, &r->hold_lm, &r->hold_diff,
                     &r->rows, &r->bytes, &r->failed};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        series_free(all[i]);
    for (int i = 0; i < r->n_reasons; i++)
        series_free(&r->reason[i]);
}

/* A number field: JSON numbers, null (NaN), and the strings "NaN",
 * "Infinity", "-Infinity" that some writers use. present=0 when absent. */
static double field(const json_t *o, const char *k, int *present)
{
    const json_t *v = json_object_get(o, k);
    *present = v != NULL;
    if (json_is_number(v))
        return json_number_value(v);
    const char *s = json_string_value(v);
    if (s && !strcmp(s, "Infinity"))
        return INFINITY;
    if (s && !strcmp(s, "-Infinity"))
        return -INFINITY;
    return NAN;
}

/* A copy of the line with bare NaN / Infinity / -Infinity tokens outside
 * strings (what Python's json writes) replaced by null, so that jansson can
 * read it; NULL when out of memory. */
static char *plot_unbare(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(2 * n + 1), *w = out; /* "NaN" -> "null" is the only growth */
    if (!out)
        return NULL;
    int in_str = 0;
    for (const char *p = s; *p;) {
        if (in_str) {
            if (*p == '\\' && p[1])
                *w++ = *p++;
            else if (*p == '"')
                in_str = 0;
            *w++ = *p++;
            continue;
        }
        if (*p == '"') {
            in_str = 1;
            *w++ = *p++;
            continue;
        }
        static const char *bare[] = {"-Infinity", "Infinity", "NaN"};
        int hit = 0;
        for (int i = 0; i < 3 && !hit; i++) {
            size_t k = strlen(bare[i]);
            if (!strncmp(p, bare[i], k)) {
                memcpy(w, "null", 4);
                w += 4;
                p += k;
                hit = 1;
            }
        }
        if (!hit)
            *w++ = *p++;
    }
    *w = 0;
    return out;
}

static int run_reason(Run *r, const char *name)
{
    for (int i = 0; i < r->n_reasons; i++)
        if (!strcmp(r->reason_name[i], name))
            return i;
    if (r->n_reasons == PLOT_MAX_REASONS)
        return -1;
    snprintf(r->reason_name[r->n_reasons], sizeof r->reason_name[0], "%s", name);
    return r->n_reasons++;
}

static int run_line(Run *r, const json_t *o)
{
    int has_step, has, has_t, has_rows;
    double step = field(o, "step", &has_step);
    double t = field(o, "t", &has_t), rows = field(o, "rows", &has_rows);
    int rc = 0;
    if (has_step && isfinite(step)) {
        double v = field(o, "loss_lm", &has);
        if (has) {
            rc |= series_add(&r->lm, step, v);
            r->nan_lm += !isfinite(v);
        }
        v = field(o, "loss_diffusion", &has);
        if (has) {
            rc |= series_add(&r->diff, step, v);
            r->nan_diff += !isfinite(v);
        }
        v = field(o, "lr", &has);
        if (has)
            rc |= series_add(&r->lr, step, v);
        v = field(o, "tokens_per_s", &has);
        if (has)
            rc |= series_add(&r->tps, step, v);
        v = field(o, "grad_norm", &has);
        if (has)
            rc |= series_add(&r->gnorm, step, v);
        v = field(o, "val_loss_lm", &has);
        if (has)
            rc |= series_add(&r->hold_lm, step, v);
        v = field(o, "val_loss_diffusion", &has);
        if (has)
            rc |= series_add(&r->hold_diff, step, v);
    } else if (has_t && has_rows && isfinite(t)) {
        rc |= series_add(&r->rows, t, rows);
        double v = field(o, "bytes", &has);
        rc |= series_add(&r->bytes, t, has ? v : NAN);
        v = field(o, "failed", &has);
        rc |= series_add(&r->failed, t, has ? v : NAN);
        const json_t *fr = json_object_get(o, "failed_by_reason");
        const char *k;
        const json_t *x;
        json_object_foreach((json_t *)fr, k, x)
        {
            int i = run_reason(r, k);
            if (i < 0)
                i = run_reason(r, "(other)") >= 0 ? run_reason(r, "(other)") : PLOT_MAX_REASONS - 1;
            if (json_is_number(x))
                rc |= series_add(&r->reason[i], t, json_number_value(x));
        }
    } else {
        return 1; /* neither kind */
    }
    return rc ? -1 : 0;
}

static int run_read(Run *r, TfError *err)
{
    FILE *f = fopen(r->path, "r");
    if (!f)
        return tf_fail(err, "%s: %s", r->path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        r->lines++;
        if ((size_t)n > PLOT_MAX_LINE) {
            r->bad_lines++;
            continue;
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        if (!n)
            continue;
        json_error_t je;
        json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &je);
        if (!o) {
            char *fixed = plot_unbare(line);
            o = fixed ? json_loads(fixed, JSON_REJECT_DUPLICATES, &je) : NULL;
            free(fixed);
        }
        if (!json_is_object(o)) {
            r->bad_lines++;
            json_decref(o);
            continue;
        }
        int lr = run_line(r, o);
        json_decref(o);
        if (lr < 0) {
            rc = tf_fail(err, "%s: more than %d points (or out of memory)", r->path, PLOT_MAX_POINTS);
            break;
        }
        r->bad_lines += lr == 1;
    }
    if (!rc && ferror(f))
        rc = tf_fail(err, "%s: read error", r->path);
    free(line);
    fclose(f);
    return rc;
}

/* ---- writing gnuplot's input ---- */

/* A gnuplot single-quoted string: the quote doubled, control characters
 * dropped. */
static void gp_quote(FILE *f, const char *s)
{
    fputc('\'', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\'')
            fputs("''", f);
        else if (*p >= 0x20 && *p != 0x7f)
            fputc(*p, f);
    }
    fputc('\'', f);
}

static void gp_num(FILE *f, double v)
{
    if (isnan(v) || isinf(v))
        fputs("NaN", f);
    else
        fprintf(f, "%.10g", v);
}

/* Writes x, raw y and the debiased EMA of y (weight w; NaN points keep the
 * average unchanged) as three columns. Returns 0 or -1. */
static int write_smoothed(const char *path, const Series *s, double w, TfError *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return tf_fail(err, "%s: %s", path, strerror(errno));
    double ema = 0, wn = 1;
    for (size_t i = 0; i < s->n; i++) {
        double y = s->y[i], sm = NAN;
        if (isfinite(y)) {
            ema = w * ema + (1 - w) * y;
            wn *= w;
            sm = wn < 1 ? ema / (1 - wn) : y;
        } else if (wn < 1) {
            sm = ema / (1 - wn);
        }
        gp_num(f, s->x[i]);
        fputc(' ', f);
        gp_num(f, y);
        fputc(' ', f);
        gp_num(f, sm);
        fputc('\n', f);
    }
    return fclose(f) ? tf_fail(err, "%s: write error", path) : 0;
}

/* Rates of cumulative counters: per line, t, rows/s, MB/s, then per reason
 * failures as a share of the rows finished in that interval. */
static int write_ingest(const char *path, const Run *r, TfError *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return tf_fail(err, "%s: %s", path, strerror(errno));
    /* per reason: how many of its points are at or before the current time,
     * and its cumulative count then (0 before its first mention) */
    size_t pos[PLOT_MAX_REASONS] = {0};
    double prev[PLOT_MAX_REASONS] = {0}, cur[PLOT_MAX_REASONS] = {0};
    for (size_t i = 0; i < r->rows.n; i++) {
        for (int k = 0; k < r->n_reasons; k++) {
            const Series *s = &r->reason[k];
            prev[k] = cur[k];
            while (pos[k] < s->n && s->x[pos[k]] <= r->rows.x[i])
                cur[k] = s->y[pos[k]++];
        }
        if (i == 0)
            continue;
        double dt = r->rows.x[i] - r->rows.x[i - 1];
        double drows = r->rows.y[i] - r->rows.y[i - 1];
        double dbytes = r->bytes.y[i] - r->bytes.y[i - 1];
        if (!(dt > 0) || drows < 0) { /* a restart: break the line */
            fputc('\n', f);
            continue;
        }
        gp_num(f, r->rows.x[i]);
        fputc(' ', f);
        gp_num(f, drows / dt);
        fputc(' ', f);
        gp_num(f, dbytes >= 0 ? dbytes / dt / 1e6 : NAN);
        for (int k = 0; k < r->n_reasons; k++) {
            fputc(' ', f);
            gp_num(f, drows > 0 && cur[k] >= prev[k] ? 100.0 * (cur[k] - prev[k]) / drows : 0);
        }
        fputc('\n', f);
    }
    return fclose(f) ? tf_fail(err, "%s: write error", path) : 0;
}

typedef struct Panel {
    const char *title, *xlabel, *ylabel;
    int kind; /* 0 lm, 1 diff, 2 lr, 3 tps, 4 rows/s + MB/s, 5 failure mix */
} Panel;

static int spawn_gnuplot(const char *script, TfError *err)
{
    char *args[] = {"gnuplot", (char *)script, NULL};
    pid_t pid;
    int e = posix_spawnp(&pid, "gnuplot", NULL, NULL, args, environ);
    if (e)
        return tf_fail(err, "cannot run gnuplot (%s): install Debian's gnuplot-nox", strerror(e));
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return tf_fail(err, "waiting for gnuplot: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status))
        return tf_fail(err, "gnuplot failed (exit %d)", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}

static int plot_draw(Run *runs, int n_runs, const char *out, double smooth, int width, int height,
                     const char *title, TfError *err)
{
    char dir[] = "/tmp/transfuse-plot-XXXXXX";
    const char *tmpdir = getenv("TMPDIR");
    char dirbuf[4096];
    if (tmpdir && *tmpdir && strlen(tmpdir) < 4000) {
        snprintf(dirbuf, sizeof dirbuf, "%s/transfuse-plot-XXXXXX", tmpdir);
    } else {
        snprintf(dirbuf, sizeof dirbuf, "%s", dir);
    }
    if (!mkdtemp(dirbuf))
        return tf_fail(err, "mkdtemp %s: %s", dirbuf, strerror(errno));
    int rc = -1;
    char path[4200], script[4200], tmp_out[4200];
    FILE *gp = NULL;
    int any_train = 0, any_ingest = 0;
    for (int i = 0; i < n_runs; i++) {
        any_train |= runs[i].lm.n || runs[i].diff.n || runs[i].lr.n || runs[i].tps.n;
        any_ingest |= runs[i].rows.n > 1;
    }
    Panel panels[6];
    int np = 0;
    if (any_train) {
        panels[np++] = (Panel){"LM loss (next token)", "step", "loss", 0};
        panels[np++] = (Panel){"diffusion loss", "step", "loss", 1};
        panels[np++] = (Panel){"learning rate", "step", "lr", 2};
        panels[np++] = (Panel){"tokens/s", "step", "tokens/s", 3};
    }
    if (any_ingest) {
        panels[np++] = (Panel){"ingest throughput: rows/s (solid), MB/s (dashed, right axis)", "seconds", "rows/s", 4};
        panels[np++] = (Panel){"ingest failure mix: % of rows failed, by reason", "seconds", "% of rows", 5};
    }
    if (!np) {
        tf_fail(err, "nothing to draw: no trainer lines (step, loss_lm, ...) nor two ingest lines (t, rows, ...)");
        goto done;
    }
    int cols = np > 1 ? 2 : 1, rows = (np + cols - 1) / cols;
    if (!width)
        width = cols == 1 ? 900 : 1600;
    if (!height)
        height = 420 * rows + (title ? 40 : 0);

    /* data files; the largest MB/s sets the right axis (set offsets does
     * not apply to it) */
    double max_mbs = 0;
    for (int i = 0; i < n_runs; i++)
        for (size_t k = 1; k < runs[i].rows.n; k++) {
            double dt = runs[i].rows.x[k] - runs[i].rows.x[k - 1], db = runs[i].bytes.y[k] - runs[i].bytes.y[k - 1];
            if (dt > 0 && db >= 0 && db / dt / 1e6 > max_mbs)
                max_mbs = db / dt / 1e6;
        }
    for (int i = 0; i < n_runs; i++) {
        const Series *s[] = {&runs[i].lm, &runs[i].diff, &runs[i].lr, &runs[i].tps};
        const char *names[] = {"lm", "diff", "lr", "tps"};
        for (int k = 0; k < 4; k++) {
            snprintf(path, sizeof path, "%s/run%d_%s.dat", dirbuf, i, names[k]);
            if (write_smoothed(path, s[k], k < 2 ? smooth : 0, err))
                goto done;
        }
        const Series *h[] = {&runs[i].hold_lm, &runs[i].hold_diff};
        for (int k = 0; k < 2; k++) {
            snprintf(path, sizeof path, "%s/run%d_hold%d.dat", dirbuf, i, k);
            if (write_smoothed(path, h[k], 0, err))
                goto done;
        }
        snprintf(path, sizeof path, "%s/run%d_ingest.dat", dirbuf, i);
        if (write_ingest(path, &runs[i], err))
            goto done;
    }

    snprintf(script, sizeof script, "%s/plot.gp", dirbuf);
    snprintf(tmp_out, sizeof tmp_out, "%s.tmp.%ld", out, (long)getpid());
    gp = fopen(script, "w");
    if (!gp) {
        tf_fail(err, "%s: %s", script, strerror(errno));
        goto done;
    }
    fprintf(gp, "set terminal pngcairo size %d,%d noenhanced font 'DejaVu Sans,10' background '#ffffff'\n", width,
            height);
    fputs("set output ", gp);
    gp_quote(gp, tmp_out);
    fputs("\nset datafile missing 'NaN'\nset grid lc rgb '#dddddd'\nset key top right opaque box lc rgb '#cccccc'\n"
          "set border lc rgb '#555555'\n",
          gp);
    if (title) {
        fprintf(gp, "set multiplot layout %d,%d title ", rows, cols);
        gp_quote(gp, title);
        fputs(" font 'DejaVu Sans,14'\n", gp);
    } else {
        fprintf(gp, "set multiplot layout %d,%d\n", rows, cols);
    }
    for (int p = 0; p < np; p++) {
        const Panel *pn = &panels[p];
        char ptitle[512];
        size_t tl = (size_t)snprintf(ptitle, sizeof ptitle, "%s", pn->title);
        for (int i = 0; i < n_runs && (pn->kind == 0 || pn->kind == 1); i++) {
            size_t nn = pn->kind == 0 ? runs[i].nan_lm : runs[i].nan_diff;
            if (nn && tl < sizeof ptitle)
                tl += (size_t)snprintf(ptitle + tl, sizeof ptitle - tl, "  [%s: %zu non-finite step(s)]",
                                       runs[i].label, nn);
        }
        fputs("set title ", gp);
        gp_quote(gp, ptitle);
        fputs("\nset xlabel ", gp);
        gp_quote(gp, pn->xlabel);
        fputs("\nset ylabel ", gp);
        gp_quote(gp, pn->ylabel);
        fputs("\n", gp);
        fputs(pn->kind == 2 ? "set format y '%.1e'\n" : "set format y '%g'\n", gp);
        if (pn->kind == 4)
            fprintf(gp, "set y2tics\nset y2label 'MB/s'\nset ytics nomirror\nset y2range [0:%g]\n",
                    max_mbs > 0 ? max_mbs * 1.08 : 1.0);
        else
            fputs("unset y2tics\nunset y2label\nset ytics mirror\n", gp);
        /* rates and shares from zero; every curve a little off the frame,
         * so that a flat one is not hidden under the border */
        fputs(pn->kind >= 4 ? "set yrange [0:*]\n" : "set yrange [*:*]\n", gp);
        fputs("set offsets 0, 0, graph 0.06, graph 0.04\n", gp);
        fputs("plot ", gp);
        int first = 1;
        for (int i = 0; i < n_runs; i++) {
            const Run *r = &runs[i];
            const char *col = PLOT_COLORS[i % PLOT_N_COLORS];
            char file[4300];
#define SEP() (first ? (first = 0, "") : ", \\\n     ")
            if (pn->kind <= 3) {
                static const char *names[] = {"lm", "diff", "lr", "tps"};
                const Series *s = pn->kind == 0 ? &r->lm : pn->kind == 1 ? &r->diff : pn->kind == 2 ? &r->lr : &r->tps;
                if (!s->n)
                    continue;
                snprintf(file, sizeof file, "%s/run%d_%s.dat", dirbuf, i, names[pn->kind]);
                int smoothed = pn->kind <= 1 && smooth > 0;
                fputs(SEP(), gp);
                gp_quote(gp, file);
                /* raw: thin and faint when a smoothed curve goes over it */
                fprintf(gp, " using 1:2 with lines lw %s lc rgb '#%s%s' title ", smoothed ? "1" : "2",
                        smoothed ? "A0" : "", col);
                char t[200];
                snprintf(t, sizeof t, "%s%s", r->label, smoothed ? " (raw)" : "");
                gp_quote(gp, t);
                if (smoothed) {
                    fputs(", \\\n     ", gp);
                    gp_quote(gp, file);
                    fprintf(gp, " using 1:3 with lines lw 2.5 lc rgb '#%s' title ", col);
                    snprintf(t, sizeof t, "%s (smoothed %.2f)", r->label, smooth);
                    gp_quote(gp, t);
                }
                const Series *h = pn->kind == 0 ? &r->hold_lm : pn->kind == 1 ? &r->hold_diff : NULL;
                if (h && h->n) {
                    snprintf(file, sizeof file, "%s/run%d_hold%d.dat", dirbuf, i, pn->kind);
                    fputs(", \\\n     ", gp);
                    gp_quote(gp, file);
                    fprintf(gp, " using 1:2 with points pt 7 ps 0.9 lc rgb '#%s' title ", col);
                    snprintf(t, sizeof t, "%s holdout", r->label);
                    gp_quote(gp, t);
                }
            } else {
                if (r->rows.n < 2)
                    continue;
                snprintf(file, sizeof file, "%s/run%d_ingest.dat", dirbuf, i);
                char t[200];
                if (pn->kind == 4) {
                    fputs(SEP(), gp);
                    gp_quote(gp, file);
                    fprintf(gp, " using 1:2 with lines lw 2 lc rgb '#%s' title ", col);
                    snprintf(t, sizeof t, "%s rows/s", r->label);
                    gp_quote(gp, t);
                    fputs(", \\\n     ", gp);
                    gp_quote(gp, file);
                    fprintf(gp, " using 1:3 axes x1y2 with lines lw 1.5 dt 2 lc rgb '#%s' title ", col);
                    snprintf(t, sizeof t, "%s MB/s", r->label);
                    gp_quote(gp, t);
                } else {
                    /* colours by reason, dash pattern by run */
                    for (int k = 0; k < r->n_reasons; k++) {
                        fputs(SEP(), gp);
                        gp_quote(gp, file);
                        fprintf(gp, " using 1:%d with lines lw 2 dt %d lc rgb '#%s' title ", 4 + k, 1 + i % 5,
                                PLOT_COLORS[k % PLOT_N_COLORS]);
                        snprintf(t, sizeof t, "%s%s%s", n_runs > 1 ? r->label : "", n_runs > 1 ? ": " : "",
                                 r->reason_name[k]);
                        gp_quote(gp, t);
                    }
                }
            }
#undef SEP
        }
        if (first) /* nothing for this panel in any run: an empty frame that says so */
            fputs("NaN notitle\nset label 1 'no data' at graph 0.5,0.5 center\n", gp);
        else
            fputs("\n", gp);
        fputs("unset label 1\n", gp);
    }
    fputs("unset multiplot\nset output\n", gp);
    if (fclose(gp)) {
        gp = NULL;
        tf_fail(err, "%s: write error", script);
        goto done;
    }
    gp = NULL;
    if (spawn_gnuplot(script, err))
        goto done;
    struct stat st;
    if (stat(tmp_out, &st) || st.st_size == 0) {
        tf_fail(err, "gnuplot wrote no picture");
        goto done;
    }
    if (rename(tmp_out, out)) {
        tf_fail(err, "rename %s -> %s: %s", tmp_out, out, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    if (gp)
        fclose(gp);
    if (rc)
        unlink(tmp_out);
    /* the private folder and its files */
    char cmdpath[4300];
    for (int i = 0; i < n_runs; i++) {
        const char *names[] = {"lm", "diff", "lr", "tps", "hold0", "hold1", "ingest"};
        for (int k = 0; k < 7; k++) {
            snprintf(cmdpath, sizeof cmdpath, "%s/run%d_%s.dat", dirbuf, i, names[k]);
            unlink(cmdpath);
        }
    }
    snprintf(cmdpath, sizeof cmdpath, "%s/plot.gp", dirbuf);
    unlink(cmdpath);
    rmdir(dirbuf);
    return rc;
}

int plot_main(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'},      {"out", required_argument, NULL, 'o'},
                                         {"smooth", required_argument, NULL, 's'}, {"size", required_argument, NULL, 'S'},
                                         {"title", required_argument, NULL, 't'}, {"labels", required_argument, NULL, 'l'},
                                         {NULL, 0, NULL, 0}};
    const char *out = NULL, *title = NULL, *labels = NULL;
    double smooth = 0.9;
    int width = 0, height = 0;
    TfError err = {{0}};
    TfOpts o = {.prog = "transfuse plot", .argc = argc, .argv = argv, .shortopts = "ho:", .longopts = opts};
    int c;
    while ((c = tf_opts_next(&o)) != -1) {
        const char *v = o.arg;
        switch (c) {
        case 'h': plot_usage(stdout); return TF_EXIT_OK;
        case 'o': out = v; break;
        case 's': {
            char *end;
            errno = 0;
            smooth = strtod(v, &end);
            if (end == v || *end || errno || !(smooth >= 0 && smooth < 1)) {
                tf_fail(&err, "--smooth: expected a weight in [0, 1), got '%s'", v);
                goto usage;
            }
            break;
        }
        case 'S':
            if (sscanf(v, "%dx%d", &width, &height) != 2 || width < 200 || height < 150 || width > 10000 ||
                height > 10000) {
                tf_fail(&err, "--size: expected WxH between 200x150 and 10000x10000, got '%s'", v);
                goto usage;
            }
            break;
        case 't': title = v; break;
        case 'l': labels = v; break;
        default: return TF_EXIT_USAGE;
        }
    }
    int n_runs = argc - o.first_operand;
    if (!out) {
        tf_fail(&err, "--out FILE.png is required");
        goto usage;
    }
    if (n_runs < 1) {
        tf_fail(&err, "give at least one LOG");
        goto usage;
    }
    if (n_runs > PLOT_MAX_RUNS) {
        tf_fail(&err, "at most %d logs on one plot", PLOT_MAX_RUNS);
        goto usage;
    }
    Run *runs = calloc((size_t)n_runs, sizeof *runs);
    if (!runs) {
        fprintf(stderr, "transfuse plot: out of memory\n");
        return TF_EXIT_FAIL;
    }
    const char *lp = labels;
    for (int i = 0; i < n_runs; i++) {
        Run *r = &runs[i];
        r->path = argv[o.first_operand + i];
        if (lp && *lp) {
            size_t n = strcspn(lp, ",");
            snprintf(r->label, sizeof r->label, "%.*s", (int)n, lp);
            lp += n + (lp[n] == ',');
        } else {
            const char *base = strrchr(r->path, '/');
            base = base ? base + 1 : r->path;
            snprintf(r->label, sizeof r->label, "%s", base);
            char *dot = strrchr(r->label, '.');
            if (dot && dot != r->label)
                *dot = 0;
        }
    }
    int rc = TF_EXIT_FAIL;
    for (int i = 0; i < n_runs; i++) {
        if (run_read(&runs[i], &err)) {
            fprintf(stderr, "transfuse plot: %s\n", err.msg);
            goto done;
        }
        if (runs[i].bad_lines)
            tf_log(TF_LOG_WARN, PLOT_TAG, "%s: %zu of %zu line(s) skipped (not a trainer or ingest JSON object)",
                   runs[i].path, runs[i].bad_lines, runs[i].lines);
    }
    if (plot_draw(runs, n_runs, out, smooth, width, height, title, &err)) {
        fprintf(stderr, "transfuse plot: %s\n", err.msg);
        goto done;
    }
    tf_log(TF_LOG_INFO, PLOT_TAG, "wrote %s (%d run(s))", out, n_runs);
    rc = TF_EXIT_OK;
done:
    for (int i = 0; i < n_runs; i++)
        run_free(&runs[i]);
    free(runs);
    return rc;
usage:
    fprintf(stderr, "transfuse plot: %s (see transfuse plot --help)\n", err.msg);
    return TF_EXIT_USAGE;
}
