/* top_render.c: one frame of `transfuse top` from a snapshot (the JSON of
 * top_collector_snapshot). Every line is built with its display width
 * counted (ASCII one column, a sparkline block one column), cut at the
 * terminal's width, and ended with "erase to end of line"; the frame starts
 * at the cursor's home and ends with "erase below", so writing it in one
 * write(2) replaces the last frame without clearing the screen first (no
 * flash). Strings from endpoints are shown as printable ASCII only: a label
 * value can never move the cursor or change the terminal. */
#include "top_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ESC "\x1b"

typedef struct Frame {
    char *buf;
    size_t cap, len;
    int rows, cols, plain;
    int line;           /* lines written */
    int col;            /* columns used on the current line */
    int overflow;       /* rows ran out */
} Frame;

static void fr_raw(Frame *f, const char *s, size_t n)
{
    if (f->len + n + 1 > f->cap)
        n = f->cap > f->len + 1 ? f->cap - f->len - 1 : 0;
    memcpy(f->buf + f->len, s, n);
    f->len += n;
    f->buf[f->len] = 0;
}

static void fr_attr(Frame *f, const char *esc)
{
    if (!f->plain)
        fr_raw(f, esc, strlen(esc));
}

/* Appends text as printable ASCII, at most `width` columns (padded with
 * blanks to exactly width when pad; -1: as wide as it is), never past the
 * terminal's edge. */
static void fr_text(Frame *f, const char *s, int width, int pad, int right)
{
    char tmp[512];
    int n = 0;
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p && n < (int)sizeof tmp - 1; p++) {
        if (*p >= 0x80) {
            /* one '?' per UTF-8 character, not per byte */
            if ((*p & 0xc0) == 0x80)
                continue;
            tmp[n++] = '?';
        } else {
            tmp[n++] = (*p >= 0x20 && *p < 0x7f) ? (char)*p : '?';
        }
    }
    tmp[n] = 0;
    if (width >= 0 && n > width) {
        if (width >= 2) {
            tmp[width - 1] = '~'; /* cut: say so */
        }
        n = width;
    }
    int padn = pad && width > n ? width - n : 0;
    int room = f->cols - f->col;
    if (room <= 0)
        return;
    if (right) {
        for (int i = 0; i < padn && room > 0; i++, room--, f->col++)
            fr_raw(f, " ", 1);
        padn = 0;
    }
    int take = n < room ? n : room;
    fr_raw(f, tmp, (size_t)take);
    f->col += take;
    room -= take;
    for (int i = 0; i < padn && room > 0; i++, room--, f->col++)
        fr_raw(f, " ", 1);
}

static void fr_left(Frame *f, const char *s, int w)
{
    fr_text(f, s, w, 1, 0);
    fr_text(f, " ", 1, 0, 0);
}

static void fr_right(Frame *f, const char *s, int w)
{
    fr_text(f, s, w, 1, 1);
    fr_text(f, " ", 1, 0, 0);
}

/* Ends the line: erase to its end, then a new line (not after the last
 * row, so that the terminal never scrolls). Returns 0 when there is room
 * for another line. */
static int fr_end(Frame *f)
{
    fr_attr(f, ESC "[0m");
    if (!f->plain)
        fr_raw(f, ESC "[K", 3);
    f->line++;
    f->col = 0;
    if (f->line < f->rows || f->plain)
        fr_raw(f, f->plain ? "\n" : "\r\n", f->plain ? 1 : 2);
    return f->line < f->rows ? 0 : -1;
}

static int fr_full(const Frame *f)
{
    return f->line >= f->rows;
}

/* ---- numbers ---- */

