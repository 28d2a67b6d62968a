/* test_metrics.c: the metrics registry and the /metrics endpoint.
 *   - counters, gauges and histograms from 4 threads at once add up exactly;
 *   - lookups are get-or-create, invalid names and kind clashes give NULL,
 *     and NULL series are no-ops;
 *   - label values are escaped;
 *   - the endpoint answers GET /metrics over a real socket, 404 elsewhere;
 *   - with PROMTOOL given, `promtool check metrics` accepts the output.
 *   test_metrics [PROMTOOL] */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core.h"
#include "test.h"

#define THREADS 4
#define ROUNDS 100000

static void *hammer(void *arg)
{
    (void)arg;
    TfCounter *c = tf_counter("test_rows_total", "Rows seen", "stage", "fetch", NULL);
    TfGauge *g = tf_gauge("test_in_flight", "Transfers in flight", NULL);
    static const double bounds[] = {0.5, 1, 2};
    TfHistogram *h = tf_histogram("test_latency_seconds", "Latency", bounds, 3, NULL);
    for (int i = 0; i < ROUNDS; i++) {
        tf_counter_add(c, 1);
        tf_gauge_add(g, 1.0);
        tf_histogram_observe(h, (i % 4) * 0.75); /* 0, 0.75, 1.5, 2.25: one per bucket */
    }
    return NULL;
}

/* GET `path` from 127.0.0.1:port; returns the whole response (malloc'd). */
static char *http_get(int port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while (buf && (r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    close(fd);
    if (buf)
        buf[len] = 0;
    return buf;
}

int main(int argc, char **argv)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        REQUIRE(pthread_create(&t[i], NULL, hammer, NULL) == 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);

    TfCounter *c = tf_counter("test_rows_total", "Rows seen", "stage", "fetch", NULL);
    CHECK(c && tf_counter_value(c) == (uint64_t)THREADS * ROUNDS);
    CHECK(tf_gauge_value(tf_gauge("test_in_flight", "Transfers in flight", NULL)) == (double)THREADS * ROUNDS);
    /* Another label set is another series; another kind under a name is refused. */
    CHECK(tf_counter("test_rows_total", "Rows seen", "stage", "crop", NULL) != c);
    CHECK(tf_gauge("test_rows_total", "clash", NULL) == NULL);
    CHECK(tf_counter("9bad", "bad name", NULL) == NULL);
    CHECK(tf_counter("test_bad_label_total", "bad label", "le", "1", NULL) == NULL);
    static const double other[] = {1, 2};
    CHECK(tf_histogram("test_latency_seconds", "Latency", other, 2, NULL) == NULL);
    static const double unsorted[] = {2, 1};
    CHECK(tf_histogram("test_unsorted_seconds", "x", unsorted, 2, NULL) == NULL);
    tf_counter_add(NULL, 1);
    tf_gauge_set(NULL, 1);
    tf_histogram_observe(NULL, 1);
    tf_counter_add(tf_counter("test_failures_total", "Failures", "reason", "say \"hi\"\\\n", NULL), 3);
    tf_gauge_set(tf_gauge("test_nan", "A gauge that is NaN", NULL), 0.0 / 0.0);

    size_t len;
    char *text = tf_metrics_render(&len);
    REQUIRE(text && strlen(text) == len);
    CHECK(strstr(text, "# TYPE test_rows_total counter\n"));
    CHECK(strstr(text, "test_rows_total{stage=\"fetch\"} 400000\n"));
    CHECK(strstr(text, "test_rows_total{stage=\"crop\"} 0\n"));
    CHECK(strstr(text, "test_failures_total{reason=\"say \\\"hi\\\"\\\\\\n\"} 3\n"));
    CHECK(strstr(text, "test_latency_seconds_bucket{le=\"0.5\"} 100000\n"));
    CHECK(strstr(text, "test_latency_seconds_bucket{le=\"2\"} 300000\n"));
    CHECK(strstr(text, "test_latency_seconds_bucket{le=\"+Inf\"} 400000\n"));
    CHECK(strstr(text, "test_latency_seconds_count 400000\n"));
    CHECK(strstr(text, "test_latency_seconds_sum 450000\n"));
    CHECK(strstr(text, "test_nan NaN\n"));
    CHECKF(strstr(text, "# TYPE test_failures_total") < strstr(text, "# TYPE test_rows_total"), "sorted by name");

    TfError err = {{0}};
    TfMetricsServer *s = tf_metrics_cli_start("test", NULL, 0, &err);
    CHECK(s == NULL && err.msg[0] == 0); /* port 0: off */
    s = tf_metrics_serve(NULL, 0, &err);
    REQUIRE(s);
    int port = tf_metrics_server_port(s);
    CHECK(port > 0);
    char *resp = http_get(port, "/metrics");
    REQUIRE(resp);
    CHECK(strstr(resp, "HTTP/1.0 200") || strstr(resp, "HTTP/1.1 200"));
    CHECK(strstr(resp, "text/plain; version=0.0.4"));
    CHECK(strstr(resp, "test_rows_total{stage=\"fetch\"} 400000\n"));
    CHECK(strstr(resp, "transfuse_build_info{version=\"" TF_VERSION_STRING "\",command=\"test\"}") != NULL);
    free(resp);
    resp = http_get(port, "/other");
    REQUIRE(resp);
    CHECK(strstr(resp, " 404 "));
    free(resp);
    /* A second server cannot take the same port. */
    TfMetricsServer *s2 = tf_metrics_serve(NULL, port, &err);
    CHECK(s2 == NULL && strstr(err.msg, "cannot serve"));
    tf_metrics_server_free(s);
    tf_metrics_server_free(NULL);

    if (argc > 1) {
        char path[] = "/tmp/tf_test_metrics_XXXXXX";
        int fd = mkstemp(path);
        REQUIRE(fd >= 0);
        /* promtool rejects NaN nowhere, but does check names, types, help. */
        REQUIRE(write(fd, text, len) == (ssize_t)len);
        close(fd);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "'%s' check metrics < %s", argv[1], path);
        int rc = system(cmd);
        CHECKF(rc == 0, "promtool check metrics failed (%d)", rc);
        unlink(path);
    }
    free(text);
    return test_main_end("test_metrics");
}
