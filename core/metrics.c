/* metrics.c: the process-wide metrics registry and its Prometheus text
 * rendering. Families (one name, help, kind) hold series (one label set);
 * lookups go through a mutex, updates are single atomics on the series. */
#include "core.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define METRIC_MAX_LABELS 8

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } MetricKind;

typedef struct Series {
    char *labels;                 /* rendered: a="x",b="y" (no braces), "" for none */
    _Atomic uint64_t value;       /* counter: count; gauge: bits of a double */
    _Atomic uint64_t sum_bits;    /* histogram: bits of the double sum */
    _Atomic uint64_t *buckets;    /* histogram: per-bucket (not cumulative) counts, n_bounds + 1 */
    const double *bounds;         /* histogram: the family's bounds (fixed once created) */
    size_t n_bounds;
} Series;

struct TfCounter { Series s; };
struct TfGauge { Series s; };
struct TfHistogram { Series s; };

typedef struct Family {
    char *name, *help;
    MetricKind kind;
    double *bounds;
    size_t n_bounds;
    Series **series;
    size_t n_series, cap_series;
} Family;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static Family **families;
static size_t n_families, cap_families;

const double TF_SECONDS_BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                     0.5,   1,      2.5,   5,    10,    30,    60};
const size_t TF_SECONDS_BUCKETS_N = sizeof TF_SECONDS_BUCKETS / sizeof TF_SECONDS_BUCKETS[0];

static int name_ok(const char *s, int allow_colon)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        int c = (unsigned char)*p;
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
        if (!alpha && !(p > s && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

/* Appends `v` to a growing string, escaped for a label value. */
static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = (*cap ? *cap * 2 : 256);
        while (nc < *len + n + 1)
            nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb)
            return -1;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

static int append_str(char **buf, size_t *len, size_t *cap, const char *s)
{
    return append(buf, len, cap, s, strlen(s));
}

static int append_escaped(char **buf, size_t *len, size_t *cap, const char *s, int quote)
{
    for (const char *p = s; *p; p++) {
        const char *rep = NULL;
        if (*p == '\\')
            rep = "\\\\";
        else if (*p == '\n')
            rep = "\\n";
        else if (quote && *p == '"')
            rep = "\\\"";
        if (rep ? append_str(buf, len, cap, rep) : append(buf, len, cap, p, 1))
            return -1;
    }
    return 0;
}

/* Renders the NULL-terminated (name, value) pairs of `ap`, or NULL when a
 * name is invalid or out of memory. */
static char *labels_render(va_list ap)
{
    char *out = NULL;
    size_t len = 0, cap = 0;
    if (append(&out, &len, &cap, "", 0))
        return NULL;
    for (int i = 0;; i++) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        if (i == METRIC_MAX_LABELS || !name_ok(k, 0) || !strcmp(k, "le") || !v)
            goto bad;
        if ((i && append_str(&out, &len, &cap, ",")) || append_str(&out, &len, &cap, k) ||
            append_str(&out, &len, &cap, "=\"") || append_escaped(&out, &len, &cap, v, 1) ||
            append_str(&out, &len, &cap, "\""))
            goto bad;
    }
    return out;
bad:
    free(out);
    return NULL;
}

static Family *family_get(const char *name, const char *help, MetricKind kind, const double *bounds, size_t n)
{
    for (size_t i = 0; i < n_families; i++) {
        Family *f = families[i];
        if (strcmp(f->name, name))
            continue;
        if (f->kind != kind || f->n_bounds != n || (n && memcmp(f->bounds, bounds, n * sizeof *bounds)))
            return NULL;
        return f;
    }
    if (n_families == cap_families) {
        size_t nc = cap_families ? cap_families * 2 : 32;
        Family **nf = realloc(families, nc * sizeof *nf);
        if (!nf)
            return NULL;
        families = nf;
        cap_families = nc;
    }
    Family *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->kind = kind;
    if (n) {
        f->bounds = malloc(n * sizeof *bounds);
        if (f->bounds)
            memcpy(f->bounds, bounds, n * sizeof *bounds);
    }
    if (!f->name || !f->help || (n && !f->bounds)) {
        free(f->name);
        free(f->help);
        free(f->bounds);
        free(f);
        return NULL;
    }
    f->n_bounds = n;
    families[n_families++] = f;
    return f;
}

