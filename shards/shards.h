/* shards: where records live.
 *
 * A record is the protobuf-encoded transfuse.v1.Sample (proto/). On disk,
 * records are stored in shard files with TFRecord framing, little-endian:
 *
 *     u64 length | u32 masked_crc32c(length bytes) | payload | u32 masked_crc32c(payload)
 *     mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8
 *
 * so existing TFRecord tooling can iterate them. Beside each shard
 * `NAME.tfrecord` lies `NAME.tfrecord.idx`, a binary index (one entry per
 * record: frame offset, payload length, CRC-32C of the key) that makes
 * random access and key lookup cheap without touching payloads. A dataset
 * folder holds shards and one `manifest.json` listing the complete shards
 * with record counts, bytes, a CRC-32C of each whole file, and the facts
 * shared by every record (tokenizer and VAE identity, latent shape/dtype,
 * latent scaling and shift). A shard is visible only when complete: it is
 * written under a temporary name, fsynced, renamed, and only then added to
 * the manifest.
 *
 * Readers never trust bytes: every framing, CRC and parse problem is
 * reported with the shard, the record index and the byte offset, and
 * reading continues with the next record that can be found.
 */
#ifndef TRANSFUSE_SHARDS_H
#define TRANSFUSE_SHARDS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "core.h"
#include "transfuse.pb-c.h"

typedef Transfuse__V1__Sample Sample;

/* ---- CRC-32C (Castagnoli) ---------------------------------------------------- */

/* Extends `crc` (0 to start) over len bytes. Uses the CPU's crc32
 * instruction where present, a table-driven fallback elsewhere. */
uint32_t shard_crc32c(uint32_t crc, const void *data, size_t len);

/* Same result, always through the portable table path (for tests). */
uint32_t shard_crc32c_portable(uint32_t crc, const void *data, size_t len);

/* The CRC-32C of A followed by B, from crc(A), crc(B) and B's length,
 * without reading either again. */
uint32_t shard_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

/* TFRecord's CRC mask and its inverse. */
uint32_t shard_crc_mask(uint32_t crc);
uint32_t shard_crc_unmask(uint32_t masked);

/* ---- framing ------------------------------------------------------------------ */

#define SHARD_FRAME_HEADER 12u  /* u64 length + u32 masked crc of it */
#define SHARD_FRAME_FOOTER 4u   /* u32 masked crc of the payload */
#define SHARD_MAX_RECORD (256u << 20) /* readers refuse larger payloads */

/* Fills the 12-byte header for a payload of `len` bytes. */
void shard_frame_header(uint8_t header[SHARD_FRAME_HEADER], uint64_t len);

/* ---- dataset facts --------------------------------------------------------------- */

/* Facts shared by every record of a dataset, kept in the manifest. Readers
 * refuse data whose tokenizer or VAE identity differs from what they were
 * configured for. Empty strings mean "not recorded". */
typedef struct ShardFacts {
    char tokenizer_id[80];     /* identity hash from the tokenizer library */
    char tokenizer_name[128];  /* human name, e.g. path or model id */
    char vae_id[80];           /* identity hash of VAE config + weights */
    char vae_name[128];
    double latent_scaling;     /* z = (mean - shift) * scaling; 0 if unknown */
    double latent_shift;
    char latent_dtype[8];      /* "f32", "f16", "bf16" or "" */
    uint32_t latent_shape[4];  /* channels-first, e.g. 4,32,32 */
    int latent_rank;           /* 0 if unknown */
} ShardFacts;

/* Returns 0 when every fact recorded in both `a` and `b` agrees; otherwise
 * -1 with err naming the first difference. */
int shard_facts_check(const ShardFacts *want, const ShardFacts *have, TfError *err);

/* ---- manifest --------------------------------------------------------------------- */

#define SHARD_MANIFEST_NAME "manifest.json"