static double num(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* 1234 -> "1.23k"; NaN -> "-". */
static void fmt_si(char *out, size_t cap, double v, const char *unit)
{
    if (!isfinite(v)) {
        snprintf(out, cap, "%s", isnan(v) ? "-" : v > 0 ? "inf" : "-inf");
        return;
    }
    static const char *pre[] = {"", "k", "M", "G", "T", "P"};
    double a = fabs(v);
    int i = 0;
    while (a >= 1000 && i < 5) {
        a /= 1000;
        v /= 1000;
        i++;
    }
    if (i == 0 && a == floor(a) && a < 1e4)
        snprintf(out, cap, "%.0f%s", v, unit);
    else
        snprintf(out, cap, a >= 100 ? "%.0f%s%s" : a >= 10 ? "%.1f%s%s" : "%.2f%s%s", v, pre[i], unit);
}

static void fmt_fixed(char *out, size_t cap, double v, int prec)
{
    if (isnan(v))
        snprintf(out, cap, "-");
    else if (fabs(v) >= 1e5 || (v != 0 && fabs(v) < 1e-3))
        snprintf(out, cap, "%.2e", v);
    else
        snprintf(out, cap, "%.*f", prec, v);
}

static void fmt_duration(char *out, size_t cap, double s)
{
    if (!isfinite(s) || s < 0) {
        snprintf(out, cap, "-");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 86400 * 100)
        snprintf(out, cap, ">99d");
    else if (t >= 86400)
        snprintf(out, cap, "%ldd%02ldh", t / 86400, t % 86400 / 3600);
    else if (t >= 3600)
        snprintf(out, cap, "%ldh%02ldm", t / 3600, t % 3600 / 60);
    else if (t >= 60)
        snprintf(out, cap, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(out, cap, "%lds", t);
}

/* A sparkline of the last `width` points of `hist` (null points blank),
 * scaled from 0 (or the minimum, with from_min) to the maximum. */
static void fr_spark(Frame *f, const json_t *hist, int width, int from_min)
{
    static const char *blocks[] = {"\xe2\x96\x81", "\xe2\x96\x82", "\xe2\x96\x83", "\xe2\x96\x84",
                                   "\xe2\x96\x85", "\xe2\x96\x86", "\xe2\x96\x87", "\xe2\x96\x88"};
    int room = f->cols - f->col;
    if (width > room)
        width = room;
    if (width <= 0 || !json_is_array(hist))
        return;
    size_t n = json_array_size(hist), first = n > (size_t)width ? n - (size_t)width : 0;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = first; i < n; i++) {
        double v = json_number_value(json_array_get(hist, i));
        if (!json_is_number(json_array_get(hist, i)) || !isfinite(v))
            continue;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    if (!from_min && lo > 0)
        lo = 0;
    for (size_t i = first; i < n; i++) {
        const json_t *x = json_array_get(hist, i);
        double v = json_number_value(x);
        if (!json_is_number(x) || !isfinite(v) || !(hi >= lo)) {
            fr_raw(f, json_is_null(x) || !json_is_number(x) ? " " : "!", 1);
        } else {
            int level = hi > lo ? (int)((v - lo) / (hi - lo) * 7.0 + 0.5) : (v != 0 ? 3 : 0);
            level = level < 0 ? 0 : level > 7 ? 7 : level;
            fr_raw(f, f->plain ? &"_.-=+*#@"[level] : blocks[level], f->plain ? 1 : 3);
        }
        f->col++;
    }
}

/* ---- sorting ---- */

static int sort_mode;
static const char *sort_rate_key, *sort_fail_key;

static int row_cmp(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    if (sort_mode == 1 || sort_mode == 2) {
        const char *k = sort_mode == 1 ? sort_rate_key : sort_fail_key;
        double vx = num(x, k), vy = num(y, k);
        vx = isnan(vx) ? -INFINITY : vx;
        vy = isnan(vy) ? -INFINITY : vy;
        if (vx != vy)
            return vx > vy ? -1 : 1;
    }
    int c = strcmp(str(x, "target"), str(y, "target"));
    if (c)
        return c;
    const char *ids[] = {"worker", "rank", "op"};
    for (int i = 0; i < 3; i++) {
        const char *ix = str(x, ids[i]), *iy = str(y, ids[i]);
        char *ex, *ey;
        long nx = strtol(ix, &ex, 10), ny = strtol(iy, &ey, 10);
        if (*ix && *iy && !*ex && !*ey && nx != ny)
            return nx < ny ? -1 : 1;
        if ((c = strcmp(ix, iy)))
            return c;
    }
    return 0;
}

/* The rows of section `key`, sorted; caller frees the array. */
static json_t **sorted(const json_t *snap, const char *key, const char *rate_key, const char *fail_key, int sort,
                       size_t *n)
{
    const json_t *a = json_object_get(snap, key);
    *n = json_array_size(a);
    json_t **v = calloc(*n ? *n : 1, sizeof *v);
    if (!v) {
        *n = 0;
        return NULL;
    }
    for (size_t i = 0; i < *n; i++)
        v[i] = json_array_get(a, i);
    sort_mode = sort;
    sort_rate_key = rate_key;
    sort_fail_key = fail_key;
    qsort(v, *n, sizeof *v, row_cmp);
    return v;
}

const char *top_sort_name(int sort)
{
    return sort == 1 ? "rate" : sort == 2 ? "failures" : "target";
}

/* ---- sections ---- */

static void section_title(Frame *f, const char *title, const char *cols)
{
    fr_attr(f, ESC "[1;7m");
    fr_text(f, title, -1, 0, 0);
    fr_text(f, " ", 1, 0, 0);
    fr_text(f, cols, -1, 0, 0);
    fr_text(f, "", f->cols - f->col, 1, 0);
    fr_end(f);
}

/* "N more" when rows remain but the screen does not. Keeps one line. */
static int section_room(Frame *f, size_t left, int reserve)
{
    if (f->plain)
        return 1;
    if (f->rows - f->line > 1 + reserve)
        return 1;
    char msg[64];
    snprintf(msg, sizeof msg, "  ... %zu more (a taller terminal shows them)", left);
    fr_text(f, msg, -1, 0, 0);
    fr_end(f);
    return 0;
}

static int target_w(const Frame *f)
{
    return f->cols >= 140 ? 24 : f->cols >= 100 ? 20 : 15;
}

static int hist_w(const Frame *f)
{
    int w = f->cols - f->col - 1;
    return w > 60 ? 60 : w;
}

/* One section of rows from snapshot array `key`: sorted, under a title,
 * as many as fit; draw_row writes one row's columns (the caller ends it). */
typedef void (*RowDraw)(Frame *f, const json_t *row);

static void rows_section(Frame *f, const json_t *snap, const char *key, const char *rate_key, const char *fail_key,
                         int sort, const char *name, const char *cols, RowDraw draw_row)
{
    size_t n;
    json_t **rows = sorted(snap, key, rate_key, fail_key, sort, &n);
    if (n && !fr_full(f)) {
        section_title(f, name, cols);
        for (size_t i = 0; i < n && !fr_full(f) && section_room(f, n - i, 0); i++) {
            fr_left(f, str(rows[i], "target"), target_w(f));
            draw_row(f, rows[i]);
            fr_end(f);
        }
    }
    free(rows);
}

static void ingest_section_row(Frame *f, const json_t *r)
{
    char a[64], b[64], c[64];
    fr_left(f, str(r, "worker")[0] ? str(r, "worker") : "-", 6);
    fmt_si(a, sizeof a, num(r, "rows_per_s"), "");
    fr_right(f, a, 8);
    double sr = num(r, "success_rate");
    if (isnan(sr))
        snprintf(a, sizeof a, "-");
    else
        snprintf(a, sizeof a, "%.1f", sr * 100);
    if (!isnan(sr) && sr < 0.9)
        fr_attr(f, ESC "[31m");
    fr_right(f, a, 6);
    fr_attr(f, ESC "[0m");
    fmt_fixed(a, sizeof a, num(r, "bytes_per_s") / 1e6, 2);
    fr_right(f, a, 7);
    fmt_si(a, sizeof a, num(r, "in_flight"), "");
    fr_right(f, a, 5);
    fmt_si(b, sizeof b, num(r, "rows_done"), "");
    fmt_si(c, sizeof c, num(r, "rows_planned"), "");
    snprintf(a, sizeof a, "%s/%s", b, c);
    fr_right(f, a, 13);
    fmt_duration(a, sizeof a, num(r, "eta_s"));
    double idle = num(r, "idle_s");
    if (!json_is_true(json_object_get(r, "fresh")))
        snprintf(a, sizeof a, "no data");
    else if (idle > 30 && !(num(r, "rows_done") >= num(r, "rows_planned")))
        snprintf(a, sizeof a, "STALLED");
    fr_right(f, a, 7);
    /* failures: the reasons of the last interval, or the totals */
    const json_t *fr = json_object_get(r, "failures_per_s");
    int rates = 0;
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)fr, k, v) rates |= json_number_value(v) > 0;
    if (!rates)
        fr = json_object_get(r, "failures");
    char fails[128] = "";
    size_t fl = 0;
    const char *picked[3] = {NULL, NULL, NULL};
    for (int pick = 0; pick < 3; pick++) { /* the three largest */
        const char *best = NULL;
        double bv = 0;
        json_object_foreach((json_t *)fr, k, v)
        {
            double x = json_number_value(v);
            int taken = 0;
            for (int q = 0; q < pick; q++)
                taken |= !strcmp(picked[q], k);
            if (!taken && x > bv) {
                bv = x;
                best = k;
            }
        }
        if (!best)
            break;
        picked[pick] = best;
        fmt_si(a, sizeof a, bv, "");
        fl += (size_t)snprintf(fails + fl, sizeof fails - fl, "%s%s %s", fl ? " " : "", best, a);
        if (fl >= sizeof fails)
            break;
    }
    if (fails[0])
        fr_attr(f, ESC "[33m");
    fr_left(f, fails[0] ? fails : "-", 26);
    fr_attr(f, ESC "[0m");
    fr_spark(f, json_object_get(r, "history"), hist_w(f), 0);
}

