/* fetch_policy.c: the fetcher's rules that need no network: reading a
 * response's header lines (status, Content-Length, Content-Type,
 * Retry-After, X-Robots-Tag), the opt-out directives and their scoping, the
 * classes of addresses refused by default, CIDR allow lists, and names for
 * outcomes. Everything here reads untrusted bytes with explicit lengths. */
#include "fetch_internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

static const char *const OUTCOME_NAMES[FETCH_OUTCOME_COUNT] = {
    [FETCH_OK] = "ok",
    [FETCH_BAD_URL] = "bad_url",
    [FETCH_FORBIDDEN_SCHEME] = "forbidden_scheme",
    [FETCH_DNS] = "dns",
    [FETCH_CONNECT] = "connect",
    [FETCH_PRIVATE_ADDRESS] = "private_address",
    [FETCH_TLS] = "tls",
    [FETCH_TIMEOUT] = "timeout",
    [FETCH_NETWORK] = "network",
    [FETCH_HTTP_3XX] = "http_3xx",
    [FETCH_HTTP_4XX] = "http_4xx",
    [FETCH_HTTP_5XX] = "http_5xx",
    [FETCH_REDIRECT_LOOP] = "redirect_loop",
    [FETCH_TOO_MANY_REDIRECTS] = "too_many_redirects",
    [FETCH_TOO_LARGE] = "too_large",
    [FETCH_TRUNCATED] = "truncated",
    [FETCH_OPTED_OUT] = "opted_out",
    [FETCH_NOT_IMAGE] = "not_image",
    [FETCH_HASH_MISMATCH] = "hash_mismatch",
    [FETCH_READ] = "read",
    [FETCH_INTERNAL] = "internal",
};

const char *fetch_outcome_name(FetchOutcome outcome)
{
    return (unsigned)outcome < FETCH_OUTCOME_COUNT ? OUTCOME_NAMES[outcome] : "invalid";
}

int fetch_outcome_transient(FetchOutcome outcome, int http_status)
{
    switch (outcome) {
    case FETCH_DNS:
    case FETCH_CONNECT:
    case FETCH_TIMEOUT:
    case FETCH_NETWORK:
    case FETCH_TRUNCATED:
    case FETCH_HTTP_5XX:
        return 1;
    case FETCH_HTTP_4XX:
        return http_status == 408 || http_status == 429;
    default:
        return 0;
    }
}

