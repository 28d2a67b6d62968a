/* test_prom.c: the Prometheus text parser (ops/prom.c) on well-formed
 * documents (the registry's own rendering included), every escape, the
 * special values, and on the malformed and hostile inputs an endpoint can
 * send: each fails with the right line number, none crashes, limits hold. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "test.h"

static PromDoc *parse(const char *text, TfError *err)
{
    return prom_parse(text, strlen(text), NULL, err);
}

/* The document must fail with a message containing `want`. */
static void check_fails(const char *text, const char *want)
{
    TfError err = {{0}};
    PromDoc *d = parse(text, &err);
    CHECKF(!d, "accepted: %s", text);
    CHECKF(strstr(err.msg, want) != NULL, "for %s: message '%s' lacks '%s'", text, err.msg, want);
    prom_doc_free(d);
}

int main(void)
{
    TfError err = {{0}};
    const char *good =
        "# HELP transfuse_ingest_rows_total Rows by outcome\n"
        "# TYPE transfuse_ingest_rows_total counter\n"
        "transfuse_ingest_rows_total{outcome=\"ok\"} 120\n"
        "transfuse_ingest_rows_total{outcome=\"failed\",} 3 1700000000000\n"
        "\n"
        "   \t\n"
        "# a free comment\n"
        "transfuse_ingest_failures_total{reason=\"dns\", host=\"a\\\\b\\\"c\\nd\"} 2\r\n"
        "transfuse_train_loss_lm NaN\n"
        "x:y_z +Inf\n"
        "neg -Inf\n"
        "sci 1.5e-3\n"
        "utf{v=\"東京 🐱\"} -0\n"
        "empty{}\t7";
    PromDoc *d = parse(good, &err);
    REQUIRE(d);
    CHECK(prom_doc_count(d) == 9);
    const PromSample *s = prom_doc_at(d, 0);
    CHECK(!strcmp(s->name, "transfuse_ingest_rows_total") && s->n_labels == 1 && s->value == 120);
    CHECK(!strcmp(prom_sample_label(s, "outcome"), "ok") && !prom_sample_label(s, "nope"));
    s = prom_doc_at(d, 1);
    CHECK(s->has_timestamp && s->timestamp_ms == 1700000000000LL && s->value == 3);
    s = prom_doc_at(d, 2);
    CHECK(!strcmp(prom_sample_label(s, "host"), "a\\b\"c\nd"));
    CHECK(!strcmp(prom_sample_label(s, "reason"), "dns") && s->value == 2);
    CHECK(isnan(prom_doc_at(d, 3)->value));
    CHECK(isinf(prom_doc_at(d, 4)->value) && prom_doc_at(d, 4)->value > 0 && !strcmp(prom_doc_at(d, 4)->name, "x:y_z"));
    CHECK(isinf(prom_doc_at(d, 5)->value) && prom_doc_at(d, 5)->value < 0);
    CHECK(fabs(prom_doc_at(d, 6)->value - 1.5e-3) < 1e-15);
    CHECK(!strcmp(prom_sample_label(prom_doc_at(d, 7), "v"), "東京 🐱"));
    CHECK(prom_doc_at(d, 8)->n_labels == 0 && prom_doc_at(d, 8)->value == 7);
    CHECK(prom_doc_type(d, "transfuse_ingest_rows_total") == PROM_COUNTER);
    CHECK(prom_doc_type(d, "sci") == PROM_UNTYPED);
    CHECK(!prom_doc_at(d, 9));
    prom_doc_free(d);

    /* The registry's own output parses back exactly. */
    tf_counter_add(tf_counter("test_prom_total", "A counter", "reason", "quote\"back\\slash\nnl", NULL), 5);
    static const double b[] = {0.1, 1};
    tf_histogram_observe(tf_histogram("test_prom_seconds", "A histogram", b, 2, NULL), 0.5);
    size_t len;
    char *text = tf_metrics_render(&len);
    REQUIRE(text);
    d = prom_parse(text, len, NULL, &err);
    CHECKF(d != NULL, "%s", err.msg);
    int seen = 0;
    for (size_t i = 0; d && i < prom_doc_count(d); i++) {
        const PromSample *x = prom_doc_at(d, i);
        if (!strcmp(x->name, "test_prom_total")) {
            CHECK(!strcmp(prom_sample_label(x, "reason"), "quote\"back\\slash\nnl") && x->value == 5);
            seen++;
        }
        if (!strcmp(x->name, "test_prom_seconds_bucket") && !strcmp(prom_sample_label(x, "le"), "+Inf")) {
            CHECK(x->value == 1);
            seen++;
        }
    }
    CHECK(seen == 2);
    CHECK(d && prom_doc_type(d, "test_prom_seconds") == PROM_HISTOGRAM);
    prom_doc_free(d);
    free(text);

    /* An empty document is a document with nothing in it. */
    d = prom_parse("", 0, NULL, &err);
    CHECK(d && prom_doc_count(d) == 0);
    prom_doc_free(d);

    /* Malformed lines fail the document, naming the line. */
    check_fails("a 1\nb{x=\"1\" 2\n", "line 2");
    check_fails("a{x=\"1\"} 1\nb{x=\"unterminated} 2\n", "not closed");
    check_fails("a{x=1} 1\n", "'\"'");
    check_fails("a{x=\"\\t\"} 1\n", "invalid escape");
    check_fails("a{x=\"1\",x=\"2\"} 1\n", "given twice");
    check_fails("a{1x=\"1\"} 1\n", "label name");
    check_fails("a 0x10\n", "invalid sample value");
    check_fails("a one\n", "invalid sample value");
    check_fails("a\n", "invalid sample value");
    check_fails("a 1 2 3\n", "after the timestamp");
    check_fails("a 1 1.5\n", "timestamp");
    check_fails("a 1e999\n", "invalid sample value");
    check_fails("a-b 1\n", "metric name");
    check_fails("9a 1\n", "expected a metric name");
    check_fails("{x=\"1\"} 1\n", "expected a metric name");
    check_fails("a{x=\"\xff\xfe\"} 1\n", "UTF-8");
    check_fails("a{x=\"\xc0\xaf\"} 1\n", "UTF-8");
    check_fails("# TYPE a counter\n# TYPE a gauge\na 1\n", "given twice");
    check_fails("# TYPE a countr\n", "unknown metric type");
    check_fails("a{x=\"1\"}1 2 3\n", "timestamp");
    {
        const char nul[] = "a 1\nb\0 2\n";
        d = prom_parse(nul, sizeof nul - 1, NULL, &err);
        CHECK(!d && strstr(err.msg, "NUL"));
    }

    /* Limits: size, line length, series, labels, name length. */
    PromLimits lim;
    prom_limits_init(&lim);
    lim.max_bytes = 100;
    char big[200];
    memset(big, '\n', sizeof big);
    d = prom_parse(big, sizeof big, &lim, &err);
    CHECK(!d && strstr(err.msg, "limit"));
    prom_limits_init(&lim);
    lim.max_line = 50;
    char line[200];
    snprintf(line, sizeof line, "ok 1\nlong{v=\"%060d\"} 1\n", 0);
    d = prom_parse(line, strlen(line), &lim, &err);
    CHECK(!d && strstr(err.msg, "line 2") && strstr(err.msg, "longer"));
    prom_limits_init(&lim);
    lim.max_samples = 1000;
    size_t cap = 1001 * 8 + 1;
    char *many = malloc(cap), *w = many;
    REQUIRE(many);
    for (int i = 0; i < 1001; i++)
        w += sprintf(w, "m%03d 1\n", i % 1000);
    d = prom_parse(many, (size_t)(w - many), &lim, &err);
    CHECK(!d && strstr(err.msg, "more than 1000 series"));
    lim.max_samples = 1001;
    d = prom_parse(many, (size_t)(w - many), &lim, &err);
    CHECK(d && prom_doc_count(d) == 1001);
    prom_doc_free(d);
    free(many);
    prom_limits_init(&lim);
    char labels[4096];
    w = labels + sprintf(labels, "m{");
    for (int i = 0; i < 65; i++)
        w += sprintf(w, "l%d=\"v\",", i);
    sprintf(w, "} 1\n");
    d = prom_parse(labels, strlen(labels), &lim, &err);
    CHECK(!d && strstr(err.msg, "more than 64 labels"));
    lim.max_name = 8;
    d = prom_parse("abcdefghi 1\n", 12, &lim, &err);
    CHECK(!d && strstr(err.msg, "longer than 8"));

    /* The default line limit on a 1 MiB line of one label value. */
    size_t hl = (1u << 20) + 32;
    char *huge = malloc(hl);
    REQUIRE(huge);
    memcpy(huge, "h{v=\"", 5);
    memset(huge + 5, 'x', hl - 5);
    memcpy(huge + hl - 5, "\"} 1\n", 5);
    d = prom_parse(huge, hl, NULL, &err);
    CHECK(!d && strstr(err.msg, "longer than 65536"));
    free(huge);
    return test_main_end("test_prom");
}
