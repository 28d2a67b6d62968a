/* test_fetcher.c: the fetcher's C API against a tiny HTTP server in this
 * process (loopback): results carry the user pointer, the exact bytes, the
 * sniffed format and their SHA-256 (only when asked), each URL once;
 * metrics count them; a slow consumer does not make the fetcher hold every
 * finished body; a set stop flag and fetcher_wakeup end a poll that would
 * otherwise wait on a hanging response; fetcher_free with transfers
 * queued, in flight and done leaks nothing (ASan in the sanitizer build);
 * two fetchers on two threads share one FetchShare; bad options are
 * refused. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ingest.h"
#include "test.h"

static int listen_fd;
static int port;
static unsigned char body[5000];

static void *serve_connection(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char req[4096];
    size_t have = 0;
    for (;;) {
        ssize_t n = recv(fd, req + have, sizeof req - 1 - have, 0);
        if (n <= 0)
            break;
        have += (size_t)n;
        req[have] = 0;
        char *end;
        while ((end = strstr(req, "\r\n\r\n"))) {
            if (strncmp(req, "GET /hang", 9) == 0) {
                while (recv(fd, req, sizeof req, 0) > 0) /* until the client goes */
                    ;
                close(fd);
                return NULL;
            }
            char head[128];
            int h = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", sizeof body);
            if (send(fd, head, (size_t)h, MSG_NOSIGNAL) != h ||
                send(fd, body, sizeof body, MSG_NOSIGNAL) != (ssize_t)sizeof body)
                goto out;
            size_t used = (size_t)(end + 4 - req);
            memmove(req, req + used, have - used + 1);
            have -= used;
        }
    }
out:
    close(fd);
    return NULL;
}

