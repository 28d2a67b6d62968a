/* fetch_internal.h: what the fetcher's parts share (private to
 * ingest/fetch/). The pure policy pieces (header parsing, opt-out rules,
 * Retry-After, address classes, CIDR lists) live in fetch_policy.c so the
 * unit tests and the fuzzer reach them without a network. */
#ifndef TRANSFUSE_FETCH_INTERNAL_H
#define TRANSFUSE_FETCH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <getopt.h>
#include <sys/socket.h>
#include <time.h>

#include "ingest.h"

/* What one HTTP response's header block said, as far as the fetcher cares.
 * A block starts at its status line ("HTTP/1.1 200 OK", "HTTP/2 302");
 * 1xx blocks are followed by the real one. */
typedef struct FetchResponse {
    int status;             /* 0 before a status line */
    int64_t content_length; /* -1 when absent or unparseable */
    char content_type[128]; /* "" when absent; cut at 127 bytes */
    double retry_after_s;   /* -1 when absent or unparseable */
    int opted_out;          /* an X-Robots-Tag line applies an opt-out directive to us */
    char robots[96];        /* that line's value (cut), for the reason */
} FetchResponse;

/* Clears *r for a new header block. */
void fetch_response_reset(FetchResponse *r);

/* Feeds one header line as libcurl hands it (CRLF included or not, not
 * NUL-terminated, any bytes). A status line resets the block. X-Robots-Tag
 * is evaluated for `token` when honour_robots. `now` is the wall-clock
 * time an HTTP-date Retry-After is measured from. Returns 1 when the line
 * is the empty one ending the block, else 0. */
int fetch_response_header(FetchResponse *r, const char *line, size_t len, const char *token, int honour_robots,
                          time_t now);

/* 1 when the X-Robots-Tag value (`len` bytes) holds noai, noimageai,
 * noindex, noimageindex or none, unscoped or scoped to `token` ("token:
 * noai"; a scope lasts until the next one in the comma list), compared
 * without case. Scopes naming another agent are ignored. */
int fetch_robots_opted_out(const char *value, size_t len, const char *token);

/* A Retry-After value as seconds from `now`: a decimal delay or an
 * HTTP-date (a date in the past is 0). Returns -1 when it is neither. */
double fetch_retry_after_parse(const char *value, size_t len, time_t now);

/* The class of a destination that must not be reached by default
 * ("loopback", "private", "link-local", "unique-local", "multicast",
 * "unspecified", "reserved", "shared", "documentation", "benchmark"), or
 * NULL for a public unicast address. IPv4-mapped, NAT64 and 6to4 IPv6
 * addresses are judged by the IPv4 address inside. Other families are
 * "reserved". */
const char *fetch_address_kind(const struct sockaddr *sa);

/* A network in an allow list. */
typedef struct FetchCidr {
    int family;              /* AF_INET or AF_INET6 */
    unsigned char addr[16];  /* network bytes (4 used for IPv4) */
    int bits;
} FetchCidr;

/* Parses "a.b.c.d[/n],x::y[/n],..." (spaces allowed). Returns 0 with a
 * malloc'd array in *out (NULL when the text is empty), or -1 naming the
 * bad entry. */
int fetch_cidrs_parse(const char *text, FetchCidr **out, size_t *n, TfError *err);

/* 1 when the address lies in one of the n networks (an IPv4-mapped IPv6
 * address also matches IPv4 networks). */
int fetch_cidrs_match(const FetchCidr *cidrs, size_t n, const struct sockaddr *sa);

/* The printable form of an address ("127.0.0.1", "::1") into out. */
void fetch_address_text(const struct sockaddr *sa, char *out, size_t cap);

/* A short description of bytes that are no image, for a not_image reason:
 * "empty body", "HTML", "XML or SVG", "JSON", "text", or their first bytes
 * in hex. */
void fetch_describe_bytes(const unsigned char *data, size_t len, char *out, size_t cap);

/* ---- the fetcher's command-line flags, shared by `ingest fetch` and `ingest run` ---- */

/* Option values of the fetch flags start here (a command's own flags use
 * characters below it). */
#define FETCH_CLI_BASE 2000 /* below the encode flags (INGEST_ENC_*, from 3000) and the worker's (4000): the tables combine */

/* The fetch flags ({0}-terminated): --concurrency, --per-host, --host-rate,
 * --host-burst, --connect-timeout, --timeout, --retries, --retry-base,
 * --retry-max, --max-redirects, --max-size, --user-agent, --robots-token,
 * --ignore-robots, --allow-private-networks, --allow-address, --allow-file
 * (also --allow-local-files), --any-content, --resolve, --ca-file. */
extern const struct option FETCH_CLI_OPTIONS[];
/* Their --help lines. */
extern const char FETCH_CLI_HELP[];

/* What the repeatable flags collect (zero-initialise; fetch_cli_args_deinit). */
typedef struct FetchCliArgs {
    char *allow;             /* --allow-address lists joined by ',' */
    const char **resolve;
    size_t n_resolve;
} FetchCliArgs;

/* A command's own options followed by FETCH_CLI_OPTIONS, malloc'd
 * ({0}-terminated), or NULL when out of memory. */
struct option *fetch_cli_longopts(const struct option *own);

/* Applies fetch flag `c` (>= FETCH_CLI_BASE) with its argument to *fo and
 * *a. Returns 0, or -1 with err saying what is wrong with the value. */
int fetch_cli_option(int c, const char *arg, FetchOptions *fo, FetchCliArgs *a, TfError *err);

/* Points fo's allow list and resolve entries at what *a collected (a must outlive the fetcher's creation). */
void fetch_cli_args_apply(const FetchCliArgs *a, FetchOptions *fo);
void fetch_cli_args_deinit(FetchCliArgs *a);

#endif