static void ingest_section(Frame *f, const json_t *snap, int sort)
{
    char title[256];
    snprintf(title, sizeof title, "%-*s %-6s %8s %6s %7s %5s %13s %7s %-26s %s", target_w(f) - 7, "", "WORKER",
             "ROWS/S", "OK%", "MB/S", "INFL", "DONE/PLANNED", "ETA", "FAILURES (/s, or total)", "ROWS/S HISTORY");
    rows_section(f, snap, "ingest", "rows_per_s", "failed_per_s", sort, "INGEST ", title, ingest_section_row);
}

static void encode_section_row(Frame *f, const json_t *r)
{
    char a[64];
    fr_left(f, str(r, "worker")[0] ? str(r, "worker") : "-", 6);
    fmt_fixed(a, sizeof a, num(r, "images_per_s"), 2);
    fr_right(f, a, 8);
    fmt_si(a, sizeof a, num(r, "images_total"), "");
    fr_right(f, a, 9);
    fmt_fixed(a, sizeof a, num(r, "batch_seconds_mean"), 3);
    fr_right(f, a, 8);
    fr_right(f, !json_is_true(json_object_get(r, "fresh")) ? "no data" : num(r, "idle_s") > 30 ? "STALLED" : "", 7);
    fr_spark(f, json_object_get(r, "history"), hist_w(f), 0);
}