static void *serve(void *arg)
{
    for (;;) {
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        pthread_t t;
        pthread_create(&t, NULL, serve_connection, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
}

static void start_server(void)
{
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    REQUIRE(bind(listen_fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(listen_fd, 256) == 0);
    socklen_t len = sizeof a;
    getsockname(listen_fd, (struct sockaddr *)&a, &len);
    port = ntohs(a.sin_port);
    static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (unsigned char)(i * 7 + 3);
    memcpy(body, png, sizeof png);
    pthread_t t;
    pthread_create(&t, NULL, serve, NULL);
    pthread_detach(t);
}

static FetchOptions options(void)
{
    FetchOptions o;
    fetch_options_init(&o);
    o.allow_private_networks = 1;
    o.concurrency = 16;
    return o;
}

static void url(char *out, size_t cap, const char *path)
{
    snprintf(out, cap, "http://127.0.0.1:%d%s", port, path);
}

/* Polls until every submitted URL came back; returns how many did. */
static size_t drain(Fetcher *f, FetchResult **all, size_t cap)
{
    size_t n = 0;
    TfError err = {{0}};
    while (fetcher_unfinished(f) > 0) {
        FetchResult *r[8];
        int got = fetcher_poll(f, 1000, r, 8, &err);
        REQUIRE(got >= 0);
        for (int i = 0; i < got; i++) {
            if (n < cap)
                all[n] = r[i];
            else
                fetch_result_free(r[i]);
            n++;
        }
    }
    return n;
}

static void test_results(void)
{
    FetchOptions o = options();
    TfError err = {{0}};
    TfCounter *ok = tf_counter("transfuse_fetch_outcomes_total", "Fetched URLs by outcome class", "outcome", "ok",
                               NULL);
    uint64_t ok_before = tf_counter_value(ok);
    o.hash_bodies = 1;
    Fetcher *f = fetcher_new(&o, &err);
    REQUIRE(f);
    enum { N = 50 };
    char u[128];
    for (intptr_t i = 0; i < N; i++) {
        snprintf(u, sizeof u, "http://127.0.0.1:%d/ok?%d", port, (int)i);
        REQUIRE(fetcher_submit(f, u, NULL, (void *)(i + 1), &err) == 0);
    }
    REQUIRE(fetcher_submit(f, "no scheme here", NULL, (void *)1000, &err) == 0);
    CHECK(fetcher_unfinished(f) == N + 1);
    FetchResult *all[N + 1];
    CHECK(drain(f, all, N + 1) == N + 1);
    int seen[N + 1] = {0}, bad_url = 0;
    unsigned char want[32];
    tf_sha256(body, sizeof body, want);
    for (int i = 0; i < N + 1; i++) {
        FetchResult *r = all[i];
        intptr_t id = (intptr_t)r->user;
        if (id == 1000) {
            bad_url++;
            CHECK(r->outcome == FETCH_BAD_URL && strcmp(r->label, "bad_url") == 0 && r->reason[0]);
        } else {
            REQUIRE(id >= 1 && id <= N);
            seen[id]++;
            CHECKF(r->outcome == FETCH_OK, "%s: %s %s", r->url, r->label, r->reason);
            CHECK(r->http_status == 200 && r->http_version == 11 && r->attempts == 1 && r->redirects == 0);
            CHECK(r->body_len == sizeof body && r->body && memcmp(r->body, body, sizeof body) == 0);
            CHECK(r->format == IMAGE_FORMAT_PNG && r->has_sha256 && memcmp(r->sha256, want, 32) == 0);
            CHECK(strcmp(r->url, r->final_url) == 0 && r->elapsed_s >= r->transfer_s);
            /* The caller may take the body. */
            unsigned char *taken = r->body;
            r->body = NULL;
            free(taken);
        }
        fetch_result_free(r);
    }
    for (int i = 1; i <= N; i++)
        CHECKF(seen[i] == 1, "user %d seen %d times", i, seen[i]);
    CHECK(bad_url == 1);
    FetchStats st;
    fetcher_stats(f, &st);
    CHECK(st.submitted == N + 1 && st.completed == N + 1 && st.ok == N && st.outcomes[FETCH_BAD_URL] == 1);
    CHECK(st.bytes == N * sizeof body && st.in_flight == 0 && st.queued == 0 && st.done == 0);
    CHECK(tf_counter_value(ok) - ok_before == N);
    /* Expected hash: right and wrong. */
    unsigned char wrong[32] = {0};
    url(u, sizeof u, "/ok?hash");
    REQUIRE(fetcher_submit(f, u, want, (void *)1, &err) == 0);
    REQUIRE(fetcher_submit(f, u, wrong, (void *)2, &err) == 0);
    CHECK(drain(f, all, 2) == 2);
    for (int i = 0; i < 2; i++) {
        CHECK(all[i]->outcome == ((intptr_t)all[i]->user == 1 ? FETCH_OK : FETCH_HASH_MISMATCH));
        CHECK(all[i]->outcome == FETCH_OK || (all[i]->body == NULL && all[i]->body_len == 0));
        fetch_result_free(all[i]);
    }
    size_t len;
    char *text = tf_metrics_render(&len);
    CHECK(text && strstr(text, "transfuse_fetch_seconds_bucket") && strstr(text, "transfuse_fetch_bytes_total") &&
          strstr(text, "outcome=\"hash_mismatch\"} 1"));
    free(text);
    fetcher_free(f);
}

/* A caller taking one result per poll must not make the fetcher hold every
 * finished body: it reads no sockets while a full batch waits. */
static void test_bounded_results(void)
{
    FetchOptions o = options();
    o.concurrency = 64;
    o.max_per_host = 64;
    TfError err = {{0}};
    Fetcher *f = fetcher_new(&o, &err);
    REQUIRE(f);
    char u[128];
    for (int i = 0; i < 1000; i++) {
        snprintf(u, sizeof u, "http://127.0.0.1:%d/ok?b%d", port, i);
        REQUIRE(fetcher_submit(f, u, NULL, NULL, &err) == 0);
    }
    size_t most = 0, got = 0;
    while (fetcher_unfinished(f) > 0) {
        FetchResult *r[2];
        int n = fetcher_poll(f, 1000, r, 2, &err);
        REQUIRE(n >= 0);
        for (int i = 0; i < n; i++)
            fetch_result_free(r[i]);
        got += (size_t)n;
        usleep(2000); /* a slow consumer: responses arrive meanwhile */
        FetchStats st;
        fetcher_stats(f, &st);
        if (st.done > most)
            most = st.done;
    }
    CHECK(got == 1000);
    CHECKF(most <= (size_t)o.concurrency, "%zu finished results held at once with concurrency %d", most,
           o.concurrency);
    fetcher_free(f);
}

static TfStopFlag stop_flag;

static void *set_stop_later(void *arg)
{
    usleep(200000);
    atomic_store(&stop_flag, 1);
    return NULL;
}

static void *wake_later(void *arg)
{
    usleep(200000);
    fetcher_wakeup(arg);
    return NULL;
}

static void test_stop_and_wakeup(void)
{
    FetchOptions o = options();
    o.stop = &stop_flag;
    TfError err = {{0}};
    Fetcher *f = fetcher_new(&o, &err);
    REQUIRE(f);
    char u[128];
    url(u, sizeof u, "/hang");
    REQUIRE(fetcher_submit(f, u, NULL, NULL, &err) == 0);
    FetchResult *r[4];
    /* A wakeup from another thread ends the wait. */
    pthread_t t;
    pthread_create(&t, NULL, wake_later, f);
    double t0 = tf_now();
    CHECK(fetcher_poll(f, 60000, r, 4, &err) == 0);
    pthread_join(t, NULL);
    CHECKF(tf_now() - t0 < 30, "poll ignored fetcher_wakeup (%.1f s)", tf_now() - t0);
    /* So does the stop flag; what is in flight stays unfinished. */
    pthread_create(&t, NULL, set_stop_later, NULL);
    t0 = tf_now();
    CHECK(fetcher_poll(f, 60000, r, 4, &err) == 0);
    pthread_join(t, NULL);
    CHECKF(tf_now() - t0 < 30, "poll ignored the stop flag (%.1f s)", tf_now() - t0);
    CHECK(fetcher_unfinished(f) == 1);
    /* While stopped nothing new starts. */
    REQUIRE(fetcher_submit(f, u, NULL, NULL, &err) == 0);
    CHECK(fetcher_poll(f, 0, r, 4, &err) == 0);
    FetchStats st;
    fetcher_stats(f, &st);
    CHECK(st.in_flight == 1 && st.queued == 1);
    /* Freed with one in flight, one queued and one done (bad URL) not returned. */
    REQUIRE(fetcher_submit(f, "ftp://x/y", NULL, NULL, &err) == 0);
    fetcher_free(f);
    atomic_store(&stop_flag, 0);
}

typedef struct {
    FetchShare *share;
    int ok;
} ThreadArg;

static void *fetch_on_thread(void *arg)
{
    ThreadArg *a = arg;
    FetchOptions o = options();
    o.share = a->share;
    char r1[64];
    snprintf(r1, sizeof r1, "shared.test:%d:127.0.0.1", port);
    const char *resolve[] = {r1};
    o.resolve = resolve;
    o.n_resolve = 1;
    TfError err = {{0}};
    Fetcher *f = fetcher_new(&o, &err);
    if (!f)
        return NULL;
    char u[128];
    for (int i = 0; i < 20; i++) {
        snprintf(u, sizeof u, "http://shared.test:%d/ok?%d", port, i);
        fetcher_submit(f, u, NULL, NULL, &err);
    }
    FetchResult *all[20];
    size_t n = drain(f, all, 20);
    for (size_t i = 0; i < n && i < 20; i++) {
        a->ok += all[i]->outcome == FETCH_OK && !all[i]->has_sha256; /* hash_bodies is off */
        fetch_result_free(all[i]);
    }
    fetcher_free(f);
    return NULL;
}

static void test_share(void)
{
    TfError err = {{0}};
    FetchShare *share = fetch_share_new(&err);
    REQUIRE(share);
    ThreadArg a[2] = {{share, 0}, {share, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, fetch_on_thread, &a[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK(a[0].ok == 20 && a[1].ok == 20);
    fetch_share_free(share);
}

static void test_bad_options(void)
{
    TfError err = {{0}};
    FetchOptions o = options();
    o.concurrency = 0;
    CHECK(fetcher_new(&o, &err) == NULL && err.msg[0]);
    o = options();
    o.allow_addresses = "10.0.0.0/8,nonsense";
    CHECK(fetcher_new(&o, &err) == NULL && strstr(err.msg, "nonsense"));
    o = options();
    o.timeout_s = 0;
    CHECK(fetcher_new(&o, &err) == NULL);
    fetcher_free(NULL);
    fetch_result_free(NULL);
    fetch_share_free(NULL);
}

int main(void)
{
    start_server();
    test_results();
    test_bounded_results();
    test_stop_and_wakeup();
    test_share();
    test_bad_options();
    return test_main_end("test_fetcher");
}
