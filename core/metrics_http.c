/* metrics_http.c: the /metrics endpoint, served by libmicrohttpd on its own
 * thread, and the CLI's start-up helper for `--metrics-port`. */
#include "core.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#if MHD_VERSION < 0x00097002
typedef int MHD_Result_t;
#else
typedef enum MHD_Result MHD_Result_t;
#endif

struct TfMetricsServer {
    struct MHD_Daemon *daemon;
    int port;
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
    MHD_stop_daemon(s->daemon);
    free(s);
}

TfMetricsServer *tf_metrics_cli_start(const char *tag, const char *addr, long port, TfError *err)
{
    if (err)
        err->msg[0] = 0;
    tf_gauge_set(tf_gauge("transfuse_build_info", "Always 1; the labels say which build runs", "version",
                          TF_VERSION_STRING, "command", tag, NULL),
                 1);
    tf_gauge_set(tf_gauge("process_start_time_seconds", "Start time of the process since the Unix epoch",
                          NULL),
                 (double)time(NULL));
    if (port <= 0)
        return NULL;
    TfMetricsServer *s = tf_metrics_serve(addr, (int)port, err);
    if (s)
        tf_log(TF_LOG_INFO, tag, "metrics on http://%s:%d/metrics", addr ? addr : "127.0.0.1",
               tf_metrics_server_port(s));
    return s;
}
