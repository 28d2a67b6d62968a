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
 * Several writers (threads or processes) may append to one folder: each
 * writes under a temporary name of its own, and publishes under the
 * exclusive lock on DIR/.manifest.lock, where the shard number is taken
 * (after every file on disk and every entry), the files are renamed with
 * RENAME_NOREPLACE (link + unlink where unsupported) and the entry added.
 * No writer ever replaces a shard or manifest entry it did not write
 * (docs/RECORDS.md).
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
    json_t *source;      /* where its records came from, or NULL: for an archive of a topic
                          * {"kind":"kafka","cluster_id","topic","offsets":{"P":next}}, the
                          * topic position after its last record (owned by the manifest) */
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

/* 1 when appending a record of `len` bytes would first complete the
 * current shard (so a caller can attach its source position before). */
int shard_writer_would_roll(const ShardWriter *w, size_t len);

/* Sets the "source" object stored with the next shard this writer
 * publishes (a copy is kept; NULL clears it). Stored atomically with the
 * shard's manifest entry, so a reader of the manifest knows exactly which
 * input records the published shards hold: `shards archive` resumes from
 * it. Returns 0, or -1 when out of memory. */
int shard_writer_set_source(ShardWriter *w, const json_t *source);

/* Records and shards completed so far by this writer. */
uint64_t shard_writer_records(const ShardWriter *w);
uint64_t shard_writer_shards(const ShardWriter *w);

/* ---- reader ---------------------------------------------------------------------- */

/* One problem found while reading: where and what. From a topic, `shard`
 * is the topic, `partition` the partition and `offset` (= `record`) the
 * message offset; from a shard file `partition` is -1. */
typedef struct ShardProblem {
    char shard[256];
    uint64_t record;    /* index of the record in its shard (best known) */
    uint64_t offset;    /* byte offset in the shard file */
    char what[320];
    int32_t partition;  /* Kafka: the partition; shard files: -1 */
} ShardProblem;

/* Formats "SHARD: record R at byte O: WHAT" (from a topic: "TOPIC
 * partition P offset O: WHAT") into out. */
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

/* Moves the cursor to record `index` of its file: through the index when
 * it is usable, else by reading the records before it (damaged frames are
 * skipped and counted as the scan counts them). Past the last record the
 * cursor is at the end. */
void shard_cursor_seek(ShardCursor *c, uint64_t index);

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

/* The one check of a decoded record, used by import, verify, archive and
 * the record source: a non-empty key; every tensor with a known dtype, a
 * non-empty shape and data bytes equal to dtype size x shape; the
 * log-variance shaped like the mean; the mean's dtype and shape equal to
 * `facts` (when facts is not NULL and records them). Returns 0, or -1 with
 * the first problem written into why[0..cap). */
int sample_check(const Sample *s, const ShardFacts *facts, char *why, size_t cap);

/* "f32", "f16", "bf16", "u8" or "unspecified" for a Transfuse__V1__DType. */
const char *sample_dtype_name(int dtype);
/* Bytes per element of a Transfuse__V1__DType, 0 when unspecified. */
size_t sample_dtype_size(int dtype);

/* Finds the key (field 1) in Sample bytes without decoding the rest.
 * Returns 1 with *key and *key_len pointing into data, 0 when there is no key
 * field, -1 when the bytes are not well-formed protobuf before it. */
int sample_peek_key(const uint8_t *data, size_t len, const char **key, size_t *key_len);

/* ---- key set ----------------------------------------------------------------------------
 *
 * The one set of record keys, used wherever keys are counted: duplicate
 * detection in `shards verify` (folders and topics) and the keys already
 * in a dataset when a job resumes. Keys are kept exactly (a hash
 * collision never makes two keys one); each key carries a 64-bit value
 * the caller chooses (e.g. where it was first seen). Not thread-safe. */
typedef struct ShardKeySet ShardKeySet;

/* Returns an empty set, or NULL when out of memory. */
ShardKeySet *shard_keyset_new(void);
void shard_keyset_free(ShardKeySet *s);

