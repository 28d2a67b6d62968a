/* fetch_cli.c: `transfuse ingest fetch`, the fetcher on its own for people
 * and tests: URLs in (one a line, optionally a tab and the expected
 * SHA-256), one TSV line per URL out as each one ends, optionally the
 * bodies saved. Reading the URL file is paced by the fetcher, so a file of
 * millions of lines streams in bounded memory. */
#include "fetch_internal.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

static const char HELP_FMT[] =
    "usage: transfuse ingest fetch --urls FILE [options]\n\n"
    "Fetches every URL of FILE ('-' for stdin; one a line, optionally followed by a tab\n"
    "and the expected SHA-256 in hex; empty lines and lines starting with # are skipped)\n"
    "with the ingest fetcher, and prints one line per URL as it ends, tab-separated:\n"
    "  url  outcome  http_status  bytes  ms  reason\n"
    "outcome is ok or a failure class (dns, connect, timeout, network, tls, http_404,\n"
    "http_503, too_large, truncated, opted_out, forbidden_scheme, private_address,\n"
    "redirect_loop, too_many_redirects, not_image, hash_mismatch, bad_url, read,\n"
    "internal); bytes are the body's. A summary goes to stderr. Ctrl-C stops at once\n"
    "(exit 130); URLs not finished print nothing.\n\n"
    "  --urls FILE              URLs to fetch (required)\n"
    "  --out DIR                save each ok body as DIR/LINE.EXT (LINE: its line number)\n"
    "  --details                more columns after reason: attempts, redirects, http_version,\n"
    "                           content_type, format, sha256 (of every ok body), final_url\n"
    "%s"
    "  --metrics-port N         serve /metrics on port N (0 = off, the default)\n"
    "  --metrics-addr A         address for --metrics-port (default 127.0.0.1)\n";

const char FETCH_CLI_HELP[] =
    "  --concurrency N          transfers in flight (default 64)\n"
    "  --per-host N             in flight per host name, also libcurl's connection cap (default 8)\n"
    "  --host-rate R            requests per second per host name, 0 = unlimited (default 0)\n"
    "  --host-burst B           token bucket size (default max(1, R))\n"
    "  --connect-timeout S      seconds for DNS + connect + TLS (default 10)\n"
    "  --timeout S              seconds per attempt (default 30)\n"
    "  --retries N              retries of timeouts, resets, 429 and 5xx (default 2)\n"
    "  --retry-base S           first backoff in seconds, doubled per retry, jittered (default 1)\n"
    "  --retry-max S            longest wait, Retry-After included (default 60)\n"
    "  --max-redirects N        redirects followed (default 5)\n"
    "  --max-size SIZE          body cap, e.g. 64Mi (default 64Mi)\n"
    "  --user-agent S           User-Agent (default transfuse/VERSION (+honours X-Robots-Tag noai))\n"
    "  --robots-token S         X-Robots-Tag scope we answer to (default: the user agent's product name)\n"
    "  --ignore-robots          do not honour X-Robots-Tag noai/noimageai/noindex/noimageindex/none\n"
    "  --allow-private-networks connect to private, loopback and link-local addresses too\n"
    "  --allow-address CIDRS    allow these networks although private (comma list; repeatable)\n"
    "  --allow-file             read file:// URLs and absolute paths from the local disk\n"
    "                           (also spelled --allow-local-files)\n"
    "  --any-content            keep bodies that are no image\n"
    "  --resolve HOST:PORT:ADDR resolve HOST:PORT to ADDR (as curl --resolve; repeatable)\n"
    "  --ca-file FILE           trust the PEM certificates in FILE instead of the system's\n";

enum {
    FO_CONCURRENCY = FETCH_CLI_BASE, FO_PER_HOST, FO_HOST_RATE, FO_HOST_BURST, FO_CONNECT_TIMEOUT, FO_TIMEOUT,
    FO_RETRIES, FO_RETRY_BASE, FO_RETRY_MAX, FO_MAX_REDIRECTS, FO_MAX_SIZE, FO_USER_AGENT, FO_ROBOTS_TOKEN,
    FO_IGNORE_ROBOTS, FO_ALLOW_PRIVATE, FO_ALLOW_ADDRESS, FO_ALLOW_FILE, FO_ANY_CONTENT, FO_RESOLVE, FO_CA_FILE,
};

