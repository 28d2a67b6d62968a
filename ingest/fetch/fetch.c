/* fetch.c: the fetcher engine (see "fetching" in ingest.h).
 *
 * One libcurl multi handle driven by curl_multi_socket_action over an
 * epoll set, so the cost of a wake-up grows with the sockets that are
 * ready, not with the transfers in flight. In front of libcurl sits our own
 * queue: one FIFO per host name, a round-robin list of hosts that may start
 * a transfer now, a heap of hosts waiting for a rate-limit token, and a
 * heap of transfers waiting to be retried. libcurl therefore never holds a
 * transfer back itself (its per-host cap is only a backstop), and its
 * timeouts measure the request, not our queue.
 *
 * A Transfer owns everything about one submitted URL, and its first member
 * is the FetchResult handed to the caller, so fetch_result_free frees the
 * whole transfer. Redirects are followed here: each hop goes back to its
 * host's queue (front), through the same scheme check, rate limit and, at
 * connect time, the same address check (CURLOPT_OPENSOCKETFUNCTION sees
 * every address libcurl is about to connect to, after DNS). */
#include "fetch_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#define ERROR_BODY_MAX (64u << 10)   /* bytes of a non-2xx body read before dropping the connection */
#define PREALLOC_MAX (4u << 20)      /* most a declared Content-Length may reserve up front */
#define URL_MAX 16384                /* longer URLs are bad_url */
#define WAKE_MS 100                  /* the longest poll waits between stop-flag checks */

typedef struct Host Host;
typedef struct Transfer Transfer;

struct Transfer {
    FetchResult r;              /* first member: the caller's handle is the transfer */
    Transfer *next;             /* host queue or done list */
    Fetcher *f;
    Transfer *aprev, *anext;    /* the fetcher's list of transfers in flight */
    Host *host;                 /* NULL once complete */
    char *url;                  /* as submitted (r.url) */
    char *cur;                  /* the current hop (r.final_url) */
    char **chain;               /* hops visited (normalised), for loop detection */
    int n_chain;
    int retries;
    int redirect_hop;           /* the next request follows a redirect: not an attempt */
    int has_sha;
    unsigned char want_sha[32];
    CURL *easy;                 /* while in flight */
    unsigned char *buf;         /* 2xx body of the current request */
    size_t len, cap;
    size_t discarded;           /* non-2xx body bytes */
    FetchResponse resp;
    FetchOutcome abort_outcome; /* set by a callback that stopped the transfer */
    int abort_http;             /* stopped reading an error body: judge by the status */
    char abort_reason[200];
    int refused;                /* the address check refused a connection */
    char refused_text[96];
    double submitted, retry_at;
    char errbuf[CURL_ERROR_SIZE];
};

struct Host {
    Host *chain_next;
    uint64_t hash;
    char *name;
    Transfer *head, *tail;      /* queued */
    int in_flight;
    int waiting;                /* transfers in the retry heap */
    double tokens, refilled;
    int in_ready, in_throttle;
};

typedef struct HeapItem {
    double at;
    void *item;
} HeapItem;

typedef struct Heap {
    HeapItem *v;
    size_t n, cap;
} Heap;

struct FetchShare {
    CURLSH *sh;
    pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
};

struct Fetcher {
    FetchOptions o;
    char *user_agent, *token, *ca_file;
    FetchCidr *allow;
    size_t n_allow;
    struct curl_slist *resolve, *headers;
    CURLM *multi;
    int epfd, evfd;
    double timer_at;            /* libcurl's timeout, absolute; < 0 none */
    int woken;                  /* fetcher_wakeup was called: the poll returns */
    Host **buckets;
    size_t n_buckets, n_hosts;
    Host **ready;               /* ring of hosts that may start now */
    size_t ready_head, ready_n, ready_cap;
    Heap throttle, retry;
    Transfer *done_head, *done_tail;
    Transfer *active_head;
    CURL **pool;                /* idle easy handles, configured */
    size_t n_pool;
    size_t queued, active, waiting, done, unfinished;
    FetchStats stats;
    uint64_t rng;
    double last_sweep;
    TfGauge *g_in_flight, *g_queued;
    TfCounter *c_bytes, *c_retries, *c_redirects, *c_outcomes[FETCH_OUTCOME_COUNT];
    TfHistogram *h_seconds;
};

/* ---- small helpers ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_status;

static void curl_init(void)
{
    curl_init_status = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Uniform in [0, 1). */
static double rand01(Fetcher *f)
{
    f->rng ^= f->rng >> 12;
    f->rng ^= f->rng << 25;
    f->rng ^= f->rng >> 27;
    return (double)((f->rng * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}

static int heap_push(Heap *h, double at, void *item)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        HeapItem *v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return -1;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0 && h->v[(i - 1) / 2].at > at) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = (HeapItem){at, item};
    return 0;
}

static void *heap_pop(Heap *h)
{
    void *top = h->v[0].item;
    HeapItem last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->v[c + 1].at < h->v[c].at)
            c++;
        if (h->v[c].at >= last.at)
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n)
        h->v[i] = last;
    return top;
}

/* ---- hosts ---- */

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s)) * 1099511628211ull;
    return h;
}

static int hosts_grow(Fetcher *f)
{
    size_t n = f->n_buckets ? f->n_buckets * 2 : 256;
    Host **b = calloc(n, sizeof *b);
    if (!b)
        return -1;
    for (size_t i = 0; i < f->n_buckets; i++)
        for (Host *h = f->buckets[i], *next; h; h = next) {
            next = h->chain_next;
            h->chain_next = b[h->hash & (n - 1)];
            b[h->hash & (n - 1)] = h;
        }
    free(f->buckets);
    f->buckets = b;
    f->n_buckets = n;
    return 0;
}

/* The entry for host name `name`, created with a full token bucket.
 * Returns NULL when out of memory. */
static Host *host_get(Fetcher *f, const char *name, double now)
{
    uint64_t hash = name_hash(name);
    if (f->n_buckets)
        for (Host *h = f->buckets[hash & (f->n_buckets - 1)]; h; h = h->chain_next)
            if (h->hash == hash && strcasecmp(h->name, name) == 0)
                return h;
    if (f->n_hosts + 1 > f->n_buckets && hosts_grow(f))
        return NULL;
    Host *h = calloc(1, sizeof *h);
    if (!h || !(h->name = strdup(name))) {
        free(h);
        return NULL;
    }
    h->hash = hash;
    h->tokens = f->o.host_burst;
    h->refilled = now;
    size_t b = hash & (f->n_buckets - 1);
    h->chain_next = f->buckets[b];
    f->buckets[b] = h;
    f->n_hosts++;
    return h;
}