/* Adds key[0..len) with `value`. Returns 1 when the key was new, 0 when it
 * was present (the set unchanged, *first set to the value stored with it
 * when first is not NULL), -1 when out of memory (the set unchanged). */
int shard_keyset_add(ShardKeySet *s, const char *key, size_t len, uint64_t value, uint64_t *first);

/* 1 when key[0..len) is in the set (*value set when not NULL), else 0. */
int shard_keyset_has(const ShardKeySet *s, const char *key, size_t len, uint64_t *value);

/* Number of keys in the set. */
size_t shard_keyset_count(const ShardKeySet *s);

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

/* ---- Kafka: the second home of the same records ------------------------------------
 *
 * A Kafka message value is the Sample bytes of a shard record; its key is
 * the sample key; its headers name the schema and the tokenizer and VAE
 * identity (KAFKA_HEADER_*). Addresses are written kafka://HOST:PORT[,HOST:PORT...]/TOPIC.
 * Extra librdkafka properties can be passed anywhere as a NULL-terminated
 * list of "key=value" strings (like kcat's -X).
 *
 * librdkafka's mock cluster (`transfuse broker`) keeps only about 5 MiB per
 * partition and drops older data silently: producers writing to it use flow
 * control (KafkaSinkOptions.flow_group) and consumers always run with
 * auto.offset.reset=error, so a gap is an error and never a silent skip.
 */

#define KAFKA_HEADER_SCHEMA "transfuse-schema"        /* "transfuse.v1.Sample" */
#define KAFKA_HEADER_TOKENIZER "transfuse-tokenizer"  /* ShardFacts.tokenizer_id */
#define KAFKA_HEADER_VAE "transfuse-vae"              /* ShardFacts.vae_id */
#define KAFKA_SCHEMA_NAME "transfuse.v1.Sample"
#define KAFKA_MAX_PARTITIONS 100000

/* Splits kafka://BOOTSTRAP/TOPIC. Returns 0, or -1 with err saying what is
 * wrong with the address. */
int kafka_url_parse(const char *url, char *bootstrap, size_t bootstrap_cap, char *topic, size_t topic_cap,
                    TfError *err);

/* Returns 1 when `path` starts with kafka://. */
int kafka_url_is(const char *path);

/* -- position: next offset per partition, saved in trainer checkpoints -- */

typedef struct KafkaPosition {
    char topic[256];
    size_t n;            /* partitions listed, sorted by partition */
    int32_t *partition;
    int64_t *offset;     /* next offset to read */
} KafkaPosition;

/* Returns a new empty position for `topic`, or NULL when out of memory. */
KafkaPosition *kafka_position_new(const char *topic);
void kafka_position_free(KafkaPosition *p);
/* Sets (or adds) the next offset of one partition. */
int kafka_position_set(KafkaPosition *p, int32_t partition, int64_t offset, TfError *err);
/* The next offset of `partition`, or -1 when the position does not list it. */
int64_t kafka_position_get(const KafkaPosition *p, int32_t partition);
/* {"topic": T, "offsets": {"0": 12, "3": 40}} (new reference). */
json_t *kafka_position_to_json(const KafkaPosition *p);
/* The inverse; NULL with err filled on a malformed object. */
KafkaPosition *kafka_position_from_json(const json_t *j, TfError *err);
/* A deep copy, or NULL when out of memory. */
KafkaPosition *kafka_position_copy(const KafkaPosition *p);

/* -- producer sink -- */

typedef struct KafkaSinkOptions {
    const char *bootstrap;
    const char *topic;
    const ShardFacts *facts;       /* header values; NULL: schema header only */
    const char *const *config;     /* extra "key=value" properties, NULL-terminated; may be NULL */
    /* Flow control for brokers with bounded retention (the mock cluster):
     * at most flow_max_bytes of payload per partition may be ahead of what
     * group `flow_group` has committed. NULL: off. */
    const char *flow_group;
    uint64_t flow_max_bytes;       /* default 3 MiB (the mock keeps ~5 MiB of batches) */
    const TfStopFlag *stop;        /* when set, waits give up (see "stopping" in core.h) */
} KafkaSinkOptions;