const struct option FETCH_CLI_OPTIONS[] = {
    {"concurrency", required_argument, 0, FO_CONCURRENCY},
    {"per-host", required_argument, 0, FO_PER_HOST},
    {"host-rate", required_argument, 0, FO_HOST_RATE},
    {"host-burst", required_argument, 0, FO_HOST_BURST},
    {"connect-timeout", required_argument, 0, FO_CONNECT_TIMEOUT},
    {"timeout", required_argument, 0, FO_TIMEOUT},
    {"retries", required_argument, 0, FO_RETRIES},
    {"retry-base", required_argument, 0, FO_RETRY_BASE},
    {"retry-max", required_argument, 0, FO_RETRY_MAX},
    {"max-redirects", required_argument, 0, FO_MAX_REDIRECTS},
    {"max-size", required_argument, 0, FO_MAX_SIZE},
    {"user-agent", required_argument, 0, FO_USER_AGENT},
    {"robots-token", required_argument, 0, FO_ROBOTS_TOKEN},
    {"ignore-robots", no_argument, 0, FO_IGNORE_ROBOTS},
    {"allow-private-networks", no_argument, 0, FO_ALLOW_PRIVATE},
    {"allow-address", required_argument, 0, FO_ALLOW_ADDRESS},
    {"allow-file", no_argument, 0, FO_ALLOW_FILE},
    {"allow-local-files", no_argument, 0, FO_ALLOW_FILE},
    {"any-content", no_argument, 0, FO_ANY_CONTENT},
    {"resolve", required_argument, 0, FO_RESOLVE},
    {"ca-file", required_argument, 0, FO_CA_FILE},
    {0},
};

struct option *fetch_cli_longopts(const struct option *own)
{
    size_t n = 0, m = 0;
    while (own[n].name)
        n++;
    while (FETCH_CLI_OPTIONS[m].name)
        m++;
    struct option *all = calloc(n + m + 1, sizeof *all);
    if (!all)
        return NULL;
    memcpy(all, own, n * sizeof *all);
    memcpy(all + n, FETCH_CLI_OPTIONS, m * sizeof *all);
    return all;
}

/* Parses seconds (a decimal number in [min, max]). */
static int parse_seconds(const char *flag, const char *text, double min, double max, double *out, TfError *err)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= min && v <= max))
        return tf_fail(err, "%s: '%s' is not a number in [%g, %g]", flag, text, min, max);
    *out = v;
    return 0;
}

int fetch_cli_option(int c, const char *arg, FetchOptions *fo, FetchCliArgs *a, TfError *err)
{
    long v = 0;
    int bad = 0;
    switch (c) {
    case FO_CONCURRENCY: bad = tf_parse_long("--concurrency", arg, 1, 100000, &v, err); fo->concurrency = (int)v; break;
    case FO_PER_HOST: bad = tf_parse_long("--per-host", arg, 1, 100000, &v, err); fo->max_per_host = (int)v; break;
    case FO_HOST_RATE: bad = parse_seconds("--host-rate", arg, 0, 1e6, &fo->host_rate, err); break;
    case FO_HOST_BURST: bad = parse_seconds("--host-burst", arg, 1, 1e6, &fo->host_burst, err); break;
    case FO_CONNECT_TIMEOUT: bad = parse_seconds("--connect-timeout", arg, 0.001, 3600, &fo->connect_timeout_s, err); break;
    case FO_TIMEOUT: bad = parse_seconds("--timeout", arg, 0.001, 86400, &fo->timeout_s, err); break;
    case FO_RETRIES: bad = tf_parse_long("--retries", arg, 0, 100, &v, err); fo->max_retries = (int)v; break;
    case FO_RETRY_BASE: bad = parse_seconds("--retry-base", arg, 0, 3600, &fo->retry_base_s, err); break;
    case FO_RETRY_MAX: bad = parse_seconds("--retry-max", arg, 0, 86400, &fo->retry_max_s, err); break;
    case FO_MAX_REDIRECTS: bad = tf_parse_long("--max-redirects", arg, 0, 100, &v, err); fo->max_redirects = (int)v; break;
    case FO_MAX_SIZE:
        bad = tf_parse_size("--max-size", arg, &fo->max_bytes, err) ||
              (fo->max_bytes == 0 && tf_fail(err, "--max-size: must be above 0"));
        break;
    case FO_USER_AGENT: fo->user_agent = arg; break;
    case FO_ROBOTS_TOKEN: fo->robots_token = arg; break;
    case FO_IGNORE_ROBOTS: fo->ignore_robots = 1; break;
    case FO_ALLOW_PRIVATE: fo->allow_private_networks = 1; break;
    case FO_ALLOW_ADDRESS: {
        size_t old = a->allow ? strlen(a->allow) : 0;
        char *s = realloc(a->allow, old + strlen(arg) + 2);
        if (!s)
            return tf_fail(err, "out of memory");
        if (old)
            s[old++] = ',';
        strcpy(s + old, arg);
        a->allow = s;
        break;
    }
    case FO_ALLOW_FILE: fo->allow_file = 1; break;
    case FO_ANY_CONTENT: fo->any_content = 1; break;
    case FO_RESOLVE: {
        const char **r = realloc(a->resolve, (a->n_resolve + 1) * sizeof *r);
        if (!r)
            return tf_fail(err, "out of memory");
        a->resolve = r;
        a->resolve[a->n_resolve++] = arg;
        break;
    }
    case FO_CA_FILE: fo->ca_file = arg; break;
    default: return tf_fail(err, "not a fetch option");
    }
    return bad ? -1 : 0;
}

