/* arena.c: a bump allocator handed to protobuf-c, so that decoding a record
 * costs no malloc in steady state: one reset frees a whole batch. Requests
 * that do not fit the main block go to spill blocks; the next reset grows
 * the main block to what the batch needed. */
#include "shards.h"

#include <stdlib.h>
#include <string.h>

struct ShardArenaBlock {
    struct ShardArenaBlock *next;
    size_t size;
    max_align_t data[];
};

static void *arena_alloc(void *ctx, size_t size)
{
    ShardArena *a = ctx;
    size_t aligned = (size + 15) & ~(size_t)15;
    if (aligned < size)
        return NULL;
    if (a->base && aligned <= a->cap - a->used) {
        void *p = a->base + a->used;
        a->used += aligned;
        return p;
    }
    struct ShardArenaBlock *b = malloc(sizeof *b + aligned);
    if (!b)
        return NULL;
    b->next = a->spill;
    b->size = aligned;
    a->spill = b;
    return b->data;
}

static void arena_free(void *ctx, void *p)
{
    (void)ctx;
    (void)p; /* everything goes at reset */
}

void shard_arena_init(ShardArena *a, size_t initial_bytes)
{
    memset(a, 0, sizeof *a);
    a->allocator.alloc = arena_alloc;
    a->allocator.free = arena_free;
    a->allocator.allocator_data = a;
    if (initial_bytes) {
        a->base = malloc(initial_bytes);
        a->cap = a->base ? initial_bytes : 0;
    }
}

void shard_arena_reset(ShardArena *a)
{
    size_t spilled = 0;
    while (a->spill) {
        struct ShardArenaBlock *next = a->spill->next;
        spilled += a->spill->size;
        free(a->spill);
        a->spill = next;
    }
    if (spilled) { /* grow so the next batch of this size fits */
        size_t want = a->cap + spilled + spilled / 2;
        unsigned char *nb = malloc(want);
        if (nb) {
            free(a->base);
            a->base = nb;
            a->cap = want;
        }
    }
    a->used = 0;
}

void shard_arena_deinit(ShardArena *a)
{
    shard_arena_reset(a);
    free(a->base);
    memset(a, 0, sizeof *a);
}

Sample *sample_decode(const uint8_t *data, size_t len, ShardArena *arena, TfError *err)
{
    Sample *s = transfuse__v1__sample__unpack(arena ? &arena->allocator : NULL, len, data);
    if (!s)
        tf_fail(err, "payload of %zu bytes is not a valid transfuse.v1.Sample", len);
    return s;
}

void sample_free(Sample *s)
{
    if (s)
        transfuse__v1__sample__free_unpacked(s, NULL);
}

uint8_t *sample_encode(const Sample *s, size_t *len)
{
    size_t n = transfuse__v1__sample__get_packed_size(s);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return NULL;
    *len = transfuse__v1__sample__pack(s, buf);
    return buf;
}
