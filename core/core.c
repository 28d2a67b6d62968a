/* core.c: errors, logging, command-line parsing helpers, time and progress.
 * The pieces every subcommand uses; see core.h for the contracts. */
#include "core.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int tf_fail(TfError *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int tf_fail_context(TfError *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char prefix[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    return -1;
}

/* ---- logging ---- */

static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static TfLogLevel log_level = TF_LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void log_init(void)
{
    const char *e = getenv("TRANSFUSE_LOG");
    if (!e)
        return;
    if (!strcmp(e, "debug")) log_level = TF_LOG_DEBUG;
    else if (!strcmp(e, "info")) log_level = TF_LOG_INFO;
    else if (!strcmp(e, "warn")) log_level = TF_LOG_WARN;
    else if (!strcmp(e, "error")) log_level = TF_LOG_ERROR;
    else if (!strcmp(e, "quiet")) log_level = TF_LOG_QUIET;
}

void tf_log_set_level(TfLogLevel level)
{
    pthread_once(&log_once, log_init);
    log_level = level;
}

TfLogLevel tf_log_get_level(void)
{
    pthread_once(&log_once, log_init);
    return log_level;
}

static void log_v(TfLogLevel level, const char *tag, const char *fmt, va_list ap)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    char line[2048];
    int n = snprintf(line, sizeof line, "%s %s: ", names[level], tag);
    if (n < 0)
        return;
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "%s\n", line);
    pthread_mutex_unlock(&log_lock);
}

void tf_log(TfLogLevel level, const char *tag, const char *fmt, ...)
{
    if (level < tf_log_get_level() || level >= TF_LOG_QUIET)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_v(level, tag, fmt, ap);
    va_end(ap);
}

void tf_log_limited(TfRateLimit *limit, TfLogLevel level, const char *tag, const char *fmt, ...)
{
    if (level < tf_log_get_level() || level >= TF_LOG_QUIET)
        return;
    double now = tf_now();
    if (now - limit->window_start >= limit->period_s) {
        limit->window_start = now;
        limit->in_window = 0;
    }
    if (limit->in_window >= limit->burst) {
        limit->suppressed++;
        return;
    }
    limit->in_window++;
    if (limit->suppressed) {
        tf_log(level, tag, "(%ld similar messages suppressed)", limit->suppressed);
        limit->suppressed = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    log_v(level, tag, fmt, ap);
    va_end(ap);
}

/* ---- time and progress ---- */

double tf_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void tf_progress_init(TfProgress *p, const char *label, uint64_t total, const char *unit)
{
    const char *force = getenv("TRANSFUSE_PROGRESS");
    p->label = label;
    p->total = total;
    p->unit = unit;
    p->started = tf_now();
    p->last_draw = 0;
    p->enabled = force ? atoi(force) != 0 : isatty(STDERR_FILENO);
}

static void human_units(double v, const char *unit, char *out, size_t cap)
{
    const char *pfx[] = {"", "k", "M", "G", "T"};
    int i = 0;
    double base = !strcmp(unit, "B") ? 1024.0 : 1000.0;
    while (v >= base && i < 4) {
        v /= base;
        i++;
    }
    snprintf(out, cap, i ? "%.1f %s%s" : "%.0f %s%s", v, pfx[i], unit);
}

static void progress_draw(TfProgress *p, uint64_t done, int final)
{
    double now = tf_now(), dt = now - p->started;
    char a[32], rate[32];
    human_units((double)done, p->unit, a, sizeof a);
    human_units(dt > 0 ? (double)done / dt : 0, p->unit, rate, sizeof rate);
    if (p->total) {
        double frac = (double)done / (double)p->total;
        if (frac > 1)
            frac = 1;
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        double eta = frac > 0 ? dt / frac - dt : 0;
        fprintf(stderr, "\r%s [%s] %5.1f%% %s  %s/s  eta %.0fs   ", p->label, bar, 100 * frac, a, rate,
                final ? 0.0 : eta);
    } else {
        fprintf(stderr, "\r%s %s  %s/s   ", p->label, a, rate);
    }
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

void tf_progress_update(TfProgress *p, uint64_t done)
{
    if (!p->enabled)
        return;
    double now = tf_now();
    if (now - p->last_draw < 0.1)
        return;
    p->last_draw = now;
    progress_draw(p, done, 0);
}

void tf_progress_finish(TfProgress *p, uint64_t done)
{
    if (p->enabled)
        progress_draw(p, done, 1);
}