static void encode_section(Frame *f, const json_t *snap, int sort)
{
    char title[256];
    snprintf(title, sizeof title, "%-*s %-6s %8s %9s %8s %7s %s", target_w(f) - 7, "", "WORKER", "IMG/S", "IMAGES",
             "BATCH_S", "", "IMG/S HISTORY");
    rows_section(f, snap, "encode", "images_per_s", "images_per_s", sort, "ENCODE ", title, encode_section_row);
}

static void trainer_section_row(Frame *f, const json_t *r)
{
    char a[64], b[64], c[64];
    fr_left(f, str(r, "rank"), 4);
    fmt_si(b, sizeof b, num(r, "step"), "");
    fmt_si(c, sizeof c, num(r, "steps_planned"), "");
    snprintf(a, sizeof a, "%s/%s", b, c);
    fr_right(f, a, 13);
    int bad = json_is_true(json_object_get(r, "loss_nan"));
    if (bad)
        fr_attr(f, ESC "[1;31m");
    const json_t *l = json_object_get(r, "loss_lm");
    fmt_fixed(a, sizeof a, json_is_number(l) ? json_number_value(l) : NAN, 4);
    fr_right(f, bad && !json_is_number(l) ? "NaN" : a, 8);
    l = json_object_get(r, "loss_diffusion");
    fmt_fixed(a, sizeof a, json_is_number(l) ? json_number_value(l) : NAN, 4);
    fr_right(f, bad && !json_is_number(l) ? "NaN" : a, 8);
    fr_attr(f, ESC "[0m");
    fmt_si(a, sizeof a, num(r, "tokens_per_s"), "");
    fr_right(f, a, 7);
    fmt_si(a, sizeof a, num(r, "samples_per_s"), "");
    fr_right(f, a, 7);
    fmt_fixed(a, sizeof a, num(r, "grad_norm"), 3);
    fr_right(f, a, 8);
    fmt_fixed(a, sizeof a, num(r, "lr"), 6);
    fr_right(f, a, 8);
    fmt_si(a, sizeof a, num(r, "data_position"), "");
    fr_right(f, a, 8);
    double behind = num(r, "behind_steps");
    fmt_si(a, sizeof a, behind, "");
    if (behind > 0)
        fr_attr(f, ESC "[33m");
    fr_right(f, a, 6);
    fr_attr(f, ESC "[0m");
    fmt_duration(a, sizeof a, num(r, "eta_s"));
    if (!json_is_true(json_object_get(r, "fresh")))
        snprintf(a, sizeof a, "no data");
    fr_right(f, a, 7);
    fr_spark(f, json_object_get(r, "history"), hist_w(f), 1);
}