static void host_refill(Fetcher *f, Host *h, double now)
{
    if (f->o.host_rate <= 0)
        return;
    h->tokens += (now - h->refilled) * f->o.host_rate;
    if (h->tokens > f->o.host_burst)
        h->tokens = f->o.host_burst;
    h->refilled = now;
}

static int ready_push(Fetcher *f, Host *h)
{
    if (f->ready_n == f->ready_cap) {
        size_t cap = f->ready_cap ? f->ready_cap * 2 : 64;
        Host **v = malloc(cap * sizeof *v);
        if (!v)
            return -1;
        for (size_t i = 0; i < f->ready_n; i++)
            v[i] = f->ready[(f->ready_head + i) % f->ready_cap];
        free(f->ready);
        f->ready = v;
        f->ready_cap = cap;
        f->ready_head = 0;
    }
    f->ready[(f->ready_head + f->ready_n++) % f->ready_cap] = h;
    h->in_ready = 1;
    return 0;
}

/* Puts a host with queued work where the scheduler will find it: the
 * ready ring when it may start a transfer now, the throttle heap when it
 * waits for a token, nowhere when it is at its in-flight cap (a completion
 * brings it back). Out of memory here only delays the host until its next
 * event. */
static void host_update(Fetcher *f, Host *h, double now)
{
    if (!h->head || h->in_flight >= f->o.max_per_host)
        return;
    host_refill(f, h, now);
    if (f->o.host_rate <= 0 || h->tokens >= 1.0) {
        if (!h->in_ready)
            ready_push(f, h);
    } else if (!h->in_throttle) {
        if (heap_push(&f->throttle, now + (1.0 - h->tokens) / f->o.host_rate, h) == 0)
            h->in_throttle = 1;
    }
}

static void host_enqueue(Fetcher *f, Host *h, Transfer *t, int front, double now)
{
    t->host = h;
    if (front) {
        t->next = h->head;
        h->head = t;
        if (!h->tail)
            h->tail = t;
    } else {
        t->next = NULL;
        if (h->tail)
            h->tail->next = t;
        else
            h->head = t;
        h->tail = t;
    }
    f->queued++;
    tf_gauge_add(f->g_queued, 1);
    host_update(f, h, now);
}

static Transfer *host_dequeue(Fetcher *f, Host *h)
{
    Transfer *t = h->head;
    h->head = t->next;
    if (!h->head)
        h->tail = NULL;
    t->next = NULL;
    f->queued--;
    tf_gauge_add(f->g_queued, -1);
    return t;
}

static void host_free(Host *h)
{
    if (h) {
        free(h->name);
        free(h);
    }
}

/* Frees host entries nothing refers to and whose bucket is full again (so
 * forgetting them loses no rate-limit state): a manifest of a million host
 * names does not keep a million entries. */
static void hosts_sweep(Fetcher *f, double now)
{
    f->last_sweep = now;
    for (size_t i = 0; i < f->n_buckets; i++) {
        Host **link = &f->buckets[i];
        while (*link) {
            Host *h = *link;
            host_refill(f, h, now);
            if (!h->head && !h->in_flight && !h->waiting && !h->in_ready && !h->in_throttle &&
                (f->o.host_rate <= 0 || h->tokens >= f->o.host_burst)) {
                *link = h->chain_next;
                host_free(h);
                f->n_hosts--;
            } else {
                link = &h->chain_next;
            }
        }
    }
}

/* ---- transfers: completion ---- */

static void transfer_free(Transfer *t)
{
    if (!t)
        return;
    free(t->url);
    free(t->cur);
    for (int i = 0; i < t->n_chain; i++)
        free(t->chain[i]);
    free(t->chain);
    free(t->buf);
    free(t->r.body);
    free(t->r.content_type);
    free(t);
}

void fetch_result_free(FetchResult *r)
{
    transfer_free((Transfer *)r);
}

/* Replaces tabs and line breaks so a reason prints as one TSV field. */
static void one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20)
            *s = ' ';
}

/* Ends a transfer with `outcome` (the body, when ok, is already in t->r)
 * and moves it to the done list. */
static void complete(Fetcher *f, Transfer *t, FetchOutcome outcome, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void complete(Fetcher *f, Transfer *t, FetchOutcome outcome, const char *fmt, ...)
{
    FetchResult *r = &t->r;
    r->outcome = outcome;
    if ((outcome == FETCH_HTTP_3XX || outcome == FETCH_HTTP_4XX || outcome == FETCH_HTTP_5XX) && r->http_status)
        snprintf(r->label, sizeof r->label, "http_%d", r->http_status);
    else
        snprintf(r->label, sizeof r->label, "%s", fetch_outcome_name(outcome));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof r->reason, fmt, ap);
    va_end(ap);
    one_line(r->reason);
    if (outcome != FETCH_OK) {
        free(r->body);
        r->body = NULL;
        r->body_len = 0;
    }
    free(t->buf);
    t->buf = NULL;
    t->len = t->cap = 0;
    r->final_url = t->cur ? t->cur : t->url;
    r->elapsed_s = tf_now() - t->submitted;
    t->host = NULL;
    t->next = NULL;
    if (f->done_tail)
        f->done_tail->next = t;
    else
        f->done_head = t;
    f->done_tail = t;
    f->done++;
    f->stats.completed++;
    f->stats.outcomes[outcome]++;
    if (outcome == FETCH_OK)
        f->stats.ok++;
    tf_counter_add(f->c_outcomes[outcome], 1);
    tf_histogram_observe(f->h_seconds, r->elapsed_s);
}

