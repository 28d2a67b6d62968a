/* metrics_http.c: the /metrics endpoint, served by libmicrohttpd on its own
 * thread, its registration in a discovery folder (`--register DIR`, read
 * by `transfuse top --discover DIR`), and the CLI's start-up helper for
 * `--metrics-port`. */
#include "core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#if MHD_VERSION < 0x00097002
typedef int MHD_Result_t;
#else
typedef enum MHD_Result MHD_Result_t;
#endif

struct TfMetricsServer {
    struct MHD_Daemon *daemon;
    int port;
    char addr[INET_ADDRSTRLEN];
    char *registration; /* path of the file written by tf_metrics_server_register, or NULL */
};

static MHD_Result_t metrics_answer(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                   const char *version, const char *upload_data, size_t *upload_size,
                                   void **req_cls)
{
    (void)cls;
    (void)version;
    (void)upload_data;
    (void)req_cls;
    struct MHD_Response *resp;
    unsigned status;
    if (*upload_size) {
        *upload_size = 0; /* ignore bodies */
        return MHD_YES;
    }
    if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        static const char msg[] = "only GET /metrics\n";
        resp = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        if (resp)
            MHD_add_response_header(resp, "Allow", "GET, HEAD");
    } else if (strcmp(url, "/metrics")) {
        static const char msg[] = "not found: the metrics are at /metrics\n";
        resp = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_NOT_FOUND;
    } else {
        size_t len = 0;
        char *text = tf_metrics_render(&len);
        if (!text)
            return MHD_NO;
        resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
        if (!resp)
            free(text);
        status = MHD_HTTP_OK;
        if (resp)
            MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    }
    if (!resp)
        return MHD_NO;
    MHD_Result_t r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

TfMetricsServer *tf_metrics_serve(const char *addr, int port, TfError *err)
{
    if (port < 0 || port > 65535)
        return tf_fail(err, "metrics port %d is out of range [0, 65535]", port), NULL;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (!addr)
        addr = "127.0.0.1";
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        return tf_fail(err, "metrics address '%s' is not an IPv4 address", addr), NULL;
    TfMetricsServer *s = calloc(1, sizeof *s);
    if (!s)
        return tf_fail(err, "out of memory"), NULL;
    s->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                                 metrics_answer, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned)64, MHD_OPTION_END);
    if (!s->daemon) {
        free(s);
        return tf_fail(err, "cannot serve metrics on %s:%d (in use, or not allowed)", addr, port), NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? (int)info->port : port;
    snprintf(s->addr, sizeof s->addr, "%s", addr);
    return s;
}

int tf_metrics_server_port(const TfMetricsServer *s)
{
    return s ? s->port : 0;
}

void tf_metrics_server_free(TfMetricsServer *s)
{
    if (!s)
        return;
    if (s->registration) {
        if (unlink(s->registration) != 0 && errno != ENOENT)
            tf_log(TF_LOG_WARN, "metrics", "cannot remove registration %s: %s", s->registration, strerror(errno));
        free(s->registration);
    }
    MHD_stop_daemon(s->daemon);
    free(s);
}

/* ---- registration ---- */

/* Copies `in` into out (cap bytes) keeping only [A-Za-z0-9._-], so that it
 * can be part of a file name; "x" when nothing is left. */
static void registration_name_part(char *out, size_t cap, const char *in)
{
    size_t n = 0;
    for (const char *p = in; *p && n + 1 < cap; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '_' || c == '-';
        out[n++] = ok ? c : '_';
    }
    if (!n && cap > 1)
        out[n++] = 'x';
    out[n] = 0;
}

/* The process's command line as one string of at most cap-1 bytes:
 * arguments joined by spaces, bytes outside printable ASCII as '?' (the
 * file is JSON, which wants valid UTF-8), cut with "..." when longer. From
 * /proc/self/cmdline; "" where that cannot be read. */
