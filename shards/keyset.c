/* keyset.c: the one set of record keys: exact keys (not just hashes, so a
 * resume never skips a row on a collision) in one append-only byte pool,
 * found through an open-addressing table of (hash, pool offset, value).
 * About 24 bytes per key of table at most half full plus the key itself. */
#include "shards.h"

#include <stdlib.h>
#include <string.h>

typedef struct KeySlot {
    uint64_t hash;   /* 0 = empty (real hashes are made non-zero) */
    uint64_t offset; /* of the key's u32 length + bytes in the pool */
    uint64_t value;
} KeySlot;

struct ShardKeySet {
    KeySlot *slots;
    size_t cap, n;   /* cap a power of two, n <= cap / 2 */
    unsigned char *pool;
    size_t pool_used, pool_cap;
};

static uint64_t key_hash(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    h ^= h >> 33; /* murmur3's finaliser spreads FNV's low bits */
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h ? h : 1;
}

ShardKeySet *shard_keyset_new(void)
{
    return calloc(1, sizeof(ShardKeySet));
}

void shard_keyset_free(ShardKeySet *s)
{
    if (!s)
        return;
    free(s->slots);
    free(s->pool);
    free(s);
}

size_t shard_keyset_count(const ShardKeySet *s)
{
    return s->n;
}

static int slot_matches(const ShardKeySet *s, const KeySlot *k, uint64_t h, const char *key, size_t len)
{
    if (k->hash != h)
        return 0;
    uint32_t klen;
    memcpy(&klen, s->pool + k->offset, sizeof klen);
    return klen == len && !memcmp(s->pool + k->offset + sizeof klen, key, len);
}

/* The slot holding key, or the empty slot where it would go. */
static KeySlot *slot_find(const ShardKeySet *s, uint64_t h, const char *key, size_t len)
{
    for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        KeySlot *k = &s->slots[i];
        if (!k->hash || slot_matches(s, k, h, key, len))
            return k;
    }
}

int shard_keyset_has(const ShardKeySet *s, const char *key, size_t len, uint64_t *value)
{
    if (!s->cap)
        return 0;
    KeySlot *k = slot_find(s, key_hash(key, len), key, len);
    if (!k->hash)
        return 0;
    if (value)
        *value = k->value;
    return 1;
}

static int grow(ShardKeySet *s)
{
    size_t cap = s->cap ? s->cap * 2 : 1024;
    KeySlot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->slots[i].hash)
            continue;
        size_t j = s->slots[i].hash & (cap - 1);
        while (slots[j].hash)
            j = (j + 1) & (cap - 1);
        slots[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return 0;
}

int shard_keyset_add(ShardKeySet *s, const char *key, size_t len, uint64_t value, uint64_t *first)
{
    if (len > UINT32_MAX)
        return -1;
    if ((s->n + 1) * 2 > s->cap && grow(s))
        return -1;
    uint64_t h = key_hash(key, len);
    KeySlot *k = slot_find(s, h, key, len);
    if (k->hash) {
        if (first)
            *first = k->value;
        return 0;
    }
    size_t need = sizeof(uint32_t) + len;
    if (need > s->pool_cap - s->pool_used) {
        size_t cap = s->pool_cap ? s->pool_cap : 1 << 16;
        while (need > cap - s->pool_used) {
            if (cap > SIZE_MAX / 2)
                return -1;
            cap *= 2;
        }
        unsigned char *pool = realloc(s->pool, cap);
        if (!pool)
            return -1;
        s->pool = pool;
        s->pool_cap = cap;
    }
    uint32_t klen = (uint32_t)len;
    memcpy(s->pool + s->pool_used, &klen, sizeof klen);
    if (len)
        memcpy(s->pool + s->pool_used + sizeof klen, key, len);
    *k = (KeySlot){h, s->pool_used, value};
    s->pool_used += need;
    s->n++;
    return 1;
}