/* Judges a complete 2xx body (in t->buf) and completes the transfer. */
static void complete_body(Fetcher *f, Transfer *t, const char *ctype)
{
    FetchResult *r = &t->r;
    r->format = image_format_sniff(t->buf, t->len);
    if (!f->o.any_content && r->format == IMAGE_FORMAT_UNKNOWN) {
        char what[96];
        fetch_describe_bytes(t->buf, t->len, what, sizeof what);
        complete(f, t, FETCH_NOT_IMAGE, "not an image: %s (%zu bytes, Content-Type %s)", what, t->len,
                 ctype && *ctype ? ctype : "none");
        return;
    }
    if (f->o.hash_bodies || t->has_sha) {
        tf_sha256(t->buf, t->len, r->sha256);
        r->has_sha256 = 1;
    }
    if (t->has_sha && memcmp(r->sha256, t->want_sha, 32) != 0) {
        char got[65], want[65];
        tf_hex(r->sha256, 32, got);
        tf_hex(t->want_sha, 32, want);
        complete(f, t, FETCH_HASH_MISMATCH, "SHA-256 %s, expected %s", got, want);
        return;
    }
    if (t->buf && t->cap - t->len > (64u << 10)) {
        unsigned char *fit = realloc(t->buf, t->len ? t->len : 1); /* results may wait in queues: hold no slack */
        if (fit)
            t->buf = fit;
    }
    r->body = t->buf ? t->buf : malloc(1);
    r->body_len = t->len;
    t->buf = NULL;
    if (!r->body) {
        complete(f, t, FETCH_INTERNAL, "out of memory");
        return;
    }
    complete(f, t, FETCH_OK, "%s", "");
}

/* ---- URLs ---- */

typedef struct UrlFacts {
    char *norm;     /* the URL as libcurl writes it back */
    char *host;     /* host name, lower case as libcurl gives it */
    char *scheme;
    char *path;     /* decoded, for file: */
} UrlFacts;

static void url_facts_free(UrlFacts *u)
{
    curl_free(u->norm);
    curl_free(u->host);
    curl_free(u->scheme);
    curl_free(u->path);
    memset(u, 0, sizeof *u);
}

/* Parses `url`. Returns FETCH_OK with *u filled (caller frees), or
 * FETCH_BAD_URL with `why` filled. */
static FetchOutcome url_parse(const char *url, UrlFacts *u, char *why, size_t cap)
{
    memset(u, 0, sizeof *u);
    if (strlen(url) > URL_MAX) {
        snprintf(why, cap, "URL longer than %d bytes", URL_MAX);
        return FETCH_BAD_URL;
    }
    CURLU *h = curl_url();
    if (!h) {
        snprintf(why, cap, "out of memory");
        return FETCH_BAD_URL;
    }
    CURLUcode rc = curl_url_set(h, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (rc == CURLUE_OK)
        rc = curl_url_get(h, CURLUPART_SCHEME, &u->scheme, 0);
    if (rc == CURLUE_OK)
        rc = curl_url_get(h, CURLUPART_URL, &u->norm, 0);
    if (rc == CURLUE_OK && curl_url_get(h, CURLUPART_HOST, &u->host, 0) != CURLUE_OK)
        u->host = NULL;
    if (rc == CURLUE_OK && curl_url_get(h, CURLUPART_PATH, &u->path, CURLU_URLDECODE) != CURLUE_OK)
        u->path = NULL;
    curl_url_cleanup(h);
    if (rc != CURLUE_OK) {
        snprintf(why, cap, "bad URL: %s", curl_url_strerror(rc));
        url_facts_free(u);
        return FETCH_BAD_URL;
    }
    return FETCH_OK;
}

static int scheme_is_http(const char *scheme)
{
    return scheme && (!strcasecmp(scheme, "http") || !strcasecmp(scheme, "https"));
}

/* Reads a local file into the transfer and completes it. */
static void read_local(Fetcher *f, Transfer *t, const char *path)
{
    t->r.attempts = 1;
    t->r.queued_s = tf_now() - t->submitted;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        complete(f, t, FETCH_READ, "%s: %s", path, strerror(e));
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        complete(f, t, FETCH_READ, "%s: not a regular file", path);
        return;
    }
    if ((uint64_t)st.st_size > f->o.max_bytes) {
        close(fd);
        complete(f, t, FETCH_TOO_LARGE, "%s: %lld bytes, above the %llu byte cap", path, (long long)st.st_size,
                 (unsigned long long)f->o.max_bytes);
        return;
    }
    size_t size = (size_t)st.st_size, got = 0;
    t->buf = malloc(size ? size : 1);
    if (!t->buf) {
        close(fd);
        complete(f, t, FETCH_INTERNAL, "out of memory for %zu bytes", size);
        return;
    }
    while (got < size) {
        ssize_t n = read(fd, t->buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            close(fd);
            complete(f, t, FETCH_READ, "%s: %s", path, n < 0 ? strerror(e) : "file shrank while reading");
            return;
        }
        got += (size_t)n;
    }
    close(fd);
    t->len = size;
    t->r.bytes = size;
    f->stats.bytes += size;
    tf_counter_add(f->c_bytes, size);
    complete_body(f, t, NULL);
}

/* ---- transfers: libcurl callbacks ---- */

static int status_ok(int status)
{
    return status >= 200 && status < 300;
}

/* Every header line of every response (redirects and 1xx included). At
 * the end of a 2xx block: an opt-out or a declared length above the cap
 * stops the transfer before any body byte (returning 0 makes libcurl
 * abort it). */
static size_t on_header(char *line, size_t size, size_t n, void *ud)
{
    Transfer *t = ud;
    Fetcher *f = t->f;
    size_t len = size * n;
    if (!fetch_response_header(&t->resp, line, len, f->token, !f->o.ignore_robots, time(NULL)))
        return len;
    if (!status_ok(t->resp.status))
        return len;
    if (t->resp.opted_out) {
        t->abort_outcome = FETCH_OPTED_OUT;
        snprintf(t->abort_reason, sizeof t->abort_reason, "X-Robots-Tag: %s", t->resp.robots);
        return 0;
    }
    int64_t cl = t->resp.content_length;
    if (cl >= 0 && (uint64_t)cl > f->o.max_bytes) {
        t->abort_outcome = FETCH_TOO_LARGE;
        snprintf(t->abort_reason, sizeof t->abort_reason, "Content-Length %lld above the %llu byte cap",
                 (long long)cl, (unsigned long long)f->o.max_bytes);
        return 0;
    }
    if (cl > 0 && (size_t)cl > t->cap) {
        size_t want = (size_t)cl < PREALLOC_MAX ? (size_t)cl : PREALLOC_MAX;
        unsigned char *b = want > t->cap ? realloc(t->buf, want) : t->buf;
        if (b) {
            t->buf = b;
            t->cap = want > t->cap ? want : t->cap;
        }
    }
    return len;
}