static Series *series_get(const char *name, const char *help, MetricKind kind, const double *bounds, size_t n,
                          va_list ap)
{
    if (!name_ok(name, 1))
        return NULL;
    for (size_t i = 1; i < n; i++)
        if (!(bounds[i] > bounds[i - 1]))
            return NULL;
    char *labels = labels_render(ap);
    if (!labels)
        return NULL;
    Series *found = NULL;
    pthread_mutex_lock(&registry_lock);
    Family *f = family_get(name, help, kind, bounds, n);
    if (!f)
        goto done;
    for (size_t i = 0; i < f->n_series; i++)
        if (!strcmp(f->series[i]->labels, labels)) {
            found = f->series[i];
            goto done;
        }
    if (f->n_series == f->cap_series) {
        size_t nc = f->cap_series ? f->cap_series * 2 : 8;
        Series **ns = realloc(f->series, nc * sizeof *ns);
        if (!ns)
            goto done;
        f->series = ns;
        f->cap_series = nc;
    }
    /* TfCounter etc. are a Series each: allocate the series itself. */
    Series *s = calloc(1, sizeof *s);
    if (!s)
        goto done;
    if (kind == KIND_HISTOGRAM && !(s->buckets = calloc(n + 1, sizeof *s->buckets))) {
        free(s);
        goto done;
    }
    s->labels = labels;
    s->bounds = f->bounds;
    s->n_bounds = f->n_bounds;
    labels = NULL;
    f->series[f->n_series++] = s;
    found = s;
done:
    pthread_mutex_unlock(&registry_lock);
    free(labels);
    return found;
}

TfCounter *tf_counter(const char *name, const char *help, ...)
{
    va_list ap;
    va_start(ap, help);
    Series *s = series_get(name, help, KIND_COUNTER, NULL, 0, ap);
    va_end(ap);
    return (TfCounter *)s;
}

TfGauge *tf_gauge(const char *name, const char *help, ...)
{
    va_list ap;
    va_start(ap, help);
    Series *s = series_get(name, help, KIND_GAUGE, NULL, 0, ap);
    va_end(ap);
    return (TfGauge *)s;
}

TfHistogram *tf_histogram(const char *name, const char *help, const double *bounds, size_t n, ...)
{
    va_list ap;
    va_start(ap, n);
    Series *s = series_get(name, help, KIND_HISTOGRAM, bounds, n, ap);
    va_end(ap);
    return (TfHistogram *)s;
}

