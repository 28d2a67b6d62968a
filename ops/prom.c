/* prom.c: a parser of Prometheus' text exposition format (version 0.0.4)
 * for bytes from endpoints we do not trust. It is strict where Prometheus
 * is strict (a bad line fails the whole document, as a failed scrape) and
 * bounded everywhere: document size, line length, series, labels per
 * series and name length are limits, no input makes it allocate more than a
 * small multiple of the document, and nothing is quadratic.
 *
 * The document is copied once and parsed in place: names and unescaped
 * label values are NUL-terminated spans of that copy. */
#include "ops.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct PromFamily {
    const char *name;
    PromType type;
} PromFamily;

struct PromDoc {
    char *text;
    PromSample *samples;
    size_t *first_label;  /* per sample: index of its first label (pointers are set at the end) */
    size_t n_samples, cap_samples, cap_first;
    PromLabel *labels;
    size_t n_labels, cap_labels;
    PromFamily *families;
    size_t n_families, cap_families;
};

void prom_limits_init(PromLimits *lim)
{
    lim->max_bytes = PROM_DEFAULT_MAX_BYTES;
    lim->max_line = 64 * 1024;
    lim->max_samples = 200000;
    lim->max_labels = 64;
    lim->max_name = 512;
}

/* Grows *arr (elements of `size` bytes) to hold at least need; returns -1
 * on overflow or out of memory (the array is unchanged then). */
static int grow(void **arr, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) {
        if (nc > SIZE_MAX / 2)
            return -1;
        nc *= 2;
    }
    if (nc > SIZE_MAX / size)
        return -1;
    void *p = realloc(*arr, nc * size);
    if (!p)
        return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

static int is_name_start(int c, int colon)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
}

static int is_name_char(int c, int colon)
{
    return is_name_start(c, colon) || (c >= '0' && c <= '9');
}

static int is_blank(int c)
{
    return c == ' ' || c == '\t';
}

/* 1 when s[0..n) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1, min = 0x80, c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, min = 0x800, c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, min = 0x10000, c &= 0x07;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            c = (c << 6) | (s[i + j] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

static int ascii_ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        int x = *a >= 'A' && *a <= 'Z' ? *a + 32 : *a;
        if (x != *b)
            return 0;
    }
    return *a == *b;
}

/* Parses a sample value as Go's ParseFloat does for the forms exporters
 * write: decimal with optional exponent, NaN, [+-]Inf(inity), any case. */
static int parse_value(const char *tok, size_t n, double *out)
{
    char buf[72];
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, tok, n);
    buf[n] = 0;
    const char *b = buf;
    int neg = 0;
    if (*b == '+' || *b == '-')
        neg = *b++ == '-';
    if (ascii_ieq(b, "inf") || ascii_ieq(b, "infinity")) {
        *out = neg ? -INFINITY : INFINITY;
        return 0;
    }
    if (ascii_ieq(buf, "nan")) {
        *out = NAN;
        return 0;
    }
    int digits = 0;
    for (const char *p = buf; *p; p++) {
        if (*p >= '0' && *p <= '9')
            digits = 1;
        else if (!(*p == '.' || *p == 'e' || *p == 'E' || *p == '+' || *p == '-'))
            return -1;
    }
    if (!digits)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (*end || end == buf)
        return -1;
    /* Overflow gives +-HUGE_VAL with ERANGE: Go's ParseFloat also answers
     * +-Inf (with an error Prometheus reports); treat it as malformed. */
    if (errno == ERANGE && isinf(v))
        return -1;
    *out = v;
    return 0;
}