int fetch_sha256_from_hex(const char *hex, unsigned char out[32])
{
    if (!hex || strlen(hex) != 64)
        return -1;
    for (int i = 0; i < 32; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = hex[2 * i + k];
            int d = c >= '0' && c <= '9' ? c - '0'
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0)
                return -1;
            v = v * 16 + d;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

/* ---- header lines ---- */

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Narrows [*s, *s + *n) to drop blanks (and CR/LF) at both ends. */
static void trim(const char **s, size_t *n)
{
    while (*n && (is_blank(**s) || **s == '\r' || **s == '\n'))
        (*s)++, (*n)--;
    while (*n && (is_blank((*s)[*n - 1]) || (*s)[*n - 1] == '\r' || (*s)[*n - 1] == '\n'))
        (*n)--;
}

static int span_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

void fetch_response_reset(FetchResponse *r)
{
    memset(r, 0, sizeof *r);
    r->content_length = -1;
    r->retry_after_s = -1;
}

/* Copies [s, s+n) into out (cap bytes, NUL-terminated), replacing control
 * characters so a reason line stays one line. */
static void copy_printable(char *out, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? ' ' : s[i];
    out[n] = 0;
}

int fetch_response_header(FetchResponse *r, const char *line, size_t len, const char *token, int honour_robots,
                          time_t now)
{
    const char *s = line;
    size_t n = len;
    while (n && (s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    if (n == 0)
        return 1;
    if (n >= 5 && memcmp(s, "HTTP/", 5) == 0) {
        fetch_response_reset(r);
        size_t i = 5;
        while (i < n && !is_blank(s[i]))
            i++;
        while (i < n && is_blank(s[i]))
            i++;
        int status = 0, digits = 0;
        while (i < n && digits < 3 && s[i] >= '0' && s[i] <= '9')
            status = status * 10 + (s[i++] - '0'), digits++;
        r->status = digits == 3 ? status : 0;
        return 0;
    }
    const char *colon = memchr(s, ':', n);
    if (!colon)
        return 0;
    const char *name = s, *value = colon + 1;
    size_t name_n = (size_t)(colon - s), value_n = n - name_n - 1;
    trim(&name, &name_n);
    trim(&value, &value_n);
    if (span_is(name, name_n, "content-length")) {
        int64_t v = 0;
        size_t i = 0;
        for (; i < value_n && value[i] >= '0' && value[i] <= '9'; i++)
            v = v > (INT64_MAX - 9) / 10 ? INT64_MAX : v * 10 + (value[i] - '0');
        r->content_length = i > 0 && i == value_n ? v : -1;
    } else if (span_is(name, name_n, "content-type")) {
        copy_printable(r->content_type, sizeof r->content_type, value, value_n);
    } else if (span_is(name, name_n, "retry-after")) {
        r->retry_after_s = fetch_retry_after_parse(value, value_n, now);
    } else if (honour_robots && span_is(name, name_n, "x-robots-tag") && !r->opted_out &&
               fetch_robots_opted_out(value, value_n, token)) {
        r->opted_out = 1;
        copy_printable(r->robots, sizeof r->robots, value, value_n);
    }
    return 0;
}

/* ---- X-Robots-Tag ---- */

/* Directives that carry a value after a colon: their name is no agent. */
static int takes_value(const char *s, size_t n)
{
    return span_is(s, n, "unavailable_after") || span_is(s, n, "max-snippet") ||
           span_is(s, n, "max-image-preview") || span_is(s, n, "max-video-preview");
}

static int is_agent_token(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

static int is_opt_out(const char *s, size_t n)
{
    return span_is(s, n, "noai") || span_is(s, n, "noimageai") || span_is(s, n, "noindex") ||
           span_is(s, n, "noimageindex") || span_is(s, n, "none");
}

int fetch_robots_opted_out(const char *value, size_t len, const char *token)
{
    size_t token_n = token ? strlen(token) : 0;
    int applies = 1; /* no scope yet: the directives are for every agent */
    size_t i = 0;
    while (i <= len) {
        size_t j = i;
        while (j < len && value[j] != ',')
            j++;
        const char *s = value + i;
        size_t n = j - i;
        trim(&s, &n);
        const char *colon = n ? memchr(s, ':', n) : NULL;
        if (colon) {
            const char *agent = s;
            size_t agent_n = (size_t)(colon - s);
            trim(&agent, &agent_n);
            if (is_agent_token(agent, agent_n) && !takes_value(agent, agent_n)) {
                applies = token_n && agent_n == token_n && strncasecmp(agent, token, agent_n) == 0;
                n -= (size_t)(colon + 1 - s);
                s = colon + 1;
                trim(&s, &n);
            }
        }
        size_t name_n = 0;
        while (name_n < n && s[name_n] != ':' && !is_blank(s[name_n]))
            name_n++;
        if (applies && is_opt_out(s, name_n))
            return 1;
        i = j + 1;
    }
    return 0;
}

/* ---- Retry-After ---- */

double fetch_retry_after_parse(const char *value, size_t len, time_t now)
{
    const char *s = value;
    size_t n = len;
    trim(&s, &n);
    if (n == 0)
        return -1;
    size_t digits = 0;
    while (digits < n && s[digits] >= '0' && s[digits] <= '9')
        digits++;
    if (digits == n) {
        double v = 0;
        for (size_t i = 0; i < n && v < 1e12; i++)
            v = v * 10 + (s[i] - '0');
        return v;
    }
    char buf[64];
    if (n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    time_t at = curl_getdate(buf, NULL);
    if (at == (time_t)-1)
        return -1;
    return at > now ? (double)(at - now) : 0.0;
}

/* ---- addresses ---- */

static const char *ipv4_kind(const unsigned char b[4])
{
    uint32_t a = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    static const struct {
        uint32_t net;
        int bits;
        const char *kind;
    } BLOCKS[] = {
        {0x00000000u, 8, "unspecified"},   {0x0a000000u, 8, "private"},       {0x64400000u, 10, "shared"},
        {0x7f000000u, 8, "loopback"},      {0xa9fe0000u, 16, "link-local"},   {0xac100000u, 12, "private"},
        {0xc0000000u, 24, "reserved"},     {0xc0000200u, 24, "documentation"}, {0xc0a80000u, 16, "private"},
        {0xc6120000u, 15, "benchmark"},    {0xc6336400u, 24, "documentation"}, {0xcb007100u, 24, "documentation"},
        {0xe0000000u, 4, "multicast"},     {0xf0000000u, 4, "reserved"},
    };
    for (size_t i = 0; i < sizeof BLOCKS / sizeof BLOCKS[0]; i++) {
        uint32_t mask = 0xffffffffu << (32 - BLOCKS[i].bits);
        if ((a & mask) == BLOCKS[i].net)
            return BLOCKS[i].kind;
    }
    return NULL;
}

static const char *ipv6_kind(const unsigned char b[16])
{
    static const unsigned char zero[16];
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (memcmp(b, zero, 15) == 0)
        return b[15] == 0 ? "unspecified" : b[15] == 1 ? "loopback" : "reserved";
    if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0)
        return ipv4_kind(b + 12);
    if (memcmp(b, zero, 12) == 0)
        return "reserved"; /* IPv4-compatible, deprecated */
    if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0 && b[5] == 1)
        return "private"; /* 64:ff9b:1::/48, local-use NAT64 */
    if (b[0] == 0x01 && b[1] == 0x00 && memcmp(b + 2, zero, 6) == 0)
        return "reserved"; /* 100::/64, discard */
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
        return "documentation";
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x02 && b[4] == 0 && b[5] == 0)
        return "benchmark";
    if (b[0] == 0x20 && b[1] == 0x02)
        return ipv4_kind(b + 2); /* 6to4 */
    if ((b[0] & 0xfe) == 0xfc)
        return "unique-local";
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return "link-local";
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
        return "private"; /* site-local, deprecated */
    if (b[0] == 0xff)
        return "multicast";
    return NULL;
}

const char *fetch_address_kind(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ipv4_kind((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr);
    if (sa->sa_family == AF_INET6)
        return ipv6_kind(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr);
    return "reserved";
}

void fetch_address_text(const struct sockaddr *sa, char *out, size_t cap)
{
    const void *a = sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                  : sa->sa_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                  : NULL;
    if (!a || !inet_ntop(sa->sa_family, a, out, (socklen_t)cap))
        snprintf(out, cap, "(family %d)", sa->sa_family);
}

int fetch_cidrs_parse(const char *text, FetchCidr **out, size_t *n, TfError *err)
{
    *out = NULL;
    *n = 0;
    if (!text)
        return 0;
    size_t cap = 1;
    for (const char *p = text; *p; p++)
        cap += *p == ',';
    FetchCidr *v = calloc(cap, sizeof *v);
    if (!v)
        return tf_fail(err, "out of memory");
    size_t count = 0;
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *s = p;
        size_t len = (size_t)(end - p);
        trim(&s, &len);
        p = *end ? end + 1 : end;
        if (len == 0)
            continue;
        char buf[64];
        if (len >= sizeof buf)
            goto bad;
        memcpy(buf, s, len);
        buf[len] = 0;
        char *slash = strchr(buf, '/');
        long bits = -1;
        if (slash) {
            char *e;
            *slash = 0;
            bits = strtol(slash + 1, &e, 10);
            if (e == slash + 1 || *e)
                goto bad;
        }
        FetchCidr *c = &v[count];
        if (inet_pton(AF_INET, buf, c->addr) == 1)
            c->family = AF_INET, c->bits = bits < 0 ? 32 : (int)bits;
        else if (inet_pton(AF_INET6, buf, c->addr) == 1)
            c->family = AF_INET6, c->bits = bits < 0 ? 128 : (int)bits;
        else
            goto bad;
        if (c->bits < 0 || c->bits > (c->family == AF_INET ? 32 : 128))
            goto bad;
        count++;
        continue;
    bad:
        free(v);
        return tf_fail(err, "bad network '%.*s' (want ADDRESS or ADDRESS/BITS, IPv4 or IPv6)", (int)len, s);
    }
    if (count == 0)
        free(v), v = NULL;
    *out = v;
    *n = count;
    return 0;
}

static int prefix_equal(const unsigned char *a, const unsigned char *b, int bits)
{
    int bytes = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)bytes) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

int fetch_cidrs_match(const FetchCidr *cidrs, size_t n, const struct sockaddr *sa)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const unsigned char *v4 = NULL, *v6 = NULL;
    if (sa->sa_family == AF_INET) {
        v4 = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
    } else if (sa->sa_family == AF_INET6) {
        v6 = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        if (memcmp(v6, mapped, 12) == 0)
            v4 = v6 + 12;
    }
    for (size_t i = 0; i < n; i++) {
        if (cidrs[i].family == AF_INET && v4 && prefix_equal(v4, cidrs[i].addr, cidrs[i].bits))
            return 1;
        if (cidrs[i].family == AF_INET6 && v6 && prefix_equal(v6, cidrs[i].addr, cidrs[i].bits))
            return 1;
    }
    return 0;
}

