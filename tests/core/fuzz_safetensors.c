/* fuzz_safetensors.c: libFuzzer target for the safetensors header parser.
 * Whatever the bytes, opening must either fail with a message or yield
 * tensors whose every byte can be read (converted) without leaving the
 * buffer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly `size` bytes, so ASan sees any read past the end. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    TfError err;
    TfSafetensors *st = tf_safetensors_open_memory(copy, size, "fuzz.safetensors", &err);
    if (st) {
        for (size_t i = 0; i < tf_safetensors_count(st); i++) {
            const TfTensorInfo *t = tf_safetensors_at(st, i);
            if (tf_safetensors_find(st, t->name) != t)
                abort();
            if (t->numel > (1u << 20))
                continue;
            float *f = malloc((t->numel ? t->numel : 1) * sizeof *f);
            if (f && tf_tensor_to_f32(t, f, t->numel, &err) != 0) {
                volatile uint8_t sink = 0; /* touch the bytes of other dtypes */
                for (size_t j = 0; j < t->nbytes; j++)
                    sink ^= ((const uint8_t *)t->data)[j];
                (void)sink;
            }
            free(f);
        }
        (void)tf_safetensors_metadata(st, "format");
    }
    tf_safetensors_free(st);
    free(copy);
    return 0;
}
