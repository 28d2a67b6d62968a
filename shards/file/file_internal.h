/* file_internal.h: what the shard-file sources share and nobody else
 * needs: the index format and manifest updates. */
#ifndef TRANSFUSE_SHARDS_FILE_INTERNAL_H
#define TRANSFUSE_SHARDS_FILE_INTERNAL_H

#include "shards.h"

/* Index file NAME.tfrecord.idx, little-endian:
 *   "TFSIDX01" | u64 count | count x { u64 frame offset, u32 payload length,
 *   u32 crc32c(key) } | u32 crc32c of everything before it */
#define SHARD_INDEX_MAGIC "TFSIDX01"
#define SHARD_INDEX_SUFFIX ".idx"
#define SHARD_FILE_SUFFIX ".tfrecord"
#define SHARD_INDEX_HEADER 16u
#define SHARD_INDEX_ENTRY 16u

static inline uint64_t shard_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static inline uint32_t shard_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void shard_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void shard_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Publishes a complete shard written under the temporary names tmp_shard
 * and tmp_index (both in DIR): under the manifest lock, takes the next
 * free number for `prefix` (after every PREFIX-N file on disk and every
 * manifest entry), renames the index and then the shard to
 * PREFIX-NNNNNN.tfrecord[.idx] without replacing anything (a name that
 * exists is skipped), fsyncs DIR, and adds `entry` (its name set to the
 * chosen name, written into name[0..name_cap)): several writer processes
 * can share one folder and none ever replaces a shard or entry it did not
 * write (an entry whose name is listed already is refused). Creates the
 * manifest with `facts` if absent, otherwise the facts must agree. Returns 0, or -1 with err
 * filled (the temporary files then stay for the caller to remove). */
int shard_manifest_publish(const char *dir, const char *prefix, const ShardFacts *facts, const char *tmp_shard,
                           const char *tmp_index, ShardEntry *entry, char *name, size_t name_cap, int no_fsync,
                           TfError *err);

/* Facts to and from their JSON form in the manifest. */
json_t *shard_facts_to_json(const ShardFacts *f);
int shard_facts_from_json(const json_t *j, ShardFacts *f, TfError *err);

/* 1 when name is a plain file name (no '/', not "." or ".."). */
int shard_name_is_plain(const char *name);

#endif
