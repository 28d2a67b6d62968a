/* registry.c: the reader side of `--register DIR` (the writer is
 * tf_metrics_server_register in core): lists the registration files of a
 * folder, tells live entries from stale ones, and writes the folder as a
 * Prometheus file_sd target file. The files are untrusted: each is size
 * limited and checked field by field; a bad one is listed as such and never
 * stops the scan. */
#include "ops.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REGISTRY_MAX_FILE (64 * 1024)

static const char *json_str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* Fills r from one registration file; on a malformed file r->state is
 * OPS_REG_BAD with the reason. */
static void registry_entry_read(const char *dir, const char *name, const char *local_host, double now,
                                OpsRegistration *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->file, sizeof r->file, "%s", name);
    char path[4096];
    TfError err = {{0}};
    json_t *j = NULL;
    if (tf_path_join(path, sizeof path, dir, name)) {
        snprintf(r->why, sizeof r->why, "path too long");
        goto bad;
    }
    j = tf_json_load_file(path, REGISTRY_MAX_FILE, &err);
    if (!j) {
        snprintf(r->why, sizeof r->why, "%s", err.msg);
        goto bad;
    }
    json_t *pid = json_object_get(j, "pid"), *port = json_object_get(j, "port");
    if (!json_is_object(j) || !json_is_integer(pid) || !json_is_integer(port) || json_integer_value(pid) <= 0 ||
        json_integer_value(port) <= 0 || json_integer_value(port) > 65535 || !json_str(j, "host")[0]) {
        snprintf(r->why, sizeof r->why, "not a registration (needs pid, host, port)");
        goto bad;
    }
    r->pid = (long)json_integer_value(pid);
    r->port = (int)json_integer_value(port);
    snprintf(r->host, sizeof r->host, "%s", json_str(j, "host"));
    snprintf(r->addr, sizeof r->addr, "%s", json_str(j, "addr"));
    snprintf(r->command, sizeof r->command, "%s", json_str(j, "command"));
    snprintf(r->argv, sizeof r->argv, "%s", json_str(j, "argv"));
    snprintf(r->version, sizeof r->version, "%s", json_str(j, "version"));
    json_t *started = json_object_get(j, "started"), *ticks = json_object_get(j, "start_ticks");
    r->started = json_is_number(started) ? json_number_value(started) : 0;
    r->start_ticks = json_is_integer(ticks) && json_integer_value(ticks) > 0
                         ? (unsigned long long)json_integer_value(ticks)
                         : 0;
    r->local = !strcmp(r->host, local_host);
    /* Where to scrape: the bound address, unless it is a wildcard (then
     * loopback here, the host name from elsewhere). */
    const char *a = r->addr;
    int wildcard = !a[0] || !strcmp(a, "0.0.0.0") || !strcmp(a, "::");
    const char *where = r->local ? (wildcard ? "127.0.0.1" : a) : (wildcard || !strncmp(a, "127.", 4) ? r->host : a);
    snprintf(r->target, sizeof r->target, "%s:%d", where, r->port);
    unsigned long long now_ticks = 0;
    if (r->local) {
        if (kill((pid_t)r->pid, 0) != 0 && errno == ESRCH) {
            r->state = OPS_REG_STALE;
            snprintf(r->why, sizeof r->why, "process %ld is gone", r->pid);
        } else if (r->start_ticks && (now_ticks = tf_metrics_process_start_ticks(r->pid)) &&
                   now_ticks != r->start_ticks) {
            r->state = OPS_REG_STALE;
            snprintf(r->why, sizeof r->why, "process %ld is gone (its PID was reused)", r->pid);
        } else {
            r->state = OPS_REG_LIVE;
        }
    } else {
        r->state = OPS_REG_REMOTE;
    }
    r->age_s = r->started > 0 ? now - r->started : 0;
    json_decref(j);
    return;
bad:
    json_decref(j);
    r->state = OPS_REG_BAD;
}

static int registration_cmp(const void *a, const void *b)
{
    return strcmp(((const OpsRegistration *)a)->file, ((const OpsRegistration *)b)->file);
}

int ops_registry_scan(const char *dir, OpsRegistration **out, size_t *n_out, TfError *err)
{
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d)
        return tf_fail(err, "--discover %s: %s", dir, strerror(errno));
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    double now = (double)time(NULL);
    OpsRegistration *list = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len < 6 || strcmp(de->d_name + len - 5, ".json"))
            continue;
        if (n == OPS_REGISTRY_MAX) {
            tf_log(TF_LOG_WARN, "top", "%s: more than %d registrations, the rest are ignored", dir,
                   OPS_REGISTRY_MAX);
            break;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            OpsRegistration *nl = realloc(list, nc * sizeof *nl);
            if (!nl) {
                rc = tf_fail(err, "out of memory");
                break;
            }
            list = nl;
            cap = nc;
        }
        registry_entry_read(dir, de->d_name, host, now, &list[n++]);
    }
    closedir(d);
    if (rc) {
        free(list);
        return -1;
    }
    if (n > 1)
        qsort(list, n, sizeof *list, registration_cmp);
    *out = list;
    *n_out = n;
    return 0;
}

const char *ops_registration_state_name(OpsRegState state)
{
    switch (state) {
    case OPS_REG_LIVE: return "live";
    case OPS_REG_REMOTE: return "remote";
    case OPS_REG_STALE: return "stale";
    case OPS_REG_BAD: return "bad";
    }
    return "?";
}

int ops_registry_write_sd(const char *path, const OpsRegistration *regs, size_t n, TfError *err)
{
    json_t *list = json_array();
    if (!list)
        return tf_fail(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const OpsRegistration *r = &regs[i];
        /* Stale entries stay: a process that died without removing its
         * file crashed, and Prometheus should see it down (up == 0) and
         * alert, until someone removes the file. */
        if (r->state == OPS_REG_BAD)
            continue;
        char pid[32];
        snprintf(pid, sizeof pid, "%ld", r->pid);
        json_t *g = json_pack("{s:[s], s:{s:s, s:s, s:s, s:s}}", "targets", r->target, "labels", "command",
                              r->command[0] ? r->command : "unknown", "transfuse_host", r->host, "transfuse_pid",
                              pid, "transfuse_registration", r->file);
        if (!g || json_array_append_new(list, g)) {
            json_decref(list);
            return tf_fail(err, "out of memory");
        }
    }
    /* Rewritten only when it changes: Prometheus watches the file, and a
     * watcher running every second should not fsync every second. */
    char *text = json_dumps(list, JSON_INDENT(2));
    json_decref(list);
    if (!text)
        return tf_fail(err, "out of memory");
    size_t n_text = strlen(text), old_len = 0;
    char *old = tf_read_file(path, n_text + 2, &old_len, NULL);
    int same = old && old_len == n_text + 1 && !memcmp(old, text, n_text) && old[n_text] == '\n';
    free(old);
    int rc = 0;
    if (!same) {
        char *withnl = realloc(text, n_text + 2);
        if (!withnl) {
            free(text);
            return tf_fail(err, "out of memory");
        }
        text = withnl;
        text[n_text] = '\n';
        text[n_text + 1] = 0;
        rc = tf_write_file_atomic(path, text, n_text + 1, err);
    }
    free(text);
    return rc ? tf_fail_context(err, "--prometheus-sd") : 0;
}
