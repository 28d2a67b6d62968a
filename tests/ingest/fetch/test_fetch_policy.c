/* test_fetch_policy.c: the fetcher's rules without a network: X-Robots-Tag
 * scoping, Retry-After forms, header blocks (1xx, redirects, lengths),
 * address classes for IPv4 and IPv6 (mapped, NAT64, 6to4 included), CIDR
 * allow lists, descriptions of non-image bytes, hex hashes, outcome names. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <time.h>

#include "fetch_internal.h"
#include "test.h"

static int robots(const char *value, const char *token)
{
    return fetch_robots_opted_out(value, strlen(value), token);
}

static void test_robots(void)
{
    static const struct {
        const char *value;
        int want;
    } CASES[] = {
        {"noai", 1},
        {"NOAI", 1},
        {"noimageai", 1},
        {"noindex", 1},
        {"noimageindex", 1},
        {"none", 1},
        {"nofollow", 0},
        {"noarchive, nosnippet", 0},
        {"nofollow, noimageai", 1},
        {" nofollow ,NoIndex ", 1},
        {"transfuse: noai", 1},
        {"TRANSFUSE:noimageindex", 1},
        {"otherbot: noai", 0},
        {"otherbot: noindex, nofollow", 0},       /* the scope lasts over the list */
        {"otherbot: nofollow, transfuse: noai", 1}, /* until the next scope */
        {"transfuse: nofollow, otherbot: noai", 0},
        {"googlebot: noindex, transfusebot: noai", 0}, /* a longer name is another agent */
        {"unavailable_after: 25 Jun 2010 15:00:00 PST", 0},
        {"unavailable_after: Friday, 25-Jun-2010 15:00:00 PST, noai", 1},
        {"max-image-preview: none", 0},            /* a value, not the directive none */
        {"max-snippet: 20, noindex", 1},
        {"noai-ish", 0},
        {"xnoai", 0},
        {"", 0},
        {",,,", 0},
        {":", 0},
        {"transfuse:", 0},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        CHECKF(robots(CASES[i].value, "transfuse") == CASES[i].want, "'%s' want %d", CASES[i].value, CASES[i].want);
    CHECK(robots("otherbot: noai", "otherbot") == 1);
    CHECK(robots("transfuse: noai", "otherbot") == 0);
    CHECK(robots("transfuse: noai", NULL) == 0);
    CHECK(robots("noai", NULL) == 1);
    /* Length-bounded: bytes after len are not read. */
    CHECK(fetch_robots_opted_out("nofollow, noai", 8, "transfuse") == 0);
}

static void test_retry_after(void)
{
    time_t now = 1700000000;
    CHECK(fetch_retry_after_parse("120", 3, now) == 120);
    CHECK(fetch_retry_after_parse("  5 \r\n", 6, now) == 5);
    CHECK(fetch_retry_after_parse("0", 1, now) == 0);
    CHECK(fetch_retry_after_parse("99999999999999999999", 20, now) >= 1e12);
    CHECK(fetch_retry_after_parse("", 0, now) < 0);
    CHECK(fetch_retry_after_parse("soon", 4, now) < 0);
    CHECK(fetch_retry_after_parse("-5", 2, now) < 0);
    /* 1700000000 is Tue, 14 Nov 2023 22:13:20 GMT. */
    const char *date = "Tue, 14 Nov 2023 22:13:50 GMT";
    CHECK(fetch_retry_after_parse(date, strlen(date), now) == 30);
    const char *past = "Tue, 14 Nov 2023 22:00:00 GMT";
    CHECK(fetch_retry_after_parse(past, strlen(past), now) == 0);
    const char *rfc850 = "Tuesday, 14-Nov-23 22:14:20 GMT";
    CHECK(fetch_retry_after_parse(rfc850, strlen(rfc850), now) == 60);
    char huge[200];
    memset(huge, 'x', sizeof huge);
    CHECK(fetch_retry_after_parse(huge, sizeof huge, now) < 0);
}

static int feed(FetchResponse *r, const char *line)
{
    return fetch_response_header(r, line, strlen(line), "transfuse", 1, 1700000000);
}