/* Body bytes. A 2xx body is kept up to max_bytes (one byte more stops the
 * transfer: nothing larger is ever buffered); other bodies are read a
 * little, for connection reuse, then dropped. */
static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    Transfer *t = ud;
    Fetcher *f = t->f;
    size_t len = size * n;
    if (!status_ok(t->resp.status)) {
        t->discarded += len;
        if (t->discarded > ERROR_BODY_MAX) {
            t->abort_http = 1;
            return 0;
        }
        return len;
    }
    t->r.bytes += len;
    f->stats.bytes += len;
    tf_counter_add(f->c_bytes, len);
    if (len > f->o.max_bytes - t->len) {
        t->abort_outcome = FETCH_TOO_LARGE;
        snprintf(t->abort_reason, sizeof t->abort_reason, "body above the %llu byte cap (stopped after %zu bytes)",
                 (unsigned long long)f->o.max_bytes, t->len + len);
        return 0;
    }
    if (t->len + len > t->cap) {
        size_t cap = t->cap ? t->cap : 64u << 10;
        while (cap < t->len + len)
            cap = cap > SIZE_MAX / 2 ? t->len + len : cap * 2;
        if (cap > f->o.max_bytes)
            cap = (size_t)f->o.max_bytes;
        unsigned char *b = realloc(t->buf, cap);
        if (!b) {
            t->abort_outcome = FETCH_INTERNAL;
            snprintf(t->abort_reason, sizeof t->abort_reason, "out of memory for a %zu byte body", cap);
            return 0;
        }
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, data, len);
    t->len += len;
    return len;
}

/* libcurl is about to connect to `addr` (DNS already resolved, any hop):
 * refuse destinations of the private kinds unless allowed. */
static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *addr)
{
    Transfer *t = ud;
    Fetcher *f = t->f;
    if (purpose == CURLSOCKTYPE_IPCXN && !f->o.allow_private_networks) {
        const char *kind = fetch_address_kind(&addr->addr);
        if (kind && !fetch_cidrs_match(f->allow, f->n_allow, &addr->addr)) {
            char ip[64];
            fetch_address_text(&addr->addr, ip, sizeof ip);
            t->refused = 1;
            snprintf(t->refused_text, sizeof t->refused_text, "%s (%s)", ip, kind);
            return CURL_SOCKET_BAD;
        }
    }
    return socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *ud, void *socketp)
{
    Fetcher *f = ud;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(f->epfd, EPOLL_CTL_DEL, s, NULL); /* may already be gone with a closed socket */
        return 0;
    }
    struct epoll_event ev = {0};
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
    ev.data.fd = s;
    if (epoll_ctl(f->epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
        epoll_ctl(f->epfd, EPOLL_CTL_ADD, s, &ev);
    return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *ud)
{
    Fetcher *f = ud;
    f->timer_at = timeout_ms < 0 ? -1.0 : tf_now() + (double)timeout_ms / 1000.0;
    return 0;
}

/* An easy handle with everything that is the same for every transfer. */
static CURL *easy_new(Fetcher *f)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    int bad = 0;
#define SET(opt, val) bad |= curl_easy_setopt(e, opt, val) != CURLE_OK
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_USERAGENT, f->user_agent);
    SET(CURLOPT_HTTPHEADER, f->headers);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)(f->o.connect_timeout_s * 1000));
    SET(CURLOPT_TIMEOUT_MS, (long)(f->o.timeout_s * 1000));
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    SET(CURLOPT_PIPEWAIT, 1L);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    if (f->ca_file)
        SET(CURLOPT_CAINFO, f->ca_file);
    SET(CURLOPT_PROXY, ""); /* no proxy from the environment: the address check must see the destination */
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    SET(CURLOPT_DNS_CACHE_TIMEOUT, f->o.dns_cache_s);
    if (f->resolve)
        SET(CURLOPT_RESOLVE, f->resolve);
    if (f->o.share)
        SET(CURLOPT_SHARE, f->o.share->sh);
#undef SET
    if (bad) {
        curl_easy_cleanup(e);
        return NULL;
    }
    return e;
}

/* ---- transfers: starting and finishing requests ---- */

/* Starts the transfer's next request (its host accounting included). */
static void transfer_start(Fetcher *f, Transfer *t, double now)
{
    CURL *e = f->n_pool ? f->pool[--f->n_pool] : easy_new(f);
    if (!e) {
        complete(f, t, FETCH_INTERNAL, "could not set up a libcurl handle");
        return;
    }
    if (t->r.attempts == 0)
        t->r.queued_s = now - t->submitted;
    if (!t->redirect_hop)
        t->r.attempts++;
    t->redirect_hop = 0;
    fetch_response_reset(&t->resp);
    t->len = 0;
    t->discarded = 0;
    t->abort_outcome = FETCH_OK;
    t->abort_http = 0;
    t->refused = 0;
    t->errbuf[0] = 0;
    curl_easy_setopt(e, CURLOPT_URL, t->cur);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    CURLMcode mc = curl_multi_add_handle(f->multi, e);
    if (mc != CURLM_OK) {
        curl_easy_cleanup(e);
        complete(f, t, FETCH_INTERNAL, "libcurl: %s", curl_multi_strerror(mc));
        return;
    }
    t->easy = e;
    t->aprev = NULL;
    t->anext = f->active_head;
    if (f->active_head)
        f->active_head->aprev = t;
    f->active_head = t;
    t->host->in_flight++;
    f->active++;
    tf_gauge_add(f->g_in_flight, 1);
}

/* Schedules another attempt of the current hop after a backoff, or
 * returns 0 (with *why saying so when Retry-After was too long) when the
 * retries are spent. */
