/* manifest.c: reading TSV, CSV and JSON-lines manifests into rows. */
#include "ingest.h"

#include <stdlib.h>
#include <string.h>

#define MANIFEST_MAX_BYTES ((size_t)4 << 30)

typedef struct Fields {
    char **v;
    size_t n, cap;
} Fields;

static int fields_push(Fields *f, const char *s, size_t len)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        char **g = realloc(f->v, cap * sizeof *g);
        if (!g)
            return -1;
        f->v = g;
        f->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, s, len);
    copy[len] = 0;
    f->v[f->n++] = copy;
    return 0;
}

static void fields_clear(Fields *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->v[i]);
    f->n = 0;
}

/* Appends one byte to a growing buffer. Returns -1 when out of memory. */
static int byte_push(char **buf, size_t *len, size_t *cap, char c)
{
    if (*len + 1 >= *cap) {
        size_t ncap = *cap ? *cap * 2 : 256;
        char *g = realloc(*buf, ncap);
        if (!g)
            return -1;
        *buf = g;
        *cap = ncap;
    }
    (*buf)[(*len)++] = c;
    return 0;
}

/* Splits one record starting at *p (CSV with RFC 4180 quotes, or TSV with
 * none), advancing *p past its line end. Counts lines into *line. Returns
 * 0, or -1 with err on an unterminated quote or out of memory. */
static int split_record(const char **p, const char *end, int csv, Fields *out, uint64_t *line, TfError *err)
{
    const char *s = *p;
    char *buf = NULL;
    size_t blen = 0, bcap = 0;
    char sep = csv ? ',' : '\t';
    uint64_t start_line = *line;
    for (;;) {
        blen = 0;
        if (csv && s < end && *s == '"') {
            s++;
            for (;;) {
                if (s >= end) {
                    free(buf);
                    return tf_fail(err, "line %llu: unterminated quoted field", (unsigned long long)start_line);
                }
                if (*s == '"') {
                    if (s + 1 < end && s[1] == '"') {
                        s++;
                    } else {
                        s++;
                        break;
                    }
                }
                if (*s == '\n')
                    (*line)++;
                if (byte_push(&buf, &blen, &bcap, *s++)) {
                    free(buf);
                    return tf_fail(err, "out of memory");
                }
            }
            /* anything up to the separator after a closing quote is kept */
            while (s < end && *s != sep && *s != '\n' && *s != '\r') {
                if (byte_push(&buf, &blen, &bcap, *s++)) {
                    free(buf);
                    return tf_fail(err, "out of memory");
                }
            }
            if (fields_push(out, buf ? buf : "", blen)) {
                free(buf);
                return tf_fail(err, "out of memory");
            }
        } else {
            const char *f = s;
            while (s < end && *s != sep && *s != '\n' && *s != '\r')
                s++;
            if (fields_push(out, f, (size_t)(s - f))) {
                free(buf);
                return tf_fail(err, "out of memory");
            }
        }
        if (s < end && *s == sep) {
            s++;
            continue;
        }
        break;
    }
    if (s < end && *s == '\r')
        s++;
    if (s < end && *s == '\n')
        s++;
    (*line)++;
    *p = s;
    free(buf);
    return 0;
}

void ingest_manifest_free(IngestManifest *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_rows; i++) {
        IngestRow *r = &m->rows[i];
        free(r->image);
        free(r->caption);
        free(r->key);
        for (size_t k = 0; k < r->n_extra; k++) {
            free(r->extra_names[k]);
            free(r->extra_values[k]);
        }
        free(r->extra_names);
        free(r->extra_values);
    }
    free(m->rows);
    free(m);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Resolves a relative local path against the manifest's folder. */
static char *resolve_image(const char *image, const char *base_dir)
{
    if (image[0] == '/' || strstr(image, "://") || !base_dir[0])
        return strdup(image);
    size_t n = strlen(base_dir) + strlen(image) + 2;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s/%s", base_dir, image);
    return out;
}

/* The default key of a row: the first 24 hex digits of SHA-256 over the
 * row's line number and its image and caption values as written (before
 * path resolution), NUL-separated. The line makes two equal rows two
 * samples (the same URL with two captions is common in web data); the
 * values make a row whose content changed a new sample. The same manifest
 * gives the same keys on every run and machine, and a job that knows its
 * first line (issue 10's plan) can derive them from its slice alone. */
static char *derive_key(uint64_t line, const char *image, const char *caption)
{
    char head[48];
    int n = snprintf(head, sizeof head, "transfuse-row-v1%c%llu", 0, (unsigned long long)line);
    TfSha256 *h = tf_sha256_new();
    if (!h)
        return NULL;
    tf_sha256_update(h, head, (size_t)n + 1); /* with the NUL after the line */
    tf_sha256_update(h, image, strlen(image) + 1);
    tf_sha256_update(h, caption, strlen(caption));
    unsigned char digest[32];
    char hex[65];
    tf_sha256_final(h, digest);
    tf_hex(digest, 32, hex);
    hex[INGEST_KEY_HEX] = 0;
    return strdup(hex);
}