static void test_headers(void)
{
    FetchResponse r;
    fetch_response_reset(&r);
    CHECK(r.status == 0 && r.content_length == -1 && r.retry_after_s == -1);
    CHECK(feed(&r, "HTTP/1.1 100 Continue\r\n") == 0 && r.status == 100);
    CHECK(feed(&r, "\r\n") == 1);
    CHECK(feed(&r, "HTTP/1.1 302 Found\r\n") == 0 && r.status == 302);
    CHECK(feed(&r, "X-Robots-Tag: noai\r\n") == 0 && r.opted_out);
    CHECK(feed(&r, "Content-Length: 0\r\n") == 0 && r.content_length == 0);
    CHECK(feed(&r, "\r\n") == 1);
    /* A new block forgets the old one. */
    CHECK(feed(&r, "HTTP/2 200 \r\n") == 0 && r.status == 200 && !r.opted_out && r.content_length == -1);
    feed(&r, "content-type:   image/jpeg; q=1 \r\n");
    CHECK(strcmp(r.content_type, "image/jpeg; q=1") == 0);
    feed(&r, "CONTENT-LENGTH: 12345\r\n");
    CHECK(r.content_length == 12345);
    feed(&r, "Content-Length: 12a\r\n");
    CHECK(r.content_length == -1);
    feed(&r, "Content-Length: 999999999999999999999999\r\n");
    CHECK(r.content_length == INT64_MAX);
    feed(&r, "Retry-After: 7\r\n");
    CHECK(r.retry_after_s == 7);
    feed(&r, "X-Robots-Tag: otherbot: noai\r\n");
    CHECK(!r.opted_out);
    feed(&r, "x-robots-tag: transfuse: noimageai\r\n");
    CHECK(r.opted_out && strcmp(r.robots, "transfuse: noimageai") == 0);
    CHECK(feed(&r, "\n") == 1);
    /* Opt-out ignored when not honoured; bad status lines; no colon. */
    fetch_response_reset(&r);
    CHECK(fetch_response_header(&r, "X-Robots-Tag: noai", 18, "transfuse", 0, 0) == 0 && !r.opted_out);
    feed(&r, "HTTP/1.1 2x0 Odd");
    CHECK(r.status == 0);
    feed(&r, "garbage without colon");
    feed(&r, "HTTP/1.0 404");
    CHECK(r.status == 404);
    char ctl[] = "Content-Type: a\tb\x01" "c";
    feed(&r, ctl);
    CHECK(strcmp(r.content_type, "a b c") == 0);
}