static int retry_later(Fetcher *f, Transfer *t, double now, char *why, size_t cap)
{
    if (t->retries >= f->o.max_retries)
        return 0;
    double delay;
    if (t->resp.retry_after_s >= 0 && (t->r.http_status == 429 || t->r.http_status >= 500)) {
        if (t->resp.retry_after_s > f->o.retry_max_s) {
            snprintf(why, cap, "; Retry-After %.0f s is above the %.0f s bound", t->resp.retry_after_s,
                     f->o.retry_max_s);
            return 0;
        }
        delay = t->resp.retry_after_s;
    } else {
        delay = f->o.retry_base_s * ldexp(1.0, t->retries) * (0.5 + 0.5 * rand01(f));
        if (delay > f->o.retry_max_s)
            delay = f->o.retry_max_s;
    }
    if (heap_push(&f->retry, now + delay, t) != 0)
        return 0;
    t->retries++;
    t->retry_at = now + delay;
    t->host->waiting++;
    f->waiting++;
    f->stats.retries++;
    tf_counter_add(f->c_retries, 1);
    return 1;
}

static int chain_has(const Transfer *t, const char *url)
{
    for (int i = 0; i < t->n_chain; i++)
        if (strcmp(t->chain[i], url) == 0)
            return 1;
    return 0;
}

static int chain_add(Transfer *t, char *url)
{
    char **c = realloc(t->chain, (size_t)(t->n_chain + 1) * sizeof *c);
    if (!c)
        return -1;
    t->chain = c;
    t->chain[t->n_chain++] = url;
    return 0;
}

/* Follows a redirect to `to` (absolute, from libcurl): checks, then
 * queues the hop at the front of its host's queue. */
static void follow(Fetcher *f, Transfer *t, const char *to, double now)
{
    char why[200];
    if (t->r.redirects >= f->o.max_redirects) {
        complete(f, t, FETCH_TOO_MANY_REDIRECTS, "more than %d redirects (the next to %.160s)", f->o.max_redirects, to);
        return;
    }
    UrlFacts u;
    if (url_parse(to, &u, why, sizeof why) != FETCH_OK) {
        complete(f, t, FETCH_BAD_URL, "redirect to %.120s: %s", to, why);
        return;
    }
    if (!scheme_is_http(u.scheme)) {
        complete(f, t, FETCH_FORBIDDEN_SCHEME, "redirect to %s: (only http and https are followed)", u.scheme);
        url_facts_free(&u);
        return;
    }
    if (chain_has(t, u.norm)) {
        complete(f, t, FETCH_REDIRECT_LOOP, "redirect from %.100s back to %.100s (after %d hops)", t->cur, u.norm,
                 t->r.redirects + 1);
        url_facts_free(&u);
        return;
    }
    char *norm = strdup(u.norm), *cur = strdup(u.norm);
    Host *h = u.host ? host_get(f, u.host, now) : NULL;
    url_facts_free(&u);
    if (!norm || !cur || !h || chain_add(t, norm) != 0) {
        free(norm);
        free(cur);
        complete(f, t, FETCH_INTERNAL, "out of memory following a redirect");
        return;
    }
    free(t->cur);
    t->cur = cur;
    t->r.redirects++;
    t->redirect_hop = 1;
    f->stats.redirects++;
    tf_counter_add(f->c_redirects, 1);
    host_enqueue(f, h, t, 1, now);
}

static double us(curl_off_t v)
{
    return (double)v / 1e6;
}

static FetchOutcome curl_class(CURLcode res, const char *errbuf, int *retry)
{
    *retry = 0;
    switch (res) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return FETCH_DNS;
    case CURLE_COULDNT_CONNECT:
        return FETCH_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        if (strncmp(errbuf, "Resolving timed out", 19) == 0)
            return FETCH_DNS;
        *retry = 1;
        return FETCH_TIMEOUT;
    case CURLE_PARTIAL_FILE:
        return FETCH_TRUNCATED;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        *retry = 1;
        return FETCH_NETWORK;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_UNSUPPORTED_PROTOCOL: /* schemes are checked before libcurl: this is a reply as HTTP/0.9 */
        return FETCH_NETWORK;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_USE_SSL_FAILED:
        return FETCH_TLS;
    case CURLE_URL_MALFORMAT:
        return FETCH_BAD_URL;
    case CURLE_FILESIZE_EXCEEDED:
        return FETCH_TOO_LARGE;
    default:
        return FETCH_INTERNAL;
    }
}

/* A request ended (libcurl's CURLMSG_DONE): judge it, then complete the
 * transfer, retry it, or follow its redirect. */
static void transfer_done(Fetcher *f, Transfer *t, CURLcode res, double now)
{
    CURL *e = t->easy;
    FetchResult *r = &t->r;
    long code = 0, version = 0;
    curl_off_t dns = 0, conn = 0, tls = 0, ttfb = 0, total = 0;
    char *redirect = NULL;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &version);
    curl_easy_getinfo(e, CURLINFO_NAMELOOKUP_TIME_T, &dns);
    curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &conn);
    curl_easy_getinfo(e, CURLINFO_APPCONNECT_TIME_T, &tls);
    curl_easy_getinfo(e, CURLINFO_STARTTRANSFER_TIME_T, &ttfb);
    curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &total);
    curl_easy_getinfo(e, CURLINFO_REDIRECT_URL, &redirect);
    char *to = redirect ? strdup(redirect) : NULL; /* the handle goes back to the pool below */
    r->http_status = (int)code;
    r->http_version = version == CURL_HTTP_VERSION_1_0 ? 10 : version == CURL_HTTP_VERSION_1_1 ? 11
                    : version == CURL_HTTP_VERSION_2_0 ? 20 : version == CURL_HTTP_VERSION_3 ? 30 : 0;
    r->dns_s = us(dns);
    r->connect_s = us(conn);
    r->tls_s = us(tls);
    r->ttfb_s = us(ttfb);
    r->transfer_s = us(total);
    free(r->content_type);
    r->content_type = t->resp.content_type[0] ? strdup(t->resp.content_type) : NULL;

    curl_multi_remove_handle(f->multi, e);
    t->easy = NULL;
    f->pool[f->n_pool++] = e;
    if (t->aprev)
        t->aprev->anext = t->anext;
    else
        f->active_head = t->anext;
    if (t->anext)
        t->anext->aprev = t->aprev;
    t->aprev = t->anext = NULL;
    Host *h = t->host;
    h->in_flight--;
    f->active--;
    tf_gauge_add(f->g_in_flight, -1);

    char extra[160] = "";
    if (t->refused && res == CURLE_COULDNT_CONNECT) {
        complete(f, t, FETCH_PRIVATE_ADDRESS, "%.120s resolves to %s: refused (--allow-private-networks allows it)",
                 t->cur, t->refused_text);
    } else if (t->abort_outcome != FETCH_OK) {
        complete(f, t, t->abort_outcome, "%s", t->abort_reason);
    } else if (res == CURLE_OK || t->abort_http) {
        int s = r->http_status;
        if (status_ok(s)) {
            complete_body(f, t, r->content_type);
        } else if (s >= 300 && s < 400 && to && s != 304) {
            follow(f, t, to, now);
        } else if (s >= 300 && s < 400) {
            complete(f, t, FETCH_HTTP_3XX, "HTTP %d without a Location to follow", s);
        } else if (s == 429 || s >= 500) {
            if (!retry_later(f, t, now, extra, sizeof extra))
                complete(f, t, s == 429 ? FETCH_HTTP_4XX : FETCH_HTTP_5XX, "HTTP %d after %d attempt%s%s", s,
                         r->attempts, r->attempts == 1 ? "" : "s", extra);
        } else if (s >= 400) {
            complete(f, t, FETCH_HTTP_4XX, "HTTP %d", s);
        } else {
            complete(f, t, FETCH_NETWORK, "unexpected HTTP status %d", s);
        }
    } else {
        int retry;
        FetchOutcome o = curl_class(res, t->errbuf, &retry);
        if (!retry || !retry_later(f, t, now, extra, sizeof extra))
            complete(f, t, o, "%s (%d attempt%s)", t->errbuf[0] ? t->errbuf : curl_easy_strerror(res), r->attempts,
                     r->attempts == 1 ? "" : "s");
    }
    free(to);
    host_update(f, h, now);
}

