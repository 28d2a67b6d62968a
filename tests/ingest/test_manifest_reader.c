/* test_manifest_reader: the streaming manifest reader over TSV, CSV and
 * JSONL, plain, gzip (two members) and zstd (two frames): every row once,
 * in order, with its line and offset; slices cut at the offsets a first
 * pass gave (a planner's cut) read back to the same rows, with and without
 * first_line (seek or skip); bad rows come back as MANIFEST_BAD_ROW and
 * reading goes on; a row longer than the reader's chunk; the hash column;
 * keys: the same with and without slicing, the historical keys without an
 * identity (ingest_manifest_load), other keys with one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "ingest.h"
#include "test.h"

typedef struct Got {
    size_t n;
    uint64_t line[20000], offset[20000];
    char *key[20000], *url[20000], *caption[20000];
    size_t bad;
    uint64_t bad_line[64];
} Got;

static Got g_full, g_part;

static void got_clear(Got *g)
{
    for (size_t i = 0; i < g->n; i++) {
        free(g->key[i]);
        free(g->url[i]);
        free(g->caption[i]);
    }
    memset(g, 0, sizeof *g);
}

/* Reads [start, end) of path into g (appending). Returns the reader's final rc. */
static int read_slice(const char *path, const char *identity, uint64_t start, uint64_t end, uint64_t first_line,
                      Got *g)
{
    ManifestReaderOptions o = {.path = path, .start = start, .end = end, .first_line = first_line,
                               .identity = identity};
    o.columns.hash = "sha";
    TfError err = {{0}};
    ManifestReader *r = manifest_reader_open(&o, &err);
    if (!r) {
        fprintf(stderr, "open %s: %s\n", path, err.msg);
        return -1;
    }
    int rc;
    IngestRow row;
    char why[256];
    while ((rc = manifest_reader_next(r, &row, why, sizeof why, &err)) > 0) {
        if (rc == MANIFEST_BAD_ROW) {
            if (g->bad < 64)
                g->bad_line[g->bad] = row.line;
            g->bad++;
            CHECKF(why[0] != 0, "bad row without a reason");
            continue;
        }
        REQUIRE(g->n < 20000);
        g->line[g->n] = row.line;
        g->offset[g->n] = row.offset;
        g->key[g->n] = strdup(row.key);
        g->url[g->n] = strdup(row.image);
        g->caption[g->n] = strdup(row.caption);
        g->n++;
    }
    if (rc < 0)
        fprintf(stderr, "read %s: %s\n", path, err.msg);
    manifest_reader_free(r);
    return rc;
}

static char *text;
static size_t text_len;

static void put(const char *s)
{
    size_t n = strlen(s);
    text = realloc(text, text_len + n + 1);
    memcpy(text + text_len, s, n + 1);
    text_len += n;
}

/* The manifest text in `fmt` (0 TSV, 1 CSV, 2 JSONL): n rows, a bad one at
 * row 100, a long caption at row 200, quoted newlines (CSV). */
static void make_text(int fmt, size_t n)
{
    free(text);
    text = NULL;
    text_len = 0;
    if (fmt == 0)
        put("url\tcaption\tsha\textra\n");
    else if (fmt == 1)
        put("url,caption,sha,extra\n");
    char line[1024];
    for (size_t i = 0; i < n; i++) {
        const char *sha = i % 7 == 0 ? "ab00000000000000000000000000000000000000000000000000000000000000" : "";
        if (i == 100) {
            put(fmt == 2 ? "[1, 2]\n" : fmt == 1 ? "only,two\n" : "only\ttwo\n");
            continue;
        }
        if (i == 200) {
            size_t big = 700000;
            char *c = malloc(big + 1);
            memset(c, 'x', big);
            c[big] = 0;
            snprintf(line, sizeof line, fmt == 2 ? "{\"url\": \"http://h/%zu.jpg\", \"caption\": \"" : "http://h/%zu.jpg%c", i,
                     fmt == 1 ? ',' : '\t');
            put(line);
            put(c);
            put(fmt == 2 ? "\", \"extra\": 1}\n" : fmt == 1 ? ",,e\n" : "\t\te\n");
            free(c);
            continue;
        }
        if (fmt == 0)
            snprintf(line, sizeof line, "http://h/%zu.jpg\tcaption %zu\t%s\te%zu\n", i, i, sha, i);
        else if (fmt == 1)
            snprintf(line, sizeof line, "http://h/%zu.jpg,\"caption, %zu%s\",%s,e%zu\n", i, i,
                     i % 5 == 0 ? "\nsecond \"\"line\"\"" : "", sha, i);
        else
            snprintf(line, sizeof line, "{\"url\": \"http://h/%zu.jpg\", \"caption\": \"caption %zu\", \"sha\": \"%s\", "
                     "\"n\": %zu}\n%s", i, i, sha, i, i % 9 == 0 ? "\n" : "");
        put(line);
    }
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    REQUIRE(f && fwrite(data, 1, len, f) == len && fclose(f) == 0);
}