static const char *kind_of(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strchr(text, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        REQUIRE(inet_pton(AF_INET6, text, &a->sin6_addr) == 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        REQUIRE(inet_pton(AF_INET, text, &a->sin_addr) == 1);
    }
    const char *k = fetch_address_kind((struct sockaddr *)&ss);
    return k ? k : "public";
}

static void test_addresses(void)
{
    static const struct {
        const char *addr, *kind;
    } CASES[] = {
        {"127.0.0.1", "loopback"},     {"127.255.0.9", "loopback"},     {"10.1.2.3", "private"},
        {"172.16.0.1", "private"},     {"172.31.255.255", "private"},   {"172.32.0.1", "public"},
        {"192.168.1.1", "private"},    {"169.254.169.254", "link-local"}, {"100.64.0.1", "shared"},
        {"100.128.0.1", "public"},     {"0.0.0.0", "unspecified"},      {"0.1.2.3", "unspecified"},
        {"224.0.0.1", "multicast"},    {"239.255.255.250", "multicast"}, {"240.0.0.1", "reserved"},
        {"255.255.255.255", "reserved"}, {"192.0.2.1", "documentation"}, {"198.18.0.1", "benchmark"},
        {"8.8.8.8", "public"},         {"93.184.216.34", "public"},     {"1.1.1.1", "public"},
        {"::", "unspecified"},         {"::1", "loopback"},             {"::ffff:127.0.0.1", "loopback"},
        {"::ffff:10.0.0.1", "private"}, {"::ffff:8.8.8.8", "public"},   {"64:ff9b::7f00:1", "loopback"},
        {"64:ff9b::808:808", "public"}, {"2002:7f00:1::", "loopback"},  {"2002:0808:0808::1", "public"},
        {"fe80::1", "link-local"},     {"fc00::1", "unique-local"},     {"fd12:3456::1", "unique-local"},
        {"ff02::1", "multicast"},      {"fec0::1", "private"},          {"2001:db8::1", "documentation"},
        {"::7f00:1", "reserved"},      {"100::1", "reserved"},          {"2606:4700::1111", "public"},
        {"2a00:1450:4001::200e", "public"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        CHECKF(strcmp(kind_of(CASES[i].addr), CASES[i].kind) == 0, "%s is %s, want %s", CASES[i].addr,
               kind_of(CASES[i].addr), CASES[i].kind);
}

static int match(const FetchCidr *c, size_t n, const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strchr(text, ':')) {
        ((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
        inet_pton(AF_INET6, text, &((struct sockaddr_in6 *)&ss)->sin6_addr);
    } else {
        ((struct sockaddr_in *)&ss)->sin_family = AF_INET;
        inet_pton(AF_INET, text, &((struct sockaddr_in *)&ss)->sin_addr);
    }
    return fetch_cidrs_match(c, n, (struct sockaddr *)&ss);
}

static void test_cidrs(void)
{
    FetchCidr *c;
    size_t n;
    TfError err = {{0}};
    REQUIRE(fetch_cidrs_parse(" 10.1.2.0/24, 127.0.0.1 ,fd00::/8,::1", &c, &n, &err) == 0);
    CHECK(n == 4);
    CHECK(match(c, n, "10.1.2.77") && !match(c, n, "10.1.3.1"));
    CHECK(match(c, n, "127.0.0.1") && !match(c, n, "127.0.0.2"));
    CHECK(match(c, n, "::ffff:127.0.0.1"));
    CHECK(match(c, n, "fd12::5") && !match(c, n, "fc00::1"));
    CHECK(match(c, n, "::1") && !match(c, n, "::2"));
    free(c);
    REQUIRE(fetch_cidrs_parse("172.16.0.0/12", &c, &n, &err) == 0);
    CHECK(match(c, n, "172.31.1.1") && !match(c, n, "172.32.0.1"));
    free(c);
    REQUIRE(fetch_cidrs_parse("0.0.0.0/0", &c, &n, &err) == 0);
    CHECK(match(c, n, "8.8.8.8") && !match(c, n, "::1"));
    free(c);
    CHECK(fetch_cidrs_parse("", &c, &n, &err) == 0 && n == 0 && c == NULL);
    CHECK(fetch_cidrs_parse(NULL, &c, &n, &err) == 0 && n == 0);
    CHECK(fetch_cidrs_parse("10.0.0.0/33", &c, &n, &err) == -1 && strstr(err.msg, "10.0.0.0/33"));
    CHECK(fetch_cidrs_parse("::/129", &c, &n, &err) == -1);
    CHECK(fetch_cidrs_parse("10.0.0.0/", &c, &n, &err) == -1);
    CHECK(fetch_cidrs_parse("localhost", &c, &n, &err) == -1);
    CHECK(fetch_cidrs_parse("1.2.3.4/8x", &c, &n, &err) == -1);
}

static void test_describe(void)
{
    char out[96];
    fetch_describe_bytes((const unsigned char *)"", 0, out, sizeof out);
    CHECK(strcmp(out, "empty body") == 0);
    const char *html = "\xef\xbb\xbf  <!DOCTYPE HTML><html>";
    fetch_describe_bytes((const unsigned char *)html, strlen(html), out, sizeof out);
    CHECK(strcmp(out, "HTML") == 0);
    fetch_describe_bytes((const unsigned char *)"<svg xmlns=", 11, out, sizeof out);
    CHECK(strcmp(out, "XML or SVG markup") == 0);
    fetch_describe_bytes((const unsigned char *)"{\"error\": 1}", 12, out, sizeof out);
    CHECK(strcmp(out, "JSON") == 0);
    fetch_describe_bytes((const unsigned char *)"Access denied\n", 14, out, sizeof out);
    CHECK(strcmp(out, "text") == 0);
    const unsigned char bin[] = {0x00, 0x01, 0xfe, 0x7f, 0x10, 0x20, 0x30, 0x40, 0x50};
    fetch_describe_bytes(bin, sizeof bin, out, sizeof out);
    CHECK(strcmp(out, "unrecognised bytes 00 01 fe 7f 10 20 30 40") == 0);
    fetch_describe_bytes(bin, 2, out, 12);
    CHECK(strlen(out) < 12);
}

static void test_names(void)
{
    unsigned char h[32];
    CHECK(fetch_sha256_from_hex("000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F", h) == 0);
    CHECK(h[0] == 0 && h[10] == 10 && h[31] == 31);
    CHECK(fetch_sha256_from_hex("00", h) == -1);
    CHECK(fetch_sha256_from_hex("g00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1", h) == -1);
    CHECK(fetch_sha256_from_hex(NULL, h) == -1);
    for (int i = 0; i < FETCH_OUTCOME_COUNT; i++) {
        CHECK(fetch_outcome_name((FetchOutcome)i) != NULL);
        for (int k = 0; k < i; k++)
            CHECK(strcmp(fetch_outcome_name((FetchOutcome)i), fetch_outcome_name((FetchOutcome)k)) != 0);
    }
    CHECK(strcmp(fetch_outcome_name(FETCH_OK), "ok") == 0);
    CHECK(strcmp(fetch_outcome_name(FETCH_OUTCOME_COUNT), "invalid") == 0);
    CHECK(fetch_outcome_transient(FETCH_TIMEOUT, 0) && fetch_outcome_transient(FETCH_HTTP_5XX, 503));
    CHECK(fetch_outcome_transient(FETCH_HTTP_4XX, 429) && !fetch_outcome_transient(FETCH_HTTP_4XX, 404));
    CHECK(!fetch_outcome_transient(FETCH_OPTED_OUT, 200) && !fetch_outcome_transient(FETCH_NOT_IMAGE, 200));
}

int main(void)
{
    test_robots();
    test_retry_after();
    test_headers();
    test_addresses();
    test_cidrs();
    test_describe();
    test_names();
    return test_main_end("test_fetch_policy");
}