/* Fills a row from column names and values (which it takes ownership of). */
static int row_fill(IngestRow *r, char **names, char **values, size_t n, const IngestColumns *cols,
                    const char *base_dir, TfError *err)
{
    const char *image = NULL, *caption = NULL, *key = NULL;
    r->extra_names = calloc(n ? n : 1, sizeof *r->extra_names);
    r->extra_values = calloc(n ? n : 1, sizeof *r->extra_values);
    if (!r->extra_names || !r->extra_values)
        return tf_fail(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(names[i], cols->image))
            image = values[i];
        else if (!strcmp(names[i], cols->caption))
            caption = values[i];
        else if (cols->key && !strcmp(names[i], cols->key))
            key = values[i];
        else {
            r->extra_names[r->n_extra] = strdup(names[i]);
            r->extra_values[r->n_extra++] = strdup(values[i]);
        }
    }
    if (!image || !*image)
        return tf_fail(err, "line %llu: no value in image column '%s'", (unsigned long long)r->line, cols->image);
    if (!caption)
        return tf_fail(err, "line %llu: no caption column '%s'", (unsigned long long)r->line, cols->caption);
    if (cols->key && (!key || !*key))
        return tf_fail(err, "line %llu: no value in key column '%s'", (unsigned long long)r->line, cols->key);
    r->image = resolve_image(image, base_dir);
    r->caption = strdup(caption);
    r->key = key ? strdup(key) : derive_key(r->line, image, caption);
    if (!r->image || !r->caption || !r->key)
        return tf_fail(err, "out of memory");
    return 0;
}

/* Appends a row of the given column names and values, read at `line`. */
static int add_row(IngestManifest *m, size_t *cap, uint64_t line, const Fields *names, const Fields *values,
                   const IngestColumns *cols, const char *base_dir, const char *path, TfError *err)
{
    if (m->n_rows == *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        IngestRow *g = realloc(m->rows, c * sizeof *g);
        if (!g)
            return tf_fail(err, "out of memory");
        m->rows = g;
        *cap = c;
    }
    IngestRow *r = &m->rows[m->n_rows++];
    memset(r, 0, sizeof *r);
    r->line = line;
    if (row_fill(r, names->v, values->v, names->n, cols, base_dir, err))
        return tf_fail_context(err, "%s", path);
    return 0;
}

IngestManifest *ingest_manifest_load(const char *path, const IngestColumns *cols_in, TfError *err)
{
    IngestColumns cols = *cols_in;
    if (!cols.image)
        cols.image = "url";
    if (!cols.caption)
        cols.caption = "caption";
    size_t len;
    char *text = tf_read_file(path, MANIFEST_MAX_BYTES, &len, err);
    if (!text)
        return NULL;
    char base_dir[4096] = "";
    const char *slash = strrchr(path, '/');
    if (slash)
        snprintf(base_dir, sizeof base_dir, "%.*s", (int)(slash - path), path);
    IngestManifest *m = calloc(1, sizeof *m);
    Fields header = {0}, values = {0};
    size_t cap = 0;
    if (!m) {
        tf_fail(err, "out of memory");
        goto fail;
    }
    const char *p = text, *end = text + len;
    uint64_t line = 1;
    if (ends_with(path, ".jsonl") || ends_with(path, ".json")) {
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *e = nl ? nl : end;
            uint64_t this_line = line++;
            const char *q = p;
            p = nl ? nl + 1 : end;
            while (q < e && (*q == ' ' || *q == '\t' || *q == '\r'))
                q++;
            if (q == e)
                continue;
            json_error_t je;
            json_t *obj = json_loadb(q, (size_t)(e - q), 0, &je);
            if (!json_is_object(obj)) {
                json_decref(obj);
                tf_fail(err, "%s:%llu: not a JSON object (%s)", path, (unsigned long long)this_line,
                        obj ? "other value" : je.text);
                goto fail;
            }
            fields_clear(&header);
            fields_clear(&values);
            const char *k;
            json_t *v;
            json_object_foreach(obj, k, v)
            {
                char *s = json_is_string(v) ? strdup(json_string_value(v)) : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
                int bad = !s || fields_push(&header, k, strlen(k)) || fields_push(&values, s, strlen(s));
                free(s);
                if (bad) {
                    json_decref(obj);
                    tf_fail(err, "out of memory");
                    goto fail;
                }
            }
            json_decref(obj);
            if (add_row(m, &cap, this_line, &header, &values, &cols, base_dir, path, err))
                goto fail;
        }
    } else if (ends_with(path, ".tsv") || ends_with(path, ".csv") || ends_with(path, ".txt")) {
        int csv = ends_with(path, ".csv");
        if (split_record(&p, end, csv, &header, &line, err)) {
            tf_fail_context(err, "%s", path);
            goto fail;
        }
        while (p < end) {
            uint64_t this_line = line;
            fields_clear(&values);
            if (split_record(&p, end, csv, &values, &line, err)) {
                tf_fail_context(err, "%s", path);
                goto fail;
            }
            if (values.n == 1 && !values.v[0][0])
                continue; /* blank line */
            if (values.n != header.n) {
                tf_fail(err, "%s:%llu: %zu fields, the header has %zu", path, (unsigned long long)this_line, values.n,
                        header.n);
                goto fail;
            }
            if (add_row(m, &cap, this_line, &header, &values, &cols, base_dir, path, err))
                goto fail;
        }
    } else {
        tf_fail(err, "%s: unknown manifest format (use .tsv, .csv or .jsonl)", path);
        goto fail;
    }
    fields_clear(&header);
    fields_clear(&values);
    free(header.v);
    free(values.v);
    free(text);
    return m;
fail:
    fields_clear(&header);
    fields_clear(&values);
    free(header.v);
    free(values.v);
    free(text);
    ingest_manifest_free(m);
    return NULL;
}