void fetch_cli_args_apply(const FetchCliArgs *a, FetchOptions *fo)
{
    fo->allow_addresses = a->allow;
    fo->resolve = a->resolve;
    fo->n_resolve = a->n_resolve;
}

void fetch_cli_args_deinit(FetchCliArgs *a)
{
    free(a->allow);
    free(a->resolve);
    memset(a, 0, sizeof *a);
}

typedef struct LabelCount {
    char label[24];
    uint64_t n;
} LabelCount;

static const char *ext_of(ImageFormat f)
{
    return f == IMAGE_FORMAT_JPEG ? "jpg" : f == IMAGE_FORMAT_PNG ? "png" : f == IMAGE_FORMAT_WEBP ? "webp" : "bin";
}

/* Prints (and saves) one result; counts its label. */
static int emit(const FetchResult *r, const char *out_dir, int details, LabelCount *counts, size_t *n_counts,
                TfError *err)
{
    uint64_t line = (uint64_t)(uintptr_t)r->user;
    printf("%s\t%s\t%d\t%zu\t%.0f\t%s", r->url, r->label, r->http_status, r->body_len, r->elapsed_s * 1000.0,
           r->reason);
    if (details) {
        char sha[65] = "";
        if (r->outcome == FETCH_OK && r->has_sha256)
            tf_hex(r->sha256, 32, sha);
        printf("\t%d\t%d\t%d\t%s\t%s\t%s\t%s", r->attempts, r->redirects, r->http_version,
               r->content_type ? r->content_type : "", image_format_name(r->format), sha, r->final_url);
    }
    putchar('\n');
    size_t i = 0;
    while (i < *n_counts && strcmp(counts[i].label, r->label))
        i++;
    if (i == *n_counts && *n_counts < 64) {
        snprintf(counts[i].label, sizeof counts[i].label, "%s", r->label);
        counts[i].n = 0;
        (*n_counts)++;
    }
    if (i < *n_counts)
        counts[i].n++;
    if (out_dir && r->outcome == FETCH_OK) {
        char name[64], path[4096];
        snprintf(name, sizeof name, "%08llu.%s", (unsigned long long)line, ext_of(r->format));
        if (tf_path_join(path, sizeof path, out_dir, name) != 0)
            return tf_fail(err, "%s: path too long", out_dir);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            return tf_fail(err, "%s: %s", path, strerror(errno));
        int rc = tf_write_all(fd, r->body, r->body_len, err);
        if (close(fd) != 0 && rc == 0)
            rc = tf_fail(err, "%s: %s", path, strerror(errno));
        if (rc)
            return -1;
    }
    return 0;
}