static uint64_t dbits(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

static double bitsd(uint64_t b)
{
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

static void atomic_add_double(_Atomic uint64_t *bits, double v)
{
    uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(bits, &old, dbits(bitsd(old) + v), memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

void tf_counter_add(TfCounter *c, uint64_t n)
{
    if (c)
        atomic_fetch_add_explicit(&c->s.value, n, memory_order_relaxed);
}

uint64_t tf_counter_value(const TfCounter *c)
{
    return c ? atomic_load_explicit(&((TfCounter *)c)->s.value, memory_order_relaxed) : 0;
}

void tf_gauge_set(TfGauge *g, double v)
{
    if (g)
        atomic_store_explicit(&g->s.value, dbits(v), memory_order_relaxed);
}

void tf_gauge_add(TfGauge *g, double v)
{
    if (g)
        atomic_add_double(&g->s.value, v);
}

double tf_gauge_value(const TfGauge *g)
{
    return g ? bitsd(atomic_load_explicit(&((TfGauge *)g)->s.value, memory_order_relaxed)) : 0;
}

void tf_histogram_observe(TfHistogram *h, double v)
{
    if (!h || isnan(v))
        return;
    size_t b = 0;
    while (b < h->s.n_bounds && v > h->s.bounds[b])
        b++;
    atomic_add_double(&h->s.sum_bits, v);
    atomic_fetch_add_explicit(&h->s.buckets[b], 1, memory_order_relaxed);
}

static void format_double(char *out, size_t cap, double v)
{
    if (isnan(v))
        snprintf(out, cap, "NaN");
    else if (isinf(v))
        snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
    else
        snprintf(out, cap, "%.17g", v);
}

static int cmp_family(const void *a, const void *b)
{
    return strcmp((*(Family *const *)a)->name, (*(Family *const *)b)->name);
}

static int cmp_series(const void *a, const void *b)
{
    return strcmp((*(Series *const *)a)->labels, (*(Series *const *)b)->labels);
}

/* NAME{labels[,extra]} VALUE\n */
static int render_line(char **buf, size_t *len, size_t *cap, const char *name, const char *suffix,
                       const char *labels, const char *extra, const char *value)
{
    int has = labels[0] || (extra && extra[0]);
    return append_str(buf, len, cap, name) || append_str(buf, len, cap, suffix) ||
           (has && append_str(buf, len, cap, "{")) || append_str(buf, len, cap, labels) ||
           (labels[0] && extra && extra[0] && append_str(buf, len, cap, ",")) ||
           (extra && append_str(buf, len, cap, extra)) || (has && append_str(buf, len, cap, "}")) ||
           append_str(buf, len, cap, " ") || append_str(buf, len, cap, value) || append_str(buf, len, cap, "\n");
}

char *tf_metrics_render(size_t *out_len)
{
    static const char *kind_names[] = {"counter", "gauge", "histogram"};
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int bad = append(&buf, &len, &cap, "", 0);
    pthread_mutex_lock(&registry_lock);
    qsort(families, n_families, sizeof *families, cmp_family);
    for (size_t i = 0; i < n_families && !bad; i++) {
        Family *f = families[i];
        qsort(f->series, f->n_series, sizeof *f->series, cmp_series);
        bad |= append_str(&buf, &len, &cap, "# HELP ") || append_str(&buf, &len, &cap, f->name) ||
               append_str(&buf, &len, &cap, " ") || append_escaped(&buf, &len, &cap, f->help, 0) ||
               append_str(&buf, &len, &cap, "\n# TYPE ") || append_str(&buf, &len, &cap, f->name) ||
               append_str(&buf, &len, &cap, " ") || append_str(&buf, &len, &cap, kind_names[f->kind]) ||
               append_str(&buf, &len, &cap, "\n");
        for (size_t j = 0; j < f->n_series && !bad; j++) {
            Series *s = f->series[j];
            char v[64];
            if (f->kind == KIND_COUNTER) {
                snprintf(v, sizeof v, "%llu", (unsigned long long)atomic_load(&s->value));
                bad |= render_line(&buf, &len, &cap, f->name, "", s->labels, NULL, v);
            } else if (f->kind == KIND_GAUGE) {
                format_double(v, sizeof v, bitsd(atomic_load(&s->value)));
                bad |= render_line(&buf, &len, &cap, f->name, "", s->labels, NULL, v);
            } else {
                /* _count is the bucket total, so +Inf always equals it. */
                uint64_t cum = 0;
                for (size_t b = 0; b <= f->n_bounds && !bad; b++) {
                    cum += atomic_load(&s->buckets[b]);
                    char le[80], bound[48];
                    if (b < f->n_bounds)
                        format_double(bound, sizeof bound, f->bounds[b]);
                    else
                        snprintf(bound, sizeof bound, "+Inf");
                    snprintf(le, sizeof le, "le=\"%s\"", bound);
                    snprintf(v, sizeof v, "%llu", (unsigned long long)cum);
                    bad |= render_line(&buf, &len, &cap, f->name, "_bucket", s->labels, le, v);
                }
                format_double(v, sizeof v, bitsd(atomic_load(&s->sum_bits)));
                bad |= render_line(&buf, &len, &cap, f->name, "_sum", s->labels, NULL, v);
                snprintf(v, sizeof v, "%llu", (unsigned long long)cum);
                bad |= render_line(&buf, &len, &cap, f->name, "_count", s->labels, NULL, v);
            }
        }
    }
    pthread_mutex_unlock(&registry_lock);
    if (bad) {
        free(buf);
        return NULL;
    }
    if (out_len)
        *out_len = len;
    return buf;
}