typedef struct KafkaSink KafkaSink;

/* Connects an idempotent producer to an existing topic (the topic is
 * looked up first: a missing topic is an error, never auto-created).
 * Returns NULL with err filled on failure. */
KafkaSink *kafka_sink_new(const KafkaSinkOptions *opts, TfError *err);

/* Queues one record (Sample bytes; copied) with its key. partition < 0
 * picks the partition from the key (murmur2, as Java clients do). Blocks
 * while the local queue is full or flow control says wait. Returns 0, or
 * -1 when the record cannot be queued (then nothing was queued). */
int kafka_sink_send(KafkaSink *s, int32_t partition, const void *payload, size_t len, const char *key,
                    size_t key_len, TfError *err);

/* Waits for every delivery report of what was sent so far. Returns 0 when
 * all records sent since the previous flush were delivered; -1 when any
 * failed (err names how many and the first reason) or the timeout passed.
 * A unit of work is done only when this returned 0 after its last send. */
int kafka_sink_flush(KafkaSink *s, int timeout_ms, TfError *err);

/* Counters since creation. */
uint64_t kafka_sink_delivered(const KafkaSink *s);
uint64_t kafka_sink_failed(const KafkaSink *s);
int32_t kafka_sink_partitions(const KafkaSink *s);
/* 1 when the cluster is librdkafka's mock cluster (bounded retention). */
int kafka_sink_is_mock(const KafkaSink *s);

/* Flushes (up to 30 s) and frees. NULL is a no-op. */
void kafka_sink_free(KafkaSink *s);

/* -- admin -- */

/* Creates a topic through the admin API. Returns 0 when created, 1 when it
 * exists already, -1 with err saying why the cluster refused (and what to
 * do about it). */
int kafka_topic_create(const char *bootstrap, const char *topic, int partitions, int replication,
                       const char *const *config, TfError *err);

typedef struct KafkaPartitionInfo {
    int32_t partition;
    int32_t leader;
    int64_t low, high;   /* watermarks; -1 when unknown */
} KafkaPartitionInfo;

typedef struct KafkaTopicInfo {
    char topic[256];
    char cluster_id[128];
    int brokers;
    int is_mock;
    size_t n;
    KafkaPartitionInfo *parts;
} KafkaTopicInfo;

/* Fills `info` with the topic's partitions and watermarks. Returns 0, or
 * -1 with err filled (e.g. no such topic). Free with kafka_topic_info_deinit. */
int kafka_topic_describe(const char *bootstrap, const char *topic, const char *const *config,
                         KafkaTopicInfo *info, TfError *err);
void kafka_topic_info_deinit(KafkaTopicInfo *info);

/* Committed offsets of `group` for the partitions of `topic` (offset -1:
 * none committed). Returns a new position, or NULL with err filled. */
KafkaPosition *kafka_group_committed(const char *bootstrap, const char *topic, const char *group,
                                     const char *const *config, TfError *err);

/* Lists the consumer groups the cluster knows. Returns a NULL-terminated
 * malloc'd array of malloc'd names, or NULL with err filled (the mock
 * cluster cannot list groups). Free with kafka_strings_free. */
char **kafka_group_list(const char *bootstrap, const char *const *config, TfError *err);
void kafka_strings_free(char **list);

/* -- consumer source -- */

typedef enum {
    KAFKA_UNTIL_FOREVER = 0, /* stream: kafka_source_next never reports the end */
    KAFKA_UNTIL_EOF,         /* end when every assigned partition reached its end (and stayed there eof_idle_ms) */
    KAFKA_UNTIL_SNAPSHOT,    /* end at the high watermarks seen when the source opened */
} KafkaUntil;