static void write_gzip(const char *path)
{
    gzFile z = gzopen(path, "wb");
    size_t half = text_len / 2;
    REQUIRE(z && gzwrite(z, text, (unsigned)half) == (int)half && gzclose(z) == Z_OK);
    z = gzopen(path, "ab"); /* a second member */
    REQUIRE(z && gzwrite(z, text + half, (unsigned)(text_len - half)) == (int)(text_len - half) && gzclose(z) == Z_OK);
}

static void write_zstd(const char *path)
{
    size_t half = text_len / 3, cap = ZSTD_compressBound(text_len) + 64;
    unsigned char *out = malloc(cap);
    size_t a = ZSTD_compress(out, cap, text, half, 3);
    REQUIRE(!ZSTD_isError(a));
    size_t b = ZSTD_compress(out + a, cap - a, text + half, text_len - half, 3);
    REQUIRE(!ZSTD_isError(b));
    write_file(path, out, a + b);
    free(out);
}

static int same_rows(const Got *a, const Got *b, const char *what)
{
    int ok = a->n == b->n;
    for (size_t i = 0; ok && i < a->n; i++)
        ok = a->line[i] == b->line[i] && a->offset[i] == b->offset[i] && !strcmp(a->key[i], b->key[i]) &&
             !strcmp(a->url[i], b->url[i]) && !strcmp(a->caption[i], b->caption[i]);
    CHECKF(ok, "%s: %zu rows vs %zu, or a row differs", what, a->n, b->n);
    return ok;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    static const char *const fmts[] = {"tsv", "csv", "jsonl"};
    const size_t n = 3000;
    for (int fmt = 0; fmt < 3; fmt++) {
        make_text(fmt, n);
        char plain[4096], gz[4096], zst[4096];
        snprintf(plain, sizeof plain, "%s/m.%s", dir, fmts[fmt]);
        snprintf(gz, sizeof gz, "%s/m.%s.gz", dir, fmts[fmt]);
        snprintf(zst, sizeof zst, "%s/m.%s.zst", dir, fmts[fmt]);
        write_file(plain, text, text_len);
        write_gzip(gz);
        write_zstd(zst);
        got_clear(&g_full);
        REQUIRE(read_slice(plain, "m", 0, 0, 0, &g_full) == MANIFEST_END);
        CHECKF(g_full.n == n - 1, "%s: %zu rows, want %zu", plain, g_full.n, n - 1);
        CHECKF(g_full.bad == 1, "%s: %zu bad rows, want 1", plain, g_full.bad);
        /* every row's offset points at its text; lines grow */
        for (size_t i = 0; i < g_full.n; i++) {
            const char *at = text + g_full.offset[i];
            CHECKF(fmt == 2 ? !strncmp(at, "{\"url\": \"", 9) : !strncmp(at, "http://h/", 9), "%s row %zu offset", plain, i);
            if (i)
                CHECK(g_full.line[i] > g_full.line[i - 1]);
        }
        CHECKF(strlen(g_full.caption[199]) == 700000, "%s: long caption %zu", plain, strlen(g_full.caption[199]));
        /* compressed: the same rows */
        got_clear(&g_part);
        CHECK(read_slice(gz, "m", 0, 0, 0, &g_part) == MANIFEST_END);
        same_rows(&g_full, &g_part, gz);
        got_clear(&g_part);
        CHECK(read_slice(zst, "m", 0, 0, 0, &g_part) == MANIFEST_END);
        same_rows(&g_full, &g_part, zst);
        /* slices cut every 377 rows, read with seek (first_line) and with skip */
        for (int variant = 0; variant < 3; variant++) {
            const char *path = variant == 2 ? zst : plain;
            got_clear(&g_part);
            for (size_t s = 0; s < g_full.n; s += 377) {
                uint64_t start = s ? g_full.offset[s] : 0;
                uint64_t end = s + 377 < g_full.n ? g_full.offset[s + 377] : 0;
                uint64_t first = variant == 1 ? 0 : (s ? g_full.line[s] : 0);
                CHECK(read_slice(path, "m", start, end, first, &g_part) == MANIFEST_END);
            }
            char what[4200];
            snprintf(what, sizeof what, "%s slices (%s)", path, variant == 0 ? "seek" : variant == 1 ? "skip" : "zstd");
            same_rows(&g_full, &g_part, what);
            CHECKF(g_part.bad == 1, "%s: %zu bad rows", what, g_part.bad);
        }
        /* a slice that does not start at a row is refused */
        ManifestReaderOptions bad = {.path = plain, .start = g_full.offset[10] + 3};
        TfError err = {{0}};
        ManifestReader *r = manifest_reader_open(&bad, &err);
        CHECKF(!r && strstr(err.msg, "not the start of a row"), "mid-row start: %s", err.msg);
        manifest_reader_free(r);
        /* keys: another identity, other keys; no identity: the loader's keys */
        got_clear(&g_part);
        CHECK(read_slice(plain, "other", 0, 0, 0, &g_part) == MANIFEST_END);
        CHECK(g_part.n == g_full.n && strcmp(g_part.key[0], g_full.key[0]) != 0);
        if (fmt != 2) {
            got_clear(&g_part);
            CHECK(read_slice(plain, NULL, 0, 0, 0, &g_part) == MANIFEST_END);
            /* the loader refuses the bad row: check it on the rows before it */
            char head[4096];
            snprintf(head, sizeof head, "%s/head.%s", dir, fmts[fmt]);
            write_file(head, text, g_full.offset[99]);
            IngestColumns cols = {0};
            IngestManifest *m = ingest_manifest_load(head, &cols, &err);
            CHECKF(m && m->n_rows == 99, "loader: %s", m ? "row count" : err.msg);
            for (size_t i = 0; m && i < m->n_rows; i++)
                CHECK(!strcmp(m->rows[i].key, g_part.key[i]) && m->rows[i].line == g_part.line[i]);
            ingest_manifest_free(m);
        }
    }
    /* the hash column */
    {
        char path[4096];
        snprintf(path, sizeof path, "%s/h.tsv", dir);
        const char *t = "url\tcaption\tsha\nhttp://a\tx\tzz\nhttp://b\ty\t"
                        "00ff000000000000000000000000000000000000000000000000000000000001\n";
        write_file(path, t, strlen(t));
        ManifestReaderOptions o = {.path = path};
        o.columns.hash = "sha";
        TfError err = {{0}};
        ManifestReader *r = manifest_reader_open(&o, &err);
        REQUIRE(r);
        IngestRow row;
        char why[256];
        CHECK(manifest_reader_next(r, &row, why, sizeof why, &err) == MANIFEST_BAD_ROW && strstr(why, "hex"));
        CHECK(manifest_reader_next(r, &row, why, sizeof why, &err) == MANIFEST_ROW && row.has_sha256 &&
              row.sha256[1] == 0xff && row.sha256[31] == 1);
        CHECK(manifest_reader_next(r, &row, why, sizeof why, &err) == MANIFEST_END);
        manifest_reader_free(r);
    }
    got_clear(&g_full);
    got_clear(&g_part);
    free(text);
    return test_main_end("test_manifest_reader");
}