typedef struct ShardEntry {
    char *name;          /* file name inside the dataset folder */
    uint64_t records;
    uint64_t bytes;
    uint32_t crc32c;     /* of the whole shard file */
} ShardEntry;

typedef struct ShardManifest {
    ShardFacts facts;
    ShardEntry *shards;
    size_t n_shards;
    uint64_t records;    /* sum over shards */
    uint64_t bytes;
} ShardManifest;

/* Loads DIR/manifest.json. Returns a new manifest (free with
 * shard_manifest_free) or NULL with err filled. */
ShardManifest *shard_manifest_load(const char *dir, TfError *err);
void shard_manifest_free(ShardManifest *m);

/* ---- writer ---------------------------------------------------------------------- */

typedef struct ShardWriterOptions {
    uint64_t max_shard_bytes;    /* roll when the next record would pass this; default 256 MiB */
    uint64_t max_shard_records;  /* roll at this many records; default 100000 */
    const char *name_prefix;     /* shard names are PREFIX-NNNNNN.tfrecord; default "shard" */
    int no_fsync;                /* tests only: skip fsync */
} ShardWriterOptions;

typedef struct ShardWriter ShardWriter;

/* Opens a dataset folder for appending (created if missing). If it holds a
 * manifest already, its facts must agree with `facts` and new shards are
 * numbered after the existing ones with the same prefix. opts may be NULL
 * for defaults. Returns NULL with err filled on failure. */
ShardWriter *shard_writer_open(const char *dir, const ShardWriterOptions *opts, const ShardFacts *facts,
                               TfError *err);

/* Appends one record (already-encoded Sample bytes) whose key is
 * key[0..key_len). Rolls to a new shard first when limits say so.
 * On failure the writer is unusable except for shard_writer_free. */
int shard_writer_append(ShardWriter *w, const void *payload, size_t len, const char *key, size_t key_len,
                        TfError *err);

/* Encodes and appends a Sample. */
int shard_writer_append_sample(ShardWriter *w, const Sample *sample, TfError *err);

/* Completes the current shard (if it has records): writes its index,
 * fsyncs, renames both into place and adds the shard to the manifest. */
int shard_writer_flush(ShardWriter *w, TfError *err);

/* Flushes and frees the writer. The writer is freed even on failure. */
int shard_writer_close(ShardWriter *w, TfError *err);

/* Frees the writer, discarding an incomplete shard. NULL is a no-op. */
void shard_writer_free(ShardWriter *w);

/* Records and shards completed so far by this writer. */
uint64_t shard_writer_records(const ShardWriter *w);
uint64_t shard_writer_shards(const ShardWriter *w);

/* ---- reader ---------------------------------------------------------------------- */

/* One problem found while reading: where and what. */
typedef struct ShardProblem {
    char shard[256];
    uint64_t record;    /* index of the record in its shard (best known) */
    uint64_t offset;    /* byte offset in the shard file */
    char what[256];
} ShardProblem;

/* Formats "SHARD: record R at byte O: WHAT" into out. */
void shard_problem_format(const ShardProblem *p, char *out, size_t cap);

typedef struct ShardFile ShardFile;

/* Maps a shard file and, if present and sound, its index. An index that
 * is missing or damaged is not an error: shard_file_index_problem says why
 * it is not used, and reading falls back to scanning. Returns NULL with
 * err filled when the file itself cannot be opened. */
ShardFile *shard_file_open(const char *path, TfError *err);
void shard_file_free(ShardFile *f);

/* Reads a whole shard file into memory (transparent huge pages where the
 * kernel offers them) for one sequential pass. On virtual machines the
 * page-table walks of a 4 KiB-page mmap cost more than the copy: measured
 * here, CRC over mmapped page cache ran at 1.2 GB/s and over a read buffer
 * at 6.5 GB/s. Same contract as shard_file_open otherwise. */
ShardFile *shard_file_load(const char *path, TfError *err);