typedef struct KafkaSourceOptions {
    const char *bootstrap;
    const char *topic;
    const char *group_id;            /* offsets are committed under it; default "transfuse" */
    int rank, world_size;            /* partitions p with p % world_size == rank; default 0 of 1 */
    const int32_t *partitions;       /* explicit list instead (n_partitions), or NULL */
    size_t n_partitions;
    const KafkaPosition *start;      /* resume here; partitions not listed start from
                                      * the group's committed offset, else the beginning */
    const KafkaPosition *end;        /* exclusive end offsets per partition, or NULL */
    KafkaUntil until;
    int eof_idle_ms;                 /* KAFKA_UNTIL_EOF: how long partitions must stay drained */
    size_t queue_records;            /* prefetch bound; default 1024 */
    size_t queue_bytes;              /* prefetch bound; default 64 MiB (librdkafka holds up to half
                                      * as much again before its fetcher waits) */
    int pause_after_ms;              /* pause fetching when the queue stayed full this long; default 1000 */
    int commit_interval_ms;          /* async commit of the position; default 1000, <0 never */
    const ShardFacts *expect;        /* refuse records whose headers name other identities */
    const char *const *config;       /* extra "key=value" properties */
} KafkaSourceOptions;

/* One record handed out by the source; valid until the next call. */
typedef struct KafkaRecord {
    const uint8_t *payload;
    size_t len;
    const char *key;     /* not NUL-terminated */
    size_t key_len;
    int32_t partition;
    int64_t offset;
} KafkaRecord;

typedef struct KafkaSource KafkaSource;

/* What kafka_source_next returns besides -1 (error). */
#define KAFKA_IDLE 0     /* nothing arrived within the timeout; the stream goes on */
#define KAFKA_RECORD 1   /* *rec is filled */
#define KAFKA_END 2      /* no more data for this rank: every assigned partition is done */

/* Assigns this rank's partitions (statically: no group rebalancing) and
 * starts prefetching. Returns NULL with err filled on failure. */
KafkaSource *kafka_source_new(const KafkaSourceOptions *opts, TfError *err);

/* Next record in per-partition offset order. Returns KAFKA_RECORD,
 * KAFKA_IDLE after timeout_ms with nothing, KAFKA_END when this rank has
 * no more data, or -1 with err filled: an offset out of range (data was
 * deleted before it was read), a record with the wrong identity, or a
 * broker error that will not go away. */
int kafka_source_next(KafkaSource *s, KafkaRecord *rec, int timeout_ms, TfError *err);

/* Copies header `name` of the record last handed out into out (""
 * when absent). Returns 1 when present, 0 when not. */
int kafka_source_record_header(const KafkaSource *s, const char *name, char *out, size_t cap);

/* The position after the last record handed out: save it with the
 * checkpoint and pass it as KafkaSourceOptions.start to resume exactly. */
const KafkaPosition *kafka_source_position(const KafkaSource *s);

/* Partitions assigned to this source (sorted). */
size_t kafka_source_partitions(const KafkaSource *s, const int32_t **partitions);

/* Commits the position under the group id, synchronously. */
int kafka_source_commit(KafkaSource *s, TfError *err);

/* Counters: records handed out, times the prefetch queue paused fetching,
 * offset jumps seen (records skipped by the broker, e.g. compaction). */
typedef struct KafkaSourceStats {
    uint64_t records, bytes, pauses, gaps;
} KafkaSourceStats;
void kafka_source_stats(const KafkaSource *s, KafkaSourceStats *out);

/* Stops prefetching, commits the position (unless commit_interval_ms < 0)
 * and frees. NULL is a no-op. */
void kafka_source_free(KafkaSource *s);

/* -- group consumer: work shared by the members of a consumer group --
 *
 * For work queues (ingest jobs, ranges of a crops topic), not for trainer
 * ranks (those use the static KafkaSource). Members subscribe to `topic`
 * under `group_id`; the group spreads the partitions over the live
 * members and moves them when one joins, leaves or dies (session timeout).
 * One record is in hand at a time: after kafka_group_next handed one out,
 * every assigned partition is paused until the next call. Offsets are
 * committed only by kafka_group_commit (no auto commit), so a unit of work
 * counts as done only when the caller committed it after its output was
 * durable; a member that dies before leaves the record to the next owner
 * of its partition. A partition starts at the group's committed offset, or
 * at the beginning when the group never committed one; a committed offset
 * that was deleted (retention) is an error. */