int ingest_fetch_main(int argc, char **argv)
{
    static const struct option own[] = {
        {"urls", required_argument, 0, 'u'},         {"out", required_argument, 0, 'o'},
        {"details", no_argument, 0, 'D'},            {"metrics-port", required_argument, 0, 'm'},
        {"metrics-addr", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'},
        {0}};
    FetchOptions fo;
    fetch_options_init(&fo);
    const char *urls = NULL, *out_dir = NULL, *metrics_addr = NULL;
    FetchCliArgs fa = {0};
    struct option *longopts = fetch_cli_longopts(own);
    int details = 0, status = TF_EXIT_USAGE;
    long metrics_port = 0;
    TfError err = {{0}};
    FILE *in = NULL;
    Fetcher *f = NULL;
    TfMetricsServer *ms = NULL;
    char *line = NULL;
    size_t line_cap = 0;

    if (!longopts) {
        fprintf(stderr, "transfuse ingest fetch: out of memory\n");
        return TF_EXIT_FAIL;
    }
    TfOpts o = {.prog = "transfuse ingest fetch", .argc = argc, .argv = argv, .shortopts = "h", .longopts = longopts};
    int c;
    while ((c = tf_opts_next(&o)) != -1) {
        int bad = 0;
        switch (c) {
        case 'u': urls = o.arg; break;
        case 'o': out_dir = o.arg; break;
        case 'D': details = 1; break;
        case 'm': bad = tf_parse_long("--metrics-port", o.arg, 0, 65535, &metrics_port, &err); break;
        case 'd': metrics_addr = o.arg; break;
        case 'h': printf(HELP_FMT, FETCH_CLI_HELP); status = TF_EXIT_OK; goto done;
        default:
            if (c < FETCH_CLI_BASE)
                goto done;
            bad = fetch_cli_option(c, o.arg, &fo, &fa, &err);
            break;
        }
        if (bad) {
            fprintf(stderr, "transfuse ingest fetch: %s\n", err.msg);
            goto done;
        }
    }
    if (!urls || o.first_operand < argc) {
        fprintf(stderr, "transfuse ingest fetch: %s\n",
                !urls ? "--urls FILE is required (see --help)" : "unexpected operand (URLs go in --urls FILE)");
        goto done;
    }
    fetch_cli_args_apply(&fa, &fo);
    fo.stop = tf_cli_stop_flag();
    fo.hash_bodies = details;
    f = fetcher_new(&fo, &err);
    if (!f) {
        fprintf(stderr, "transfuse ingest fetch: %s\n", err.msg);
        goto done;
    }
    status = TF_EXIT_FAIL;
    in = strcmp(urls, "-") ? fopen(urls, "r") : stdin;
    if (!in) {
        fprintf(stderr, "transfuse ingest fetch: %s: %s\n", urls, strerror(errno));
        goto done;
    }
    if (out_dir && tf_mkdir_p(out_dir, &err) != 0) {
        fprintf(stderr, "transfuse ingest fetch: %s\n", err.msg);
        goto done;
    }
    ms = tf_metrics_cli_start("fetch", metrics_addr, metrics_port, &err);
    if (!ms && err.msg[0]) {
        fprintf(stderr, "transfuse ingest fetch: %s\n", err.msg);
        goto done;
    }

    LabelCount counts[64];
    size_t n_counts = 0;
    uint64_t lineno = 0, ok = 0, total = 0;
    size_t window = (size_t)fo.concurrency * 4 < 256 ? 256 : (size_t)fo.concurrency * 4;
    int eof = 0;
    double t0 = tf_now();
    FetchResult *res[256];
    while (!tf_stop_requested(fo.stop)) {
        while (!eof && fetcher_unfinished(f) < window) {
            ssize_t n = getline(&line, &line_cap, in);
            if (n < 0) {
                eof = 1;
                break;
            }
            lineno++;
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = 0;
            if (n == 0 || line[0] == '#')
                continue;
            char *tab = strchr(line, '\t');
            unsigned char sha[32];
            int has_sha = 0;
            if (tab) {
                *tab = 0;
                if (fetch_sha256_from_hex(tab + 1, sha) != 0) {
                    fprintf(stderr, "transfuse ingest fetch: %s:%llu: the second column is not a SHA-256 in hex\n",
                            urls, (unsigned long long)lineno);
                    status = TF_EXIT_USAGE;
                    goto done;
                }
                has_sha = 1;
            }
            if (fetcher_submit(f, line, has_sha ? sha : NULL, (void *)(uintptr_t)lineno, &err) != 0) {
                fprintf(stderr, "transfuse ingest fetch: %s\n", err.msg);
                goto done;
            }
        }
        if (eof && fetcher_unfinished(f) == 0)
            break;
        int n = fetcher_poll(f, 1000, res, 256, &err);
        if (n < 0) {
            fprintf(stderr, "transfuse ingest fetch: %s\n", err.msg);
            goto done;
        }
        for (int i = 0; i < n; i++) {
            total++;
            ok += res[i]->outcome == FETCH_OK;
            int rc = emit(res[i], out_dir, details, counts, &n_counts, &err);
            fetch_result_free(res[i]);
            if (rc) {
                for (int k = i + 1; k < n; k++)
                    fetch_result_free(res[k]);
                fprintf(stderr, "transfuse ingest fetch: %s\n", err.msg);
                goto done;
            }
        }
        if (n)
            fflush(stdout);
    }
    if (ferror(in)) {
        fprintf(stderr, "transfuse ingest fetch: %s: read error\n", urls);
        goto done;
    }
    FetchStats st;
    fetcher_stats(f, &st);
    double secs = tf_now() - t0;
    fprintf(stderr, "fetch: %llu urls, %llu ok, %llu retries, %.1f MB in %.2f s (%.0f urls/s)",
            (unsigned long long)total, (unsigned long long)ok, (unsigned long long)st.retries, st.bytes / 1e6, secs,
            secs > 0 ? total / secs : 0.0);
    const char *sep = "; failed:";
    for (size_t i = 0; i < n_counts; i++)
        if (strcmp(counts[i].label, "ok")) {
            fprintf(stderr, "%s %s %llu", sep, counts[i].label, (unsigned long long)counts[i].n);
            sep = ",";
        }
    fputc('\n', stderr);
    status = tf_stop_requested(fo.stop) ? TF_EXIT_STOPPED : TF_EXIT_OK;
done:
    free(line);
    if (in && in != stdin)
        fclose(in);
    fetcher_free(f);
    tf_metrics_server_free(ms);
    fetch_cli_args_deinit(&fa);
    free(longopts);
    return status;
}