/* ---- the scheduler and the event loop ---- */

static int stopped(const Fetcher *f)
{
    return tf_stop_requested(f->o.stop);
}

/* Starts what may start now: due retries and throttled hosts rejoin the
 * ready ring, then hosts take turns until `concurrency` is in flight. */
static void schedule(Fetcher *f)
{
    if (stopped(f))
        return;
    double now = tf_now();
    while (f->retry.n && f->retry.v[0].at <= now) {
        Transfer *t = heap_pop(&f->retry);
        t->host->waiting--;
        f->waiting--;
        host_enqueue(f, t->host, t, 1, now);
    }
    while (f->throttle.n && f->throttle.v[0].at <= now) {
        Host *h = heap_pop(&f->throttle);
        h->in_throttle = 0;
        host_update(f, h, now);
    }
    while (f->active < (size_t)f->o.concurrency && f->ready_n) {
        Host *h = f->ready[f->ready_head];
        f->ready_head = (f->ready_head + 1) % f->ready_cap;
        f->ready_n--;
        h->in_ready = 0;
        if (!h->head || h->in_flight >= f->o.max_per_host)
            continue;
        host_refill(f, h, now);
        if (f->o.host_rate > 0) {
            if (h->tokens < 1.0) {
                host_update(f, h, now);
                continue;
            }
            h->tokens -= 1.0;
        }
        transfer_start(f, host_dequeue(f, h), now);
        host_update(f, h, now);
    }
    if (f->n_hosts > 1024 && now - f->last_sweep > 1.0)
        hosts_sweep(f, now);
}