typedef struct KafkaGroupOptions {
    const char *bootstrap;
    const char *topic;
    const char *group_id;              /* required */
    const char *const *config;         /* extra "key=value" properties (partition.assignment.strategy...) */
    int session_timeout_ms;            /* a dead member's partitions move after this; default 6000 */
    int max_poll_interval_ms;          /* a member that neither calls next nor serve this long is
                                        * dropped from the group; default 300000 */
    int no_fetch;                      /* 1: membership only, partitions stay paused (the caller reads
                                        * the assigned partitions itself, e.g. with a KafkaSource) */
    /* Called on the thread that calls kafka_group_next/serve/free, inside
     * the rebalance, before the partitions are given up: finish (and commit
     * with kafka_group_commit, which works here) or abandon the work in hand
     * of these partitions. The list is sorted. NULL: nothing to do. */
    void (*on_revoke)(void *ctx, const int32_t *partitions, size_t n);
    /* Called after partitions were added to this member. */
    void (*on_assign)(void *ctx, const int32_t *partitions, size_t n);
    void *ctx;
} KafkaGroupOptions;

typedef struct KafkaGroup KafkaGroup;

/* Joins the group (the topic must exist). Returns NULL with err filled.
 * Membership comes with the first kafka_group_next or serve calls. */
KafkaGroup *kafka_group_new(const KafkaGroupOptions *opts, TfError *err);

/* The next record of this member's partitions (partition order within a
 * partition). Returns KAFKA_RECORD with *rec filled (valid until the next
 * call), KAFKA_IDLE after timeout_ms with nothing, -1 with err filled (a
 * deleted offset, a missing topic, no permission). */
int kafka_group_next(KafkaGroup *g, KafkaRecord *rec, int timeout_ms, TfError *err);

/* Keeps the member alive while work is in hand: polls for up to
 * timeout_ms, runs rebalance callbacks, hands out nothing. Call it at
 * least every max_poll_interval_ms. Returns 0, or -1 with err filled. */
int kafka_group_serve(KafkaGroup *g, int timeout_ms, TfError *err);

/* Commits next_offset (the offset after the finished record) of
 * `partition`, synchronously. Returns 0, or -1 with err filled when the
 * partition is no longer this member's (the work will be redone by its new
 * owner) or the commit failed. */
int kafka_group_commit(KafkaGroup *g, int32_t partition, int64_t next_offset, TfError *err);

/* 1 when `partition` is assigned to this member now. */
int kafka_group_owns(const KafkaGroup *g, int32_t partition);

/* The partitions assigned now (sorted) and, per partition, its committed
 * offset when it was assigned (updated by kafka_group_commit). Returns the
 * count; the arrays stay valid until the next call into the group. */
size_t kafka_group_assignment(const KafkaGroup *g, const int32_t **partitions, const int64_t **start);

/* Rebalance callbacks seen so far (assignments and revocations). */
uint64_t kafka_group_rebalances(const KafkaGroup *g);

/* This member's id in the group ("" before joining), copied into out. */
const char *kafka_group_member_id(KafkaGroup *g, char *out, size_t cap);

/* Leaves the group (on_revoke runs for what is assigned, so the other
 * members take over at once) and frees. NULL is a no-op. */
void kafka_group_free(KafkaGroup *g);

