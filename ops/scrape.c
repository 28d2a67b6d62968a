/* scrape.c: fetching metrics endpoints with libcurl's multi interface, in
 * the shape of curl's 10-at-a-time example: prime up to N transfers,
 * perform, collect the finished ones, add the next, poll. Every transfer
 * has a connect and a total timeout and a byte cap, follows no redirects
 * and speaks only http(s): an endpoint is untrusted input. */
#include "ops.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#define SCRAPE_PARALLEL 32

typedef struct Transfer {
    OpsScrape *item;
    size_t max_bytes;
    size_t cap;
    int too_big;
    double started;
    struct curl_slist *headers;
} Transfer;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_ok;

static void curl_init_once(void)
{
    curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

static size_t scrape_write(char *data, size_t size, size_t nmemb, void *userp)
{
    Transfer *t = userp;
    OpsScrape *it = t->item;
    size_t n = size * nmemb;
    if (n > t->max_bytes - it->len) {
        t->too_big = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (it->len + n + 1 > t->cap) {
        size_t nc = t->cap ? t->cap : 16384;
        while (nc < it->len + n + 1)
            nc *= 2;
        char *nb = realloc(it->body, nc);
        if (!nb)
            return 0;
        it->body = nb;
        t->cap = nc;
    }
    memcpy(it->body + it->len, data, n);
    it->len += n;
    it->body[it->len] = 0;
    return n;
}

static CURL *scrape_easy(Transfer *t, int timeout_ms)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    t->headers = curl_slist_append(NULL, "Accept: text/plain;version=0.0.4");
    curl_easy_setopt(e, CURLOPT_URL, t->item->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, scrape_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms < 2000 ? timeout_ms : 2000));
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "transfuse-top/" TF_VERSION_STRING);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    /* A declared length above the cap fails before any body arrives. */
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)t->max_bytes);
    return e;
}

static void scrape_finish(Transfer *t, CURL *e, CURLcode rc)
{
    OpsScrape *it = t->item;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &it->status);
    it->seconds = tf_now() - t->started;
    if (t->too_big || rc == CURLE_FILESIZE_EXCEEDED)
        snprintf(it->error, sizeof it->error, "response larger than %zu bytes", t->max_bytes);
    else if (rc != CURLE_OK)
        snprintf(it->error, sizeof it->error, "%s", curl_easy_strerror(rc));
    else if (it->status < 200 || it->status > 299)
        snprintf(it->error, sizeof it->error, "HTTP status %ld", it->status);
    if (it->error[0]) {
        free(it->body);
        it->body = NULL;
        it->len = 0;
    } else if (!it->body) {
        it->body = calloc(1, 1); /* an empty answer is an empty document */
        if (!it->body)
            snprintf(it->error, sizeof it->error, "out of memory");
    }
}

int ops_scrape(OpsScrape *items, size_t n, int timeout_ms, size_t max_bytes, TfError *err)
{
    pthread_once(&curl_once, curl_init_once);
    if (!curl_ok)
        return tf_fail(err, "libcurl could not be initialised");
    for (size_t i = 0; i < n; i++) {
        free(items[i].body);
        items[i].body = NULL;
        items[i].len = 0;
        items[i].status = 0;
        items[i].seconds = 0;
        items[i].error[0] = 0;
    }
    if (!n)
        return 0;
    Transfer *ts = calloc(n, sizeof *ts);
    CURLM *m = curl_multi_init();
    if (!ts || !m) {
        free(ts);
        if (m)
            curl_multi_cleanup(m);
        return tf_fail(err, "out of memory");
    }
    size_t next = 0, running_n = 0;
    for (;;) {
        while (running_n < SCRAPE_PARALLEL && next < n) {
            Transfer *t = &ts[next];
            t->item = &items[next];
            t->max_bytes = max_bytes;
            t->started = tf_now();
            CURL *e = scrape_easy(t, timeout_ms);
            if (!e || curl_multi_add_handle(m, e) != CURLM_OK) {
                snprintf(items[next].error, sizeof items[next].error, "cannot start the transfer");
                if (e)
                    curl_easy_cleanup(e);
            } else {
                running_n++;
            }
            next++;
        }
        int still = 0;
        curl_multi_perform(m, &still);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            CURL *e = msg->easy_handle;
            Transfer *t = NULL;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&t);
            scrape_finish(t, e, msg->data.result);
            curl_multi_remove_handle(m, e);
            curl_easy_cleanup(e);
            running_n--;
        }
        if (!running_n && next == n)
            break;
        curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    for (size_t i = 0; i < n; i++)
        curl_slist_free_all(ts[i].headers);
    curl_multi_cleanup(m);
    free(ts);
    return 0;
}

void ops_scrape_clear(OpsScrape *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(items[i].body);
        items[i].body = NULL;
        items[i].len = 0;
    }
}
