/* fuzz_prom: libFuzzer target of the Prometheus text parser (what `transfuse
 * top` runs on every endpoint's answer). Small limits make the limit paths
 * reachable; every sample of an accepted document is walked so that a bad
 * pointer shows under ASan. */
#include <stdint.h>
#include <string.h>

#include "ops.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    PromLimits lim;
    prom_limits_init(&lim);
    lim.max_samples = 2000;
    lim.max_line = 4096;
    TfError err;
    PromDoc *d = prom_parse((const char *)data, size, &lim, &err);
    size_t sum = 0;
    for (size_t i = 0; i < prom_doc_count(d); i++) {
        const PromSample *s = prom_doc_at(d, i);
        sum += strlen(s->name);
        for (size_t j = 0; j < s->n_labels; j++)
            sum += strlen(s->labels[j].name) + strlen(s->labels[j].value);
        sum += (size_t)prom_doc_type(d, s->name);
        (void)prom_sample_label(s, "le");
    }
    prom_doc_free(d);
    return sum == (size_t)-1; /* keeps the walk from being optimised away */
}