/* ---- bytes that are no image ---- */

static int starts_ci(const unsigned char *p, size_t n, const char *word)
{
    size_t w = strlen(word);
    return n >= w && strncasecmp((const char *)p, word, w) == 0;
}

void fetch_describe_bytes(const unsigned char *data, size_t len, char *out, size_t cap)
{
    const unsigned char *p = data;
    size_t n = len;
    if (n >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf)
        p += 3, n -= 3;
    while (n && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++, n--;
    if (len == 0) {
        snprintf(out, cap, "empty body");
        return;
    }
    if (starts_ci(p, n, "<!doctype html") || starts_ci(p, n, "<html") || starts_ci(p, n, "<head") ||
        starts_ci(p, n, "<body")) {
        snprintf(out, cap, "HTML");
        return;
    }
    if (n && *p == '<') {
        snprintf(out, cap, "XML or SVG markup");
        return;
    }
    if (n && (*p == '{' || *p == '[')) {
        snprintf(out, cap, "JSON");
        return;
    }
    size_t look = n < 512 ? n : 512, printable = 0;
    for (size_t i = 0; i < look; i++)
        printable += p[i] >= 0x20 || p[i] == '\t' || p[i] == '\r' || p[i] == '\n';
    if (look && printable == look) {
        snprintf(out, cap, "text");
        return;
    }
    size_t shown = len < 8 ? len : 8, at = (size_t)snprintf(out, cap, "unrecognised bytes");
    for (size_t i = 0; i < shown && at + 4 < cap; i++)
        at += (size_t)snprintf(out + at, cap - at, " %02x", data[i]);
}