static void registration_argv(char *out, size_t cap)
{
    out[0] = 0;
    if (cap < 8)
        return;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[1024];
    ssize_t got = read(fd, buf, sizeof buf);
    close(fd);
    if (got <= 0)
        return;
    size_t n = (size_t)got, o = 0;
    while (n && buf[n - 1] == 0)
        n--;
    for (size_t i = 0; i < n; i++) {
        if (o + 4 >= cap || (i + 1 == n && got == (ssize_t)sizeof buf)) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char c = (unsigned char)buf[i];
        out[o++] = c == 0 ? ' ' : (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    out[o] = 0;
}

unsigned long long tf_metrics_process_start_ticks(long pid)
{
    char path[64], buf[1024];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    else
        snprintf(path, sizeof path, "/proc/self/stat");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got <= 0)
        return 0;
    buf[got] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    /* p is at the end of field 2; each step moves to the blank before the next */
    for (int field = 2; field < 22 && p; field++)
        p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

int tf_metrics_server_register(TfMetricsServer *s, const char *dir, const char *command, TfError *err)
{
    if (!s || !dir || !*dir || !command || !*command)
        return tf_fail(err, "metrics registration needs a running server, a folder and a command name");
    if (s->registration)
        return tf_fail(err, "the metrics server is registered already (%s)", s->registration);
    char host[256] = "", host_part[64], cmd_part[64], name[200], path[4096], args[512];
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    registration_name_part(host_part, sizeof host_part, host);
    registration_name_part(cmd_part, sizeof cmd_part, command);
    snprintf(name, sizeof name, "%s-%s-%ld.json", cmd_part, host_part, (long)getpid());
    if (tf_mkdir_p(dir, err) || tf_path_join(path, sizeof path, dir, name))
        return err && err->msg[0] ? tf_fail_context(err, "--register %s", dir)
                                  : tf_fail(err, "--register %s: path too long", dir);
    registration_argv(args, sizeof args);
    json_t *j = json_pack("{s:i, s:s, s:s, s:i, s:s, s:I, s:I, s:s, s:s, s:I}", "pid", (int)getpid(), "host", host,
                          "addr", s->addr, "port", s->port, "command", command, "started", (json_int_t)time(NULL),
                          "start_ticks", (json_int_t)tf_metrics_process_start_ticks(0), "argv", args, "version",
                          TF_VERSION_STRING, "format", (json_int_t)1);
    if (!j)
        return tf_fail(err, "out of memory");
    int rc = tf_json_write_file_atomic(path, j, err);
    json_decref(j);
    if (rc)
        return tf_fail_context(err, "--register %s", dir);
    s->registration = strdup(path);
    if (!s->registration) {
        unlink(path);
        return tf_fail(err, "out of memory");
    }
    return 0;
}

const char *tf_metrics_server_registration(const TfMetricsServer *s)
{
    return s ? s->registration : NULL;
}

TfMetricsServer *tf_metrics_cli_start(const char *tag, const char *addr, long port, TfError *err)
{
    return tf_metrics_cli_start_registered(tag, addr, port, NULL, err);
}

TfMetricsServer *tf_metrics_cli_start_registered(const char *tag, const char *addr, long port,
                                                 const char *register_dir, TfError *err)
{
    if (err)
        err->msg[0] = 0;
    tf_gauge_set(tf_gauge("transfuse_build_info", "Always 1; the labels say which build runs", "version",
                          TF_VERSION_STRING, "command", tag, NULL),
                 1);
    tf_gauge_set(tf_gauge("process_start_time_seconds", "Start time of the process since the Unix epoch",
                          NULL),
                 (double)time(NULL));
    if (port <= 0 && !register_dir)
        return NULL;
    TfMetricsServer *s = tf_metrics_serve(addr, port > 0 ? (int)port : 0, err);
    if (!s)
        return NULL;
    if (register_dir && tf_metrics_server_register(s, register_dir, tag, err)) {
        tf_metrics_server_free(s);
        return NULL;
    }
    tf_log(TF_LOG_INFO, tag, "metrics on http://%s:%d/metrics%s%s", s->addr, s->port,
           register_dir ? ", registered in " : "", register_dir ? register_dir : "");
    return s;
}