/* ---- record source: one reader for both homes --------------------------------------------
 *
 * Every reader of records (the `shards` commands, ingest resume, the
 * trainer, benchmarks) goes through this one loop, over a dataset folder,
 * one shard file, or a Kafka topic (path kafka://HOST:PORT/TOPIC):
 *
 *     RecordSourceOptions o = {.path = path, .rank = r, .world_size = w, .check = 1};
 *     RecordSource *src = record_source_open(&o, &err);
 *     Record rec; ShardProblem prob; int rc;
 *     while ((rc = record_source_next(src, &rec, 1000, &prob, &err)) != RECORD_SOURCE_END) {
 *         if (rc == RECORD_SOURCE_RECORD) use(rec.payload, rec.len, rec.sample);
 *         else if (rc == RECORD_SOURCE_PROBLEM) count_and_report(&prob);   (reading goes on)
 *         else if (rc < 0) fail(err.msg);                                   (cannot go on)
 *         (RECORD_SOURCE_IDLE: nothing arrived within the timeout; a topic goes on)
 *     }
 *     json_t *pos = record_source_position_json(src);  (save; pass as .position to resume)
 *     record_source_free(src);
 *
 * Order. A folder is read in manifest order (the order in which shards were
 * published), records in file order; a folder without a manifest in file
 * name order. A topic: in offset order within each partition, partitions
 * interleaved as they arrive (the position is exact either way).
 *
 * Split (rank r of world w, a pure function of r, w and the dataset):
 *   folders, RECORD_SPLIT_SHARDS (default): shards i (manifest order) with
 *     i % w == r, each whole. Cheap and local, but uneven when the shard
 *     count is not a multiple of w or shards differ in size.
 *   folders, RECORD_SPLIT_BLOCKS: the N records of the dataset in order,
 *     cut into w contiguous blocks whose sizes differ by at most one
 *     (rank r: from r*(N/w) + min(r, N%w), N/w + (r < N%w) records), N
 *     counted from the manifest. Balanced for data-parallel training, and
 *     each rank reads one contiguous range (at most a few shards).
 *   topics: partitions p with p % w == r (KafkaSourceOptions).
 * The shards a folder source reads are fixed when it opens (shards
 * published later are not seen), and a position records how many there
 * were, so a resume cuts the same blocks even when the folder has grown.
 *
 * Position: record_source_position_json, a JSON object naming the next
 * record to read: for folders {"kind":"dataset", "split", "rank", "world",
 * "shards" (count read), "shard" (name), "shard_index", "record" (index in
 * the shard), "records_read"}; for topics {"kind":"kafka", "rank", "world",
 * "topic", "offsets": {"PARTITION": next offset}}. Passed back as
 * RecordSourceOptions.position, reading resumes at exactly that record
 * (refused, with a message, when rank, world, split or the dataset's first
 * shards differ).
 *
 * Identity: with `expect`, a source refuses (record_source_open fails, or
 * a topic record makes record_source_next return -1) data whose tokenizer,
 * VAE, latent dtype or shape differ from the expected facts, naming both.
 *
 * Problems (framing, CRC, parse, and with `check` the record check, with
 * `check_shards` the whole-shard checks) come back one at a time as
 * RECORD_SOURCE_PROBLEM with their shard, record and offset (or topic,
 * partition and offset); the record is skipped and reading goes on.
 */

typedef enum {
    RECORD_SPLIT_SHARDS = 0, /* folders: shard i to rank i % world */
    RECORD_SPLIT_BLOCKS,     /* folders: contiguous, balanced record ranges */
} RecordSplit;

typedef struct RecordSourceOptions {
    const char *path;               /* dataset folder, shard file, or kafka://HOST:PORT/TOPIC */
    int rank, world_size;           /* default 0 of 1 */
    RecordSplit split;
    const json_t *position;         /* resume here (record_source_position_json); NULL: the start */
    const ShardFacts *expect;       /* refuse other identities; NULL: accept any */
    int decode;                     /* fill Record.sample */
    int check;                      /* decode and sample_check every record; a bad one is a PROBLEM
                                     * (for topics also: message key equal to the sample key) */
    int check_shards;               /* folders, split SHARDS: also file size, whole-file CRC-32C and
                                     * record counts against manifest and index, index damage,
                                     * shard files the manifest does not list, a missing manifest */
    /* Folders: read only shards for which filter returns 1 (e.g. publish
     * skipping shards already done). NULL: all. */
    int (*shard_filter)(void *ctx, const char *name, size_t shard_index);
    void *filter_ctx;
    const TfStopFlag *stop;         /* when set, record_source_next returns IDLE at once */
    /* Topics: consumer settings (bootstrap, topic, rank and world are
     * taken from above; start from `position` when given). NULL: a
     * stream (KAFKA_UNTIL_FOREVER) under group "transfuse". */
    const KafkaSourceOptions *kafka;
} RecordSourceOptions;