static void trainer_section(Frame *f, const json_t *snap, int sort)
{
    char title[256];
    snprintf(title, sizeof title, "%-*s %-4s %13s %8s %8s %7s %7s %8s %8s %8s %6s %7s %s", target_w(f) - 8, "",
             "RANK", "STEP/PLANNED", "LOSS_LM", "LOSS_DIF", "TOK/S", "SMP/S", "GNORM", "LR", "DATA_POS", "BEHIND",
             "ETA", "LOSS_LM HISTORY");
    rows_section(f, snap, "trainer", "tokens_per_s", "behind_steps", sort, "TRAINER ", title, trainer_section_row);
}

static void shards_section_row(Frame *f, const json_t *r)
{
    char a[64];
    fr_left(f, str(r, "op"), 8);
    fmt_si(a, sizeof a, num(r, "records_per_s"), "");
    fr_right(f, a, 8);
    fmt_fixed(a, sizeof a, num(r, "bytes_per_s") / 1e6, 2);
    fr_right(f, a, 7);
    fmt_si(a, sizeof a, num(r, "records_total"), "");
    fr_right(f, a, 9);
    fmt_si(a, sizeof a, num(r, "bad_records_total"), "");
    fr_right(f, a, 6);
    fr_spark(f, json_object_get(r, "history"), hist_w(f), 0);
}

static void shards_section(Frame *f, const json_t *snap, int sort)
{
    char title[256];
    snprintf(title, sizeof title, "%-*s %-8s %8s %7s %9s %6s %s", target_w(f) - 7, "", "OP", "REC/S", "MB/S", "RECORDS",
             "BAD", "REC/S HISTORY");
    rows_section(f, snap, "shards", "records_per_s", "bad_records_total", sort, "SHARDS ", title, shards_section_row);
}