static int parse_timestamp(const char *tok, size_t n, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (n && tok[0] == '-')
        neg = 1, i = 1;
    if (i == n || n - i > 18)
        return -1;
    int64_t v = 0;
    for (; i < n; i++) {
        if (tok[i] < '0' || tok[i] > '9')
            return -1;
        v = v * 10 + (tok[i] - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

typedef struct Span {
    char *p;
    size_t n;
} Span;

/* Fills err with "line N: <message>" and returns -1. */
static int line_fail(TfError *err, size_t lineno, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int line_fail(TfError *err, size_t lineno, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tf_fail(err, "line %zu: %s", lineno, msg);
}
#define LINE_FAIL(...) line_fail(err, lineno, __VA_ARGS__)

/* One sample line [p, end). Spans are NUL-terminated only once the whole
 * line parsed, so that no terminator overwrites a byte still to be read. */
static int parse_sample(PromDoc *d, char *p, char *end, size_t lineno, const PromLimits *lim, TfError *err)
{
    Span name = {p, 0};
    while (p < end && is_name_char((unsigned char)*p, 1))
        p++;
    name.n = (size_t)(p - name.p);
    if (name.n > lim->max_name)
        return LINE_FAIL("metric name longer than %zu bytes", lim->max_name);
    size_t first_label = d->n_labels;
    Span ends[2 * 64 + 1];  /* every span to terminate: name, then label name/value pairs */
    size_t n_ends = 0;
    ends[n_ends++] = name;
    int braces = 0;
    if (p < end && *p == '{') {
        braces = 1;
        p++;
        for (;;) {
            while (p < end && is_blank((unsigned char)*p))
                p++;
            if (p < end && *p == '}') {
                p++;
                break;
            }
            if (p >= end || !is_name_start((unsigned char)*p, 0))
                return LINE_FAIL("expected a label name or '}'");
            Span ln = {p, 0};
            while (p < end && is_name_char((unsigned char)*p, 0))
                p++;
            ln.n = (size_t)(p - ln.p);
            if (ln.n > lim->max_name)
                return LINE_FAIL("label name longer than %zu bytes", lim->max_name);
            while (p < end && is_blank((unsigned char)*p))
                p++;
            if (p >= end || *p != '=')
                return LINE_FAIL("expected '=' after label name");
            p++;
            while (p < end && is_blank((unsigned char)*p))
                p++;
            if (p >= end || *p != '"')
                return LINE_FAIL("expected '\"' to open a label value");
            p++;
            /* Unescape in place: the output never runs ahead of the input. */
            Span lv = {p, 0};
            char *w = p;
            for (;;) {
                if (p >= end)
                    return LINE_FAIL("label value not closed");
                char c = *p++;
                if (c == '"')
                    break;
                if (c == '\\') {
                    if (p >= end)
                        return LINE_FAIL("label value not closed");
                    char e = *p++;
                    if (e == '\\' || e == '"')
                        c = e;
                    else if (e == 'n')
                        c = '\n';
                    else
                        return LINE_FAIL("invalid escape '\\%c' in a label value", e);
                }
                *w++ = c;
            }
            lv.n = (size_t)(w - lv.p);
            if (!utf8_valid((const unsigned char *)lv.p, lv.n))
                return LINE_FAIL("label value is not valid UTF-8");
            size_t nl = d->n_labels - first_label;
            if (nl >= lim->max_labels || nl >= 64)
                return LINE_FAIL("more than %zu labels", lim->max_labels < 64 ? lim->max_labels : 64);
            for (size_t i = 0; i < nl; i++) {
                const Span *prev = &ends[1 + 2 * i];
                if (prev->n == ln.n && !memcmp(prev->p, ln.p, ln.n))
                    return LINE_FAIL("label %.*s given twice", (int)ln.n, ln.p);
            }
            if (grow((void **)&d->labels, &d->cap_labels, d->n_labels + 1, sizeof *d->labels))
                return LINE_FAIL("out of memory");
            d->n_labels++;
            ends[n_ends++] = ln;
            ends[n_ends++] = lv;
            while (p < end && is_blank((unsigned char)*p))
                p++;
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return LINE_FAIL("expected ',' or '}' after a label value");
        }
    }
    /* After '}' the blank is optional (as in Prometheus' own parser). */
    if (!braces && p < end && !is_blank((unsigned char)*p))
        return LINE_FAIL("invalid character in metric name");
    while (p < end && is_blank((unsigned char)*p))
        p++;
    const char *vt = p;
    while (p < end && !is_blank((unsigned char)*p))
        p++;
    double value;
    if (parse_value(vt, (size_t)(p - vt), &value))
        return LINE_FAIL("invalid sample value '%.*s'", (int)((p - vt) > 40 ? 40 : (p - vt)), vt);
    while (p < end && is_blank((unsigned char)*p))
        p++;
    int64_t ts = 0;
    int has_ts = 0;
    if (p < end) {
        const char *tt = p;
        while (p < end && !is_blank((unsigned char)*p))
            p++;
        if (parse_timestamp(tt, (size_t)(p - tt), &ts))
            return LINE_FAIL("invalid timestamp");
        has_ts = 1;
        while (p < end && is_blank((unsigned char)*p))
            p++;
        if (p < end)
            return LINE_FAIL("unexpected text after the timestamp");
    }
    if (d->n_samples >= lim->max_samples)
        return tf_fail(err, "more than %zu series", lim->max_samples);
    if (grow((void **)&d->samples, &d->cap_samples, d->n_samples + 1, sizeof *d->samples) ||
        grow((void **)&d->first_label, &d->cap_first, d->n_samples + 1, sizeof *d->first_label))
        return LINE_FAIL("out of memory");
    for (size_t i = 0; i < n_ends; i++)
        ends[i].p[ends[i].n] = 0;
    /* labels point into d->labels, which may still move: keep the index
     * now and resolve pointers when the document is complete. */
    d->first_label[d->n_samples] = first_label;
    PromSample *s = &d->samples[d->n_samples++];
    s->name = name.p;
    s->labels = NULL;
    s->n_labels = d->n_labels - first_label;
    for (size_t i = 0; i < s->n_labels; i++) {
        d->labels[first_label + i].name = ends[1 + 2 * i].p;
        d->labels[first_label + i].value = ends[2 + 2 * i].p;
    }
    s->value = value;
    s->timestamp_ms = ts;
    s->has_timestamp = has_ts;
    return 0;
}

static PromType type_parse(const char *s, size_t n)
{
    static const struct {
        const char *name;
        PromType type;
    } types[] = {{"counter", PROM_COUNTER},     {"gauge", PROM_GAUGE},     {"histogram", PROM_HISTOGRAM},
                 {"summary", PROM_SUMMARY},     {"untyped", PROM_UNTYPED}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strlen(types[i].name) == n && !memcmp(types[i].name, s, n))
            return types[i].type;
    return (PromType)-1;
}

/* A comment line [p, end) after the '#'. Only "TYPE" lines carry facts we
 * keep; HELP and others are checked for nothing but their length. */
static int parse_comment(PromDoc *d, char *p, char *end, size_t lineno, const PromLimits *lim, TfError *err)
{
    while (p < end && is_blank((unsigned char)*p))
        p++;
    if ((size_t)(end - p) < 5 || memcmp(p, "TYPE", 4) || !is_blank((unsigned char)p[4]))
        return 0;
    p += 4;
    while (p < end && is_blank((unsigned char)*p))
        p++;
    char *name = p;
    if (p >= end || !is_name_start((unsigned char)*p, 1))
        return LINE_FAIL("TYPE without a metric name");
    while (p < end && is_name_char((unsigned char)*p, 1))
        p++;
    size_t name_n = (size_t)(p - name);
    if (name_n > lim->max_name)
        return LINE_FAIL("metric name longer than %zu bytes", lim->max_name);
    if (p >= end || !is_blank((unsigned char)*p))
        return LINE_FAIL("TYPE without a type");
    while (p < end && is_blank((unsigned char)*p))
        p++;
    const char *t = p;
    while (p < end && !is_blank((unsigned char)*p))
        p++;
    PromType type = type_parse(t, (size_t)(p - t));
    if ((int)type < 0)
        return LINE_FAIL("unknown metric type '%.*s'", (int)((p - t) > 20 ? 20 : (p - t)), t);
    while (p < end && is_blank((unsigned char)*p))
        p++;
    if (p < end)
        return LINE_FAIL("unexpected text after the type");
    if (d->n_families >= lim->max_samples)
        return tf_fail(err, "more than %zu TYPE lines", lim->max_samples);
    if (grow((void **)&d->families, &d->cap_families, d->n_families + 1, sizeof *d->families))
        return LINE_FAIL("out of memory");
    name[name_n] = 0;
    d->families[d->n_families].name = name;
    d->families[d->n_families].type = type;
    d->n_families++;
    return 0;
}

static int family_cmp(const void *a, const void *b)
{
    return strcmp(((const PromFamily *)a)->name, ((const PromFamily *)b)->name);
}

PromDoc *prom_parse(const char *text, size_t len, const PromLimits *limits, TfError *err)
{
    PromLimits lim;
    if (limits)
        lim = *limits;
    else
        prom_limits_init(&lim);
    if (len > lim.max_bytes)
        return tf_fail(err, "%zu bytes is more than the limit of %zu", len, lim.max_bytes), NULL;
    if (len && memchr(text, 0, len))
        return tf_fail(err, "a NUL byte in the text"), NULL;
    PromDoc *d = calloc(1, sizeof *d);
    if (!d || !(d->text = malloc(len + 1))) {
        free(d);
        return tf_fail(err, "out of memory"), NULL;
    }
    if (len)
        memcpy(d->text, text, len);
    d->text[len] = 0;
    char *p = d->text, *doc_end = d->text + len;
    size_t lineno = 0;
    while (p < doc_end) {
        lineno++;
        char *eol = memchr(p, '\n', (size_t)(doc_end - p));
        char *next = eol ? eol + 1 : doc_end;
        char *end = eol ? eol : doc_end;
        if ((size_t)(end - p) > lim.max_line) {
            tf_fail(err, "line %zu: longer than %zu bytes", lineno, lim.max_line);
            goto fail;
        }
        if (end > p && end[-1] == '\r')
            end--;
        *end = 0;
        while (p < end && is_blank((unsigned char)*p))
            p++;
        int rc = 0;
        if (p == end)
            rc = 0;
        else if (*p == '#')
            rc = parse_comment(d, p + 1, end, lineno, &lim, err);
        else if (is_name_start((unsigned char)*p, 1))
            rc = parse_sample(d, p, end, lineno, &lim, err);
        else
            rc = LINE_FAIL("expected a metric name, a comment or a blank line");
        if (rc)
            goto fail;
        p = next;
    }
    for (size_t i = 0; i < d->n_samples; i++)
        d->samples[i].labels = d->samples[i].n_labels ? d->labels + d->first_label[i] : NULL;
    if (d->n_families > 1) {
        qsort(d->families, d->n_families, sizeof *d->families, family_cmp);
        for (size_t i = 1; i < d->n_families; i++)
            if (!strcmp(d->families[i].name, d->families[i - 1].name)) {
                tf_fail(err, "TYPE of %s given twice", d->families[i].name);
                goto fail;
            }
    }
    return d;
fail:
    prom_doc_free(d);
    return NULL;
}

void prom_doc_free(PromDoc *d)
{
    if (!d)
        return;
    free(d->text);
    free(d->samples);
    free(d->first_label);
    free(d->labels);
    free(d->families);
    free(d);
}

size_t prom_doc_count(const PromDoc *d)
{
    return d ? d->n_samples : 0;
}

const PromSample *prom_doc_at(const PromDoc *d, size_t i)
{
    return d && i < d->n_samples ? &d->samples[i] : NULL;
}

PromType prom_doc_type(const PromDoc *d, const char *family)
{
    if (!d || !d->n_families)
        return PROM_UNTYPED;
    PromFamily key = {family, PROM_UNTYPED};
    const PromFamily *f = bsearch(&key, d->families, d->n_families, sizeof *d->families, family_cmp);
    return f ? f->type : PROM_UNTYPED;
}

const char *prom_sample_label(const PromSample *s, const char *name)
{
    for (size_t i = 0; i < s->n_labels; i++)
        if (!strcmp(s->labels[i].name, name))
            return s->labels[i].value;
    return NULL;
}