/* One record handed out; valid until the next call. */
typedef struct Record {
    const uint8_t *payload;  /* Sample bytes */
    size_t len;
    const char *key;         /* not NUL-terminated; from the payload (folders) or the message key (topics) */
    size_t key_len;
    const Sample *sample;    /* with decode or check; else NULL */
    const char *shard;       /* folders: shard name; topics: the topic */
    size_t shard_index;      /* folders: index in manifest order */
    uint64_t record;         /* folders: index in its shard; topics: the offset */
    uint64_t offset;         /* folders: byte offset of its frame; topics: the offset */
    int32_t partition;       /* topics; -1 for folders */
} Record;

/* What record_source_next returns besides -1 (cannot go on, err filled). */
#define RECORD_SOURCE_IDLE 0     /* nothing within the timeout (topics), or a stop was requested */
#define RECORD_SOURCE_RECORD 1   /* *rec filled */
#define RECORD_SOURCE_END 2      /* this rank has no more records */
#define RECORD_SOURCE_PROBLEM 3  /* *problem filled; the damaged record is skipped, go on */

typedef struct RecordSource RecordSource;

/* Opens the source. Returns NULL with err filled: no such path, a topic
 * that does not exist, facts that differ from `expect`, a position that
 * does not fit. */
RecordSource *record_source_open(const RecordSourceOptions *opts, TfError *err);

/* Next record of this rank. timeout_ms bounds waiting for a topic (< 0:
 * forever); folders never wait. Returns RECORD_SOURCE_* or -1. */
int record_source_next(RecordSource *src, Record *rec, int timeout_ms, ShardProblem *problem, TfError *err);

/* The position after the last record handed out (new reference). */
json_t *record_source_position_json(const RecordSource *src);

/* The dataset's facts: a folder's manifest; a topic's from the first
 * record read (headers and latent), all empty before it; empty for a lone
 * shard file. */
const ShardFacts *record_source_facts(const RecordSource *src);

/* 1 when the source reads a topic. */
int record_source_is_kafka(const RecordSource *src);

/* Folders: the shards this source reads (all of the folder's, in order),
 * with their manifest entries (NULL without a manifest). Returns the count. */
typedef struct RecordShard {
    const char *name;
    const char *path;
    const ShardEntry *entry;
} RecordShard;
size_t record_source_shards(const RecordSource *src, const RecordShard **shards);

/* Folders: 1 when the folder has a manifest. */
int record_source_has_manifest(const RecordSource *src);

/* The underlying consumer of a topic source (commit, stats, headers), or NULL. */
KafkaSource *record_source_kafka(RecordSource *src);

/* Frees the source (a topic source commits per its options). NULL is a no-op. */
void record_source_free(RecordSource *src);

/* Adds the key of every record of `path` (folder, shard file or topic, the
 * whole of it) to `keys`, e.g. the rows a resumed ingest has done already.
 * Damaged records are counted in *damaged (may be NULL) and skipped.
 * Returns 0, or -1 with err filled. A topic is read up to its high
 * watermarks at the call. */
int record_source_keys(const char *path, ShardKeySet *keys, uint64_t *damaged, TfError *err);

/* ---- command line --------------------------------------------------------------------- */

/* `transfuse shards ...`: ls, stat, verify, cat, import, publish, archive,
 * create. The binary may add commands that live above this library (ops'
 * `preview`, which draws images): shards_dispatch runs the table of this
 * library followed by extra[0..n_extra). shards_main is shards_dispatch
 * with no extras. Both return a TF_EXIT_* status. */
int shards_dispatch(int argc, char **argv, const TfCommand *extra, size_t n_extra);
int shards_main(int argc, char **argv);

#endif
