/* Fuzz target: arbitrary bytes as a shard file. The cursor must walk them
 * without reading out of bounds, and every payload it returns must decode
 * or be refused, and print as JSON when it decodes. */
#include "shards.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ShardFile *f = shard_file_from_memory(data, size, "fuzz", NULL);
    if (!f)
        return 0;
    ShardArena arena;
    shard_arena_init(&arena, 4096);
    ShardCursor c;
    shard_cursor_init(&c, f);
    const uint8_t *p;
    size_t len;
    ShardProblem prob;
    int rc, steps = 0;
    while ((rc = shard_cursor_next(&c, &p, &len, &prob)) != 0 && steps++ < 100000) {
        if (rc < 0)
            continue;
        shard_arena_reset(&arena);
        Sample *s = sample_decode(p, len, &arena, NULL);
        if (s) {
            json_t *j = shard_message_to_json(&s->base, NULL);
            char *text = json_dumps(j, JSON_COMPACT);
            free(text);
            json_decref(j);
        }
    }
    /* The payload alone, as a Kafka message value would arrive. */
    Sample *s = sample_decode(data, size, NULL, NULL);
    sample_free(s);
    shard_arena_deinit(&arena);
    shard_file_free(f);
    return 0;
}