/* Wraps bytes already in memory (a fuzz input, a range fetched from a
 * topic) as an unindexed shard file named `name`. The bytes are not copied:
 * they must outlive the ShardFile. */
ShardFile *shard_file_from_memory(const void *data, size_t size, const char *name, TfError *err);

const char *shard_file_path(const ShardFile *f);
const uint8_t *shard_file_data(const ShardFile *f);
uint64_t shard_file_size(const ShardFile *f);

/* Number of records listed by the index, or -1 when there is no usable index. */
int64_t shard_file_index_count(const ShardFile *f);
/* Why the index is not used ("" when it is). */
const char *shard_file_index_problem(const ShardFile *f);

/* A sequential position in one shard file. */
typedef struct ShardCursor {
    const ShardFile *file;
    uint64_t offset;    /* of the next frame */
    uint64_t record;    /* index of the next record */
    uint32_t payload_crc; /* CRC-32C (unmasked) of the last payload returned */
} ShardCursor;

void shard_cursor_init(ShardCursor *c, const ShardFile *f);

/* Reads the next record. Returns 1 with *payload and *len pointing into the
 * mapped file, 0 at the clean end of the file, or -1 with *problem filled;
 * after -1 the cursor has moved past the damage (to the next frame that
 * checks out), so calling again continues with the rest of the file. */
int shard_cursor_next(ShardCursor *c, const uint8_t **payload, size_t *len, ShardProblem *problem);

/* Random access through the index: record `index` of the file. Returns 1,
 * or -1 with *problem filled (no index, out of range, bad frame). */
int shard_file_get(const ShardFile *f, uint64_t index, const uint8_t **payload, size_t *len,
                   ShardProblem *problem);

/* Finds a record by key through the index (candidates by key CRC, then
 * parsed to compare). Returns its index, or -1 if absent or unindexed. */
int64_t shard_file_find_key(const ShardFile *f, const char *key);

/* ---- record decoding --------------------------------------------------------------- */

/* A bump allocator for protobuf-c: unpacking a record allocates from it,
 * and one reset frees everything, so steady-state reading does no malloc. */
typedef struct ShardArena {
    ProtobufCAllocator allocator; /* pass &arena.allocator to protobuf-c */
    unsigned char *base;
    size_t used, cap;
    struct ShardArenaBlock *spill; /* blocks beyond base, freed on reset */
} ShardArena;

void shard_arena_init(ShardArena *a, size_t initial_bytes);
void shard_arena_reset(ShardArena *a);
void shard_arena_deinit(ShardArena *a);

/* Decodes Sample bytes. With an arena, the result lives until the arena is
 * reset; without (NULL), free it with sample_free. Returns NULL with err
 * filled when the bytes are not a valid Sample. */
Sample *sample_decode(const uint8_t *data, size_t len, ShardArena *arena, TfError *err);
void sample_free(Sample *s);

/* Encodes a Sample into a malloc'd buffer. Returns NULL on out of memory. */
uint8_t *sample_encode(const Sample *s, size_t *len);

/* ---- JSON form ---------------------------------------------------------------------- */

/* The JSON form of any protobuf-c message, by reflection over its
 * descriptor: proto field names, bytes as base64, enums by name, maps as
 * objects, 64-bit integers as numbers. Fields at their default value are
 * left out. `fields` (NULL for all) is a NULL-terminated list of top-level
 * field names to keep. Returns a new reference. */
json_t *shard_message_to_json(const ProtobufCMessage *m, const char *const *fields);

/* Builds a message of type `desc` from its JSON form (the inverse of the
 * above). Unknown names are errors. Free the result with
 * protobuf_c_message_free_unpacked(m, NULL). */
ProtobufCMessage *shard_message_from_json(const ProtobufCMessageDescriptor *desc, const json_t *j,
                                          TfError *err);

/* ---- command line --------------------------------------------------------------------- */

/* `transfuse shards ...`: ls, stat, verify, cat, import. */
int shards_main(int argc, char **argv);

#endif
