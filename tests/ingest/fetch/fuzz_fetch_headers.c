/* fuzz_fetch_headers.c: response header lines, X-Robots-Tag values,
 * Retry-After values and byte descriptions from untrusted bytes. The input
 * is split at newlines into header lines fed to one FetchResponse, and
 * each piece also goes to the value parsers directly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fetch_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FetchResponse r;
    fetch_response_reset(&r);
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        fetch_response_header(&r, p, n, "transfuse", 1, 1700000000);
        fetch_robots_opted_out(p, n, "transfuse");
        fetch_retry_after_parse(p, n, 1700000000);
        p += n;
    }
    char out[96];
    fetch_describe_bytes(data, size, out, sizeof out);
    if (size < 256) {
        char text[256];
        memcpy(text, data, size);
        text[size] = 0;
        FetchCidr *c;
        size_t nc;
        if (fetch_cidrs_parse(text, &c, &nc, NULL) == 0)
            free(c);
    }
    return 0;
}