static void kafka_section(Frame *f, const json_t *snap)
{
    const json_t *topics = json_object_get(snap, "topics");
    if (!json_array_size(topics) || fr_full(f))
        return;
    char title[256];
    snprintf(title, sizeof title, "%-*s %-14s %5s %10s %10s %9s %9s %s", target_w(f) - 6, "", "GROUP", "PARTS", "HIGH",
             "COMMITTED", "LAG", "LAG/S", "LAG HISTORY");
    section_title(f, "KAFKA ", title);
    size_t i;
    const json_t *tp;
    json_array_foreach((json_t *)topics, i, tp)
    {
        if (fr_full(f) || !section_room(f, json_array_size(topics) - i, 0))
            break;
        char a[64];
        const json_t *groups = json_object_get(tp, "groups");
        size_t ng = json_array_size(groups);
        const json_t *parts = json_object_get(tp, "partitions");
        fr_left(f, str(tp, "topic"), target_w(f));
        if (json_object_get(tp, "error")) {
            fr_attr(f, ESC "[31m");
            fr_text(f, "error: ", -1, 0, 0);
            fr_text(f, str(tp, "error"), f->cols - f->col, 0, 0);
            fr_end(f);
            continue;
        }
        fr_left(f, ng ? "" : "(no group: --group)", 14);
        snprintf(a, sizeof a, "%zu", json_array_size(parts));
        fr_right(f, a, 5);
        fmt_si(a, sizeof a, num(tp, "high_total"), "");
        fr_right(f, a, 10);
        fr_end(f);
        size_t g;
        const json_t *gr;
        json_array_foreach((json_t *)groups, g, gr)
        {
            if (fr_full(f))
                break;
            fr_left(f, "", target_w(f));
            fr_left(f, str(gr, "group"), 14);
            fr_right(f, "", 5);
            fr_right(f, "", 10);
            if (json_object_get(gr, "error")) {
                fr_attr(f, ESC "[31m");
                fr_text(f, str(gr, "error"), f->cols - f->col, 0, 0);
                fr_end(f);
                continue;
            }
            fmt_si(a, sizeof a, num(gr, "committed_total"), "");
            fr_right(f, a, 10);
            fmt_si(a, sizeof a, num(gr, "lag"), "");
            fr_right(f, a, 9);
            double trend = num(gr, "lag_trend_per_s");
            fmt_si(a, sizeof a, trend, "");
            if (trend > 0)
                fr_attr(f, ESC "[33m");
            fr_right(f, isnan(trend) ? "-" : a, 9);
            fr_attr(f, ESC "[0m");
            fr_spark(f, json_object_get(gr, "history"), hist_w(f), 0);
            fr_end(f);
            /* per partition, while there is room (always in plain output) */
            size_t p;
            const json_t *pp;
            const json_t *gp = json_object_get(gr, "partitions");
            json_array_foreach((json_t *)gp, p, pp)
            {
                if (fr_full(f) || (!f->plain && f->rows - f->line <= 4))
                    break;
                char name[32];
                snprintf(name, sizeof name, "  p%d", (int)num(pp, "partition"));
                fr_left(f, "", target_w(f));
                fr_left(f, name, 14);
                fr_right(f, "", 5);
                const json_t *tpp = json_array_get(parts, p);
                fmt_si(a, sizeof a, num(tpp, "high"), "");
                fr_right(f, a, 10);
                double off = num(pp, "committed");
                fmt_si(a, sizeof a, off, "");
                fr_right(f, off < 0 ? "none" : a, 10);
                fmt_si(a, sizeof a, num(pp, "lag"), "");
                fr_right(f, a, 9);
                fr_end(f);
            }
        }
    }
}

static void targets_section(Frame *f, const json_t *snap)
{
    const json_t *targets = json_object_get(snap, "targets");
    if (!json_array_size(targets) || fr_full(f))
        return;
    char title[256];
    snprintf(title, sizeof title, "%-*s %-10s %-8s %-8s %7s %7s %s", target_w(f) - 8, "", "COMMAND", "SOURCE",
             "STATE", "SERIES", "MS", "ERROR");
    section_title(f, "TARGETS ", title);
    size_t i;
    const json_t *t;
    json_array_foreach((json_t *)targets, i, t)
    {
        if (fr_full(f) || !section_room(f, json_array_size(targets) - i, 0))
            break;
        char a[64];
        fr_left(f, str(t, "target"), target_w(f));
        fr_left(f, str(t, "command")[0] ? str(t, "command") : "-", 10);
        fr_left(f, str(t, "source"), 8);
        const char *state = str(t, "state");
        int bad = strcmp(state, "ok") && strcmp(state, "waiting");
        if (bad)
            fr_attr(f, ESC "[1;31m");
        fr_left(f, state, 8);
        fr_attr(f, ESC "[0m");
        snprintf(a, sizeof a, "%.0f", num(t, "series"));
        fr_right(f, a, 7);
        snprintf(a, sizeof a, "%.0f", num(t, "scrape_s") * 1000);
        fr_right(f, a, 7);
        if (bad)
            fr_attr(f, ESC "[31m");
        fr_text(f, str(t, "error"), f->cols - f->col, 0, 0);
        fr_end(f);
    }
}

