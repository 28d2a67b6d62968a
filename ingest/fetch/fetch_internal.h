/* fetch_internal.h: what the fetcher's parts share (private to
 * ingest/fetch/). The pure policy pieces (header parsing, opt-out rules,
 * Retry-After, address classes, CIDR lists) live in fetch_policy.c so the
 * unit tests and the fuzzer reach them without a network. */
#ifndef TRANSFUSE_FETCH_INTERNAL_H
#define TRANSFUSE_FETCH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
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

#endif