static void read_done(Fetcher *f)
{
    CURLMsg *m;
    int left;
    double now = tf_now();
    while ((m = curl_multi_info_read(f->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        Transfer *t = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        CURLcode res = m->data.result; /* m is invalid after remove_handle */
        transfer_done(f, t, res, now);
    }
}

/* Waits up to wait_ms for socket events or libcurl's timer and lets
 * libcurl act on them. Returns 0, or -1 when epoll failed. */
static int drive(Fetcher *f, int wait_ms, TfError *err)
{
    struct epoll_event ev[256];
    int running = 0;
    int n = epoll_wait(f->epfd, ev, 256, wait_ms);
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        return tf_fail(err, "fetch: epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++) {
        if (ev[i].data.fd == f->evfd) {
            uint64_t v;
            ssize_t got = read(f->evfd, &v, sizeof v);
            (void)got;
            f->woken = 1;
            continue;
        }
        int flags = (ev[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) | (ev[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                    (ev[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
        curl_multi_socket_action(f->multi, ev[i].data.fd, flags, &running);
    }
    if (f->timer_at >= 0 && tf_now() >= f->timer_at) {
        f->timer_at = -1;
        curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    read_done(f);
    return 0;
}

static int ms_until(double at, double now)
{
    double ms = ceil((at - now) * 1000.0);
    return ms <= 0 ? 0 : ms > WAKE_MS ? WAKE_MS : (int)ms;
}

int fetcher_poll(Fetcher *f, int timeout_ms, FetchResult **out, size_t cap, TfError *err)
{
    double deadline = tf_now() + (timeout_ms > 0 ? timeout_ms : 0) / 1000.0;
    for (;;) {
        if (f->done >= cap)
            break; /* enough to hand out: read no more until the caller takes them (bounds held bodies) */
        schedule(f);
        double now = tf_now();
        int wait = f->done_head ? 0 : ms_until(deadline, now);
        if (f->timer_at >= 0 && ms_until(f->timer_at, now) < wait)
            wait = ms_until(f->timer_at, now);
        if (!stopped(f) && f->active < (size_t)f->o.concurrency) {
            if (f->retry.n && ms_until(f->retry.v[0].at, now) < wait)
                wait = ms_until(f->retry.v[0].at, now);
            if (f->throttle.n && ms_until(f->throttle.v[0].at, now) < wait)
                wait = ms_until(f->throttle.v[0].at, now);
        }
        int idle = f->active == 0 && f->queued == 0 && f->waiting == 0;
        if (idle || (f->active == 0 && f->timer_at < 0 && stopped(f)))
            wait = 0; /* nothing can arrive */
        if (drive(f, wait, err) != 0)
            return -1;
        schedule(f);
        idle = f->active == 0 && f->queued == 0 && f->waiting == 0;
        if (f->done_head || stopped(f) || idle || f->woken || tf_now() >= deadline)
            break;
    }
    f->woken = 0;
    size_t n = 0;
    while (n < cap && f->done_head) {
        Transfer *t = f->done_head;
        f->done_head = t->next;
        if (!f->done_head)
            f->done_tail = NULL;
        t->next = NULL;
        f->done--;
        f->unfinished--;
        out[n++] = &t->r;
    }
    return (int)n;
}

/* ---- the public object ---- */

void fetch_options_init(FetchOptions *o)
{
    memset(o, 0, sizeof *o);
    o->concurrency = 64;
    o->max_per_host = 8;
    o->host_rate = 0;
    o->host_burst = 0;
    o->connect_timeout_s = 10;
    o->timeout_s = 30;
    o->max_retries = 2;
    o->retry_base_s = 1;
    o->retry_max_s = 60;
    o->max_redirects = 5;
    o->max_bytes = 64ull << 20;
    o->dns_cache_s = 300;
}

/* "transfuse/0.1.0 (...)" -> "transfuse". */
static char *product_token(const char *ua)
{
    size_t n = 0;
    while (ua[n] && ua[n] != '/' && ua[n] != ' ')
        n++;
    char *s = strndup(ua, n);
    for (char *p = s; p && *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p += 32;
    return s;
}

Fetcher *fetcher_new(const FetchOptions *opts, TfError *err)
{
    FetchOptions o = *opts;
    if (o.concurrency < 1 || o.concurrency > 100000)
        return tf_fail(err, "fetch: concurrency %d outside 1..100000", o.concurrency), NULL;
    if (o.max_per_host < 1)
        return tf_fail(err, "fetch: max_per_host must be at least 1"), NULL;
    if (o.host_rate < 0 || o.host_burst < 0 || !(o.timeout_s > 0) || !(o.connect_timeout_s > 0) ||
        o.max_retries < 0 || o.max_redirects < 0 || o.retry_base_s < 0 || o.retry_max_s < 0 || o.max_bytes == 0 ||
        o.max_bytes > SIZE_MAX / 2)
        return tf_fail(err, "fetch: a rate, timeout, retry, redirect or size option is out of range"), NULL;
    if (o.host_rate > 0 && o.host_burst < 1)
        o.host_burst = o.host_rate < 1 ? 1 : o.host_rate;
    pthread_once(&curl_once, curl_init);
    if (curl_init_status != CURLE_OK)
        return tf_fail(err, "fetch: libcurl: %s", curl_easy_strerror(curl_init_status)), NULL;

    Fetcher *f = calloc(1, sizeof *f);
    if (!f)
        return tf_fail(err, "out of memory"), NULL;
    f->epfd = f->evfd = -1;
    f->timer_at = -1;
    f->o = o;
    char ua[160];
    snprintf(ua, sizeof ua, "transfuse/%s (+honours X-Robots-Tag noai)", TF_VERSION_STRING);
    f->user_agent = strdup(o.user_agent ? o.user_agent : ua);
    f->token = o.robots_token ? strdup(o.robots_token) : f->user_agent ? product_token(f->user_agent) : NULL;
    f->ca_file = dup_or_null(o.ca_file);
    f->o.user_agent = f->o.robots_token = f->o.ca_file = f->o.allow_addresses = NULL;
    f->o.resolve = NULL;
    f->o.n_resolve = 0;
    f->pool = calloc((size_t)o.concurrency, sizeof *f->pool);
    f->headers = curl_slist_append(NULL, "Accept: image/jpeg,image/png,image/webp,image/*;q=0.8,*/*;q=0.5");
    if (!f->user_agent || !f->token || (o.ca_file && !f->ca_file) || !f->pool || !f->headers) {
        tf_fail(err, "out of memory");
        goto fail;
    }
    if (fetch_cidrs_parse(o.allow_addresses, &f->allow, &f->n_allow, err) != 0) {
        tf_fail_context(err, "fetch: allow_addresses");
        goto fail;
    }
    for (size_t i = 0; i < o.n_resolve; i++) {
        struct curl_slist *l = curl_slist_append(f->resolve, o.resolve[i]);
        if (!l) {
            tf_fail(err, "out of memory");
            goto fail;
        }
        f->resolve = l;
    }
    f->rng = o.seed ? o.seed : (uint64_t)(tf_now() * 1e9) ^ (uint64_t)(uintptr_t)f;
    if (!f->rng)
        f->rng = 1;
    f->epfd = epoll_create1(EPOLL_CLOEXEC);
    f->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (f->epfd < 0 || f->evfd < 0) {
        tf_fail(err, "fetch: epoll/eventfd: %s", strerror(errno));
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = f->evfd};
    if (epoll_ctl(f->epfd, EPOLL_CTL_ADD, f->evfd, &ev) != 0) {
        tf_fail(err, "fetch: epoll_ctl: %s", strerror(errno));
        goto fail;
    }
    f->multi = curl_multi_init();
    if (!f->multi) {
        tf_fail(err, "fetch: curl_multi_init failed");
        goto fail;
    }
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(f->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o.max_per_host);
    curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, (long)(o.concurrency < 16 ? 16 : o.concurrency));
    f->g_in_flight = tf_gauge("transfuse_fetch_in_flight", "Fetch requests in flight", NULL);
    f->g_queued = tf_gauge("transfuse_fetch_queued", "URLs waiting in the fetcher's host queues", NULL);
    f->c_bytes = tf_counter("transfuse_fetch_bytes_total", "Body bytes received by the fetcher", NULL);
    f->c_retries = tf_counter("transfuse_fetch_retries_total", "Fetch retries scheduled", NULL);
    f->c_redirects = tf_counter("transfuse_fetch_redirects_total", "Redirects followed", NULL);
    for (int i = 0; i < FETCH_OUTCOME_COUNT; i++)
        f->c_outcomes[i] = tf_counter("transfuse_fetch_outcomes_total", "Fetched URLs by outcome class", "outcome",
                                      fetch_outcome_name((FetchOutcome)i), NULL);
    f->h_seconds = tf_histogram("transfuse_fetch_seconds", "Submit to outcome, per URL", TF_SECONDS_BUCKETS,
                                TF_SECONDS_BUCKETS_N, NULL);
    return f;
fail:
    fetcher_free(f);
    return NULL;
}

void fetcher_free(Fetcher *f)
{
    if (!f)
        return;
    /* In flight: every active easy handle is attached to a transfer. */
    for (size_t b = 0; b < f->n_buckets; b++)
        for (Host *h = f->buckets[b]; h; h = h->chain_next)
            for (Transfer *t = h->head, *next; t; t = next) {
                next = t->next;
                tf_gauge_add(f->g_queued, -1);
                transfer_free(t);
            }
    for (Transfer *t = f->active_head, *next; t; t = next) {
        next = t->anext;
        curl_multi_remove_handle(f->multi, t->easy);
        curl_easy_cleanup(t->easy);
        tf_gauge_add(f->g_in_flight, -1);
        transfer_free(t);
    }
    for (size_t i = 0; i < f->retry.n; i++)
        transfer_free(f->retry.v[i].item);
    for (Transfer *t = f->done_head, *next; t; t = next) {
        next = t->next;
        transfer_free(t);
    }
    free(f->retry.v);
    free(f->throttle.v);
    free(f->ready);
    for (size_t b = 0; b < f->n_buckets; b++)
        for (Host *h = f->buckets[b], *next; h; h = next) {
            next = h->chain_next;
            host_free(h);
        }
    free(f->buckets);
    for (size_t i = 0; i < f->n_pool; i++)
        curl_easy_cleanup(f->pool[i]);
    free(f->pool);
    if (f->multi)
        curl_multi_cleanup(f->multi);
    curl_slist_free_all(f->resolve);
    curl_slist_free_all(f->headers);
    if (f->epfd >= 0)
        close(f->epfd);
    if (f->evfd >= 0)
        close(f->evfd);
    free(f->allow);
    free(f->user_agent);
    free(f->token);
    free(f->ca_file);
    free(f);
}

int fetcher_submit(Fetcher *f, const char *url, const unsigned char *sha256, void *user, TfError *err)
{
    if (!url)
        return tf_fail(err, "fetch: no URL");
    double now = tf_now();
    Transfer *t = calloc(1, sizeof *t);
    if (!t || !(t->url = strdup(url))) {
        free(t);
        return tf_fail(err, "out of memory");
    }
    t->f = f;
    t->r.user = user;
    t->r.url = t->url;
    t->r.final_url = t->url;
    t->submitted = now;
    if (sha256) {
        t->has_sha = 1;
        memcpy(t->want_sha, sha256, 32);
    }
    f->unfinished++;
    f->stats.submitted++;
    if (url[0] == '/') {
        if (f->o.allow_file)
            read_local(f, t, url);
        else
            complete(f, t, FETCH_FORBIDDEN_SCHEME, "a local path (only http and https URLs are fetched)");
        return 0;
    }
    UrlFacts u;
    char why[200];
    if (url_parse(url, &u, why, sizeof why) != FETCH_OK) {
        complete(f, t, FETCH_BAD_URL, "%s", why);
        return 0;
    }
    if (!strcasecmp(u.scheme, "file")) {
        if (!f->o.allow_file)
            complete(f, t, FETCH_FORBIDDEN_SCHEME, "file:// (only http and https URLs are fetched)");
        else if (u.host && *u.host && strcasecmp(u.host, "localhost"))
            complete(f, t, FETCH_BAD_URL, "file:// URL on another host (%.80s)", u.host);
        else
            read_local(f, t, u.path ? u.path : "");
    } else if (!scheme_is_http(u.scheme)) {
        complete(f, t, FETCH_FORBIDDEN_SCHEME, "%.20s:// (only http and https URLs are fetched)", u.scheme);
    } else if (!u.host || !*u.host) {
        complete(f, t, FETCH_BAD_URL, "no host in the URL");
    } else {
        char *norm = strdup(u.norm);
        Host *h = host_get(f, u.host, now);
        if (!norm || !h || !(t->cur = strdup(u.norm)) || chain_add(t, norm) != 0) {
            free(norm);
            url_facts_free(&u);
            f->unfinished--;
            f->stats.submitted--;
            transfer_free(t);
            return tf_fail(err, "out of memory");
        }
        host_enqueue(f, h, t, 0, now);
    }
    url_facts_free(&u);
    return 0;
}

size_t fetcher_unfinished(const Fetcher *f)
{
    return f->unfinished;
}

void fetcher_wakeup(Fetcher *f)
{
    uint64_t one = 1;
    ssize_t n = write(f->evfd, &one, sizeof one);
    (void)n;
}

void fetcher_stats(const Fetcher *f, FetchStats *s)
{
    *s = f->stats;
    s->queued = f->queued;
    s->in_flight = f->active;
    s->waiting_retry = f->waiting;
    s->done = f->done;
    s->hosts = f->n_hosts;
}

/* ---- shared caches ---- */

static void share_lock(CURL *handle, curl_lock_data data, curl_lock_access access, void *ud)
{
    FetchShare *s = ud;
    pthread_mutex_lock(&s->locks[data]);
}

static void share_unlock(CURL *handle, curl_lock_data data, void *ud)
{
    FetchShare *s = ud;
    pthread_mutex_unlock(&s->locks[data]);
}

FetchShare *fetch_share_new(TfError *err)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_status != CURLE_OK)
        return tf_fail(err, "fetch: libcurl: %s", curl_easy_strerror(curl_init_status)), NULL;
    FetchShare *s = calloc(1, sizeof *s);
    if (!s)
        return tf_fail(err, "out of memory"), NULL;
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&s->locks[i], NULL);
    s->sh = curl_share_init();
    /* Connections are not shared: libcurl documents sharing them across
     * threads as unsafe, and each fetcher's multi handle already reuses
     * its own. */
    if (!s->sh || curl_share_setopt(s->sh, CURLSHOPT_LOCKFUNC, share_lock) != CURLSHE_OK ||
        curl_share_setopt(s->sh, CURLSHOPT_UNLOCKFUNC, share_unlock) != CURLSHE_OK ||
        curl_share_setopt(s->sh, CURLSHOPT_USERDATA, s) != CURLSHE_OK ||
        curl_share_setopt(s->sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
        curl_share_setopt(s->sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
        fetch_share_free(s);
        return tf_fail(err, "fetch: could not set up a libcurl share"), NULL;
    }
    return s;
}

void fetch_share_free(FetchShare *s)
{
    if (!s)
        return;
    if (s->sh)
        curl_share_cleanup(s->sh);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&s->locks[i]);
    free(s);
}
