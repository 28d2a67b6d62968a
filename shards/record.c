/* record.c: what every reader of Sample bytes shares: the one validity
 * check of a decoded record and a key lookup that needs no decode. */
#include "shards.h"

#include <stdio.h>
#include <string.h>

const char *sample_dtype_name(int dtype)
{
    switch (dtype) {
    case TRANSFUSE__V1__DTYPE__DTYPE_F32: return "f32";
    case TRANSFUSE__V1__DTYPE__DTYPE_F16: return "f16";
    case TRANSFUSE__V1__DTYPE__DTYPE_BF16: return "bf16";
    case TRANSFUSE__V1__DTYPE__DTYPE_U8: return "u8";
    default: return "unspecified";
    }
}

size_t sample_dtype_size(int dtype)
{
    switch (dtype) {
    case TRANSFUSE__V1__DTYPE__DTYPE_F32: return 4;
    case TRANSFUSE__V1__DTYPE__DTYPE_F16:
    case TRANSFUSE__V1__DTYPE__DTYPE_BF16: return 2;
    case TRANSFUSE__V1__DTYPE__DTYPE_U8: return 1;
    default: return 0;
    }
}

/* NULL when the tensor's bytes match its dtype and shape, else why not. */
static const char *tensor_problem(const Transfuse__V1__Tensor *t)
{
    size_t es = sample_dtype_size(t->dtype);
    if (!es)
        return "tensor has no known dtype";
    if (!t->n_shape)
        return "tensor has no shape";
    uint64_t n = es;
    for (size_t i = 0; i < t->n_shape; i++) {
        if (!t->shape[i] || n > UINT64_MAX / t->shape[i])
            return "tensor shape is empty or too large";
        n *= t->shape[i];
    }
    return n == t->data.len ? NULL : "tensor data size does not match dtype x shape";
}

static int same_shape(const Transfuse__V1__Tensor *a, const Transfuse__V1__Tensor *b)
{
    return a->n_shape == b->n_shape && !memcmp(a->shape, b->shape, sizeof(uint32_t) * a->n_shape);
}

int sample_check(const Sample *s, const ShardFacts *facts, char *why, size_t cap)
{
    const char *p;
    if (!s->key || !*s->key) {
        snprintf(why, cap, "record has no key");
        return -1;
    }
    if (s->latent_mean && (p = tensor_problem(s->latent_mean))) {
        snprintf(why, cap, "latent_mean: %s", p);
        return -1;
    }
    if (s->latent_logvar && (p = tensor_problem(s->latent_logvar))) {
        snprintf(why, cap, "latent_logvar: %s", p);
        return -1;
    }
    if (s->latent_mean && s->latent_logvar && !same_shape(s->latent_mean, s->latent_logvar)) {
        snprintf(why, cap, "latent_logvar shape differs from latent_mean");
        return -1;
    }
    const Transfuse__V1__Tensor *t = s->latent_mean;
    if (t && facts && *facts->latent_dtype && strcmp(facts->latent_dtype, sample_dtype_name(t->dtype))) {
        snprintf(why, cap, "latent_mean dtype %s differs from the dataset's %s", sample_dtype_name(t->dtype),
                 facts->latent_dtype);
        return -1;
    }
    if (t && facts && facts->latent_rank &&
        ((size_t)facts->latent_rank != t->n_shape ||
         memcmp(facts->latent_shape, t->shape, sizeof(uint32_t) * t->n_shape))) {
        snprintf(why, cap, "latent_mean shape differs from the dataset's");
        return -1;
    }
    return 0;
}

/* Reads a varint at *p (below end). Returns 0, or -1 when malformed. */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

int sample_peek_key(const uint8_t *data, size_t len, const char **key, size_t *key_len)
{
    const uint8_t *p = data, *end = data + len;
    while (p < end) {
        uint64_t tag, n;
        if (varint(&p, end, &tag))
            return -1;
        switch (tag & 7) {
        case 0:
            if (varint(&p, end, &n))
                return -1;
            break;
        case 1:
            if ((size_t)(end - p) < 8)
                return -1;
            p += 8;
            break;
        case 2:
            if (varint(&p, end, &n) || n > (uint64_t)(end - p))
                return -1;
            if (tag >> 3 == 1) {
                *key = (const char *)p;
                *key_len = (size_t)n;
                return 1;
            }
            p += n;
            break;
        case 5:
            if ((size_t)(end - p) < 4)
                return -1;
            p += 4;
            break;
        default:
            return -1;
        }
    }
    return 0;
}