size_t top_render(const json_t *snap, int rows, int cols, int sort, int paused, char *buf, size_t cap)
{
    Frame fr = {.buf = buf, .cap = cap, .rows = rows > 0 ? rows : 1000000, .cols = cols > 0 ? cols : 80,
                .plain = rows <= 0};
    Frame *f = &fr;
    if (!cap)
        return 0;
    buf[0] = 0;
    if (!f->plain)
        fr_raw(f, ESC "[H", 3);
    /* header */
    char line[512], clock[32], a[64], b[64];
    time_t now = (time_t)num(snap, "time");
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(clock, sizeof clock, "%H:%M:%S", &tm);
    const json_t *totals = json_object_get(snap, "totals");
    snprintf(line, sizeof line, "transfuse top  %s  %.0f target(s), %.0f failing  round %.0f  sort: %s  ", clock,
             num(totals, "targets"), num(totals, "targets_failing"), num(snap, "rounds"), top_sort_name(sort));
    fr_attr(f, ESC "[1m");
    fr_text(f, line, -1, 0, 0);
    fr_attr(f, ESC "[0m");
    if (!f->plain)
        fr_text(f, "q quit  s sort  p pause  ", -1, 0, 0);
    if (paused) {
        fr_attr(f, ESC "[7m");
        fr_text(f, " PAUSED ", -1, 0, 0);
    }
    fr_end(f);
    /* totals */
    size_t l = 0;
    double v;
    if (isfinite(v = num(totals, "ingest_rows_per_s"))) {
        fmt_si(a, sizeof a, v, "");
        fmt_duration(b, sizeof b, num(totals, "ingest_eta_s"));
        l += (size_t)snprintf(line + l, sizeof line - l, "ingest %s rows/s %.2f MB/s ETA %s   ", a,
                              num(totals, "ingest_bytes_per_s") / 1e6, b);
    }
    if (isfinite(v = num(totals, "encode_images_per_s")) && l < sizeof line)
        l += (size_t)snprintf(line + l, sizeof line - l, "encode %.2f img/s   ", v);
    if (isfinite(v = num(totals, "train_tokens_per_s")) && l < sizeof line) {
        fmt_si(a, sizeof a, v, "");
        l += (size_t)snprintf(line + l, sizeof line - l, "train %s tok/s   ", a);
    }
    if (isfinite(v = num(totals, "shards_records_per_s")) && l < sizeof line) {
        fmt_si(a, sizeof a, v, "");
        l += (size_t)snprintf(line + l, sizeof line - l, "shards %s rec/s   ", a);
    }
    if (isfinite(v = num(totals, "kafka_lag")) && l < sizeof line) {
        fmt_si(a, sizeof a, v, "");
        l += (size_t)snprintf(line + l, sizeof line - l, "kafka lag %s", a);
    }
    const json_t *disc = json_object_get(snap, "discover");
    if (disc && json_object_get(disc, "error") && l < sizeof line)
        snprintf(line + l, sizeof line - l, "   discover: %s", str(disc, "error"));
    fr_text(f, l ? line : "(waiting for the first answers)", -1, 0, 0);
    fr_end(f);
    ingest_section(f, snap, sort);
    encode_section(f, snap, sort);
    trainer_section(f, snap, sort);
    shards_section(f, snap, sort);
    kafka_section(f, snap);
    targets_section(f, snap);
    if (!f->plain) {
        fr_attr(f, ESC "[0m");
        fr_raw(f, ESC "[J", 3);
    }
    return fr.len;
}
