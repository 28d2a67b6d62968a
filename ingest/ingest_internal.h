/* ingest_internal.h: what the parts of ingest/ share and nobody else sees:
 * the latent packing and crop-to-VAE-input conversion of the local pipeline
 * (pipeline.c), and the record output of the stages (sink.c): one writer
 * to a dataset folder and/or a topic with a single durability point. */
#ifndef TRANSFUSE_INGEST_INTERNAL_H
#define TRANSFUSE_INGEST_INTERNAL_H

#include <getopt.h>

#include "ingest.h"
#include "kernels.h"

/* ---- latents and crops (pipeline.c) ---- */

/* "bf16", "f16", "f32" to the proto dtype and the core dtype. Returns 0,
 * or -1 for any other name (nothing set). */
int ingest_latent_dtype_parse(const char *name, int *proto_dtype, TfDtype *dtype);

/* Little-endian bytes of x[0..n) in dtype (F32, F16 or BF16, rounded to
 * nearest even) into out (n * tf_dtype_size(dtype) bytes). */
void ingest_pack_floats(const float *x, size_t n, TfDtype dtype, uint8_t *out);

/* A crop (size,size,3) u8 HWC to the VAE's input image (3,size,size) f32
 * in [-1,1] (x / 127.5 - 1), into image. */
void ingest_crop_to_image(const uint8_t *rgb, int size, float *image);

/* The latent posterior of one image as two tensors of `shape` (L,h,w),
 * per = L*h*w elements each, packed in dtype into scratch (2 * per * 4
 * bytes; the tensors point into it and into shape). */
void ingest_latent_tensors(Transfuse__V1__Tensor *tm, Transfuse__V1__Tensor *tl, const float *mean,
                           const float *logvar, size_t per, uint32_t shape[3], int proto_dtype, TfDtype dtype,
                           uint8_t *scratch);

/* Adds the key of every record of the dataset folder `dir` to keys (none
 * when it has no manifest yet). Damaged records are logged and left out:
 * their rows are done again. Returns 0, or -1 with err. */
int ingest_folder_keys(const char *dir, ShardKeySet *keys, TfError *err);

/* ---- record output (sink.c) ---- */

typedef struct IngestOut IngestOut;

/* Opens the outputs of `sink` for records with `facts`: a shard writer on
 * sink->out whose shards are named PREFIX-NNNNNN.tfrecord, and/or a
 * producer on the existing topic sink->to (headers from facts; the stop
 * flag makes its waits give up). Returns NULL with err filled (facts that
 * differ from the folder's, a missing topic). */
IngestOut *ingest_out_open(const IngestSink *sink, const char *prefix, const ShardFacts *facts,
                           const TfStopFlag *stop, TfError *err);

#define INGEST_OUT_FOLDER 1u
#define INGEST_OUT_TOPIC 2u

/* Encodes `s` once and appends it to the outputs named in `where`
 * (INGEST_OUT_*: those that lack its key; topic: key = s->key, partition
 * from the key). Returns 0, or -1 with err (then the output is unusable
 * except for ingest_out_free). */
int ingest_out_append(IngestOut *o, const Sample *s, unsigned where, TfError *err);

/* The same for a record already encoded (payload, len) with its key. */
int ingest_out_append_bytes(IngestOut *o, const uint8_t *payload, size_t len, const char *key, unsigned where,
                            TfError *err);

/* Makes everything appended so far durable: the current shard fsynced,
 * renamed and in the folder's manifest; every delivery report of the
 * topic successful. Returns 0, or -1 with err (nothing is known to be
 * durable then, except shards published before). */
int ingest_out_finish(IngestOut *o, TfError *err);

/* Records appended so far. */
uint64_t ingest_out_records(const IngestOut *o);

/* Frees, discarding an unfinished shard (NULL: no-op). */
void ingest_out_free(IngestOut *o);

/* The keys already in the sink's outputs: the folder's records (only
 * shards whose name starts with folder_prefix, when not NULL) into
 * folder_keys, the topic's, read to its high watermarks now, into
 * topic_keys (either NULL: not read). Returns 0, or -1 with err. */
int ingest_sink_keys(const IngestSink *sink, const char *folder_prefix, ShardKeySet *folder_keys,
                     ShardKeySet *topic_keys, TfError *err);

/* A RecordSourceOptions.shard_filter reading only shards whose name
 * starts with prefix[0..len) (ctx: an IngestPrefix). */
typedef struct IngestPrefix {
    const char *prefix;
    size_t len;
} IngestPrefix;
int ingest_prefix_filter(void *ctx, const char *name, size_t shard_index);

/* ---- stage 2 for `ingest worker` (stage_encode.c) ---- */

/* ingest_stage_encode with the keys each output holds already given by
 * the caller (done_folder, done_topic; NULL: none; both NULL and
 * common.done NULL: read from the sink as ingest_stage_encode does), and
 * the key of every record appended added to each of written[0..n_written)
 * (which may be the done sets themselves), so that a worker keeps its key
 * sets current without reading its output again. The keys added are
 * durable only when the call returned 0 without stats->stopped; otherwise
 * the caller must drop those sets. */
int ingest_stage_encode_keys(const IngestEncodeOptions *o, const ShardKeySet *done_folder,
                             const ShardKeySet *done_topic, ShardKeySet *const *written, size_t n_written,
                             IngestJobStats *stats, TfError *err);

/* ---- the encode stage's command line, shared by `ingest encode` and
 * `ingest worker --encode` (stage_encode.c) ---- */

enum {
    INGEST_ENC_OUT = 3000, INGEST_ENC_TO, /* above FETCH_CLI_BASE's range (2000..., fetch/fetch_internal.h) */ INGEST_ENC_VAE, INGEST_ENC_STATS, INGEST_ENC_KEEP, INGEST_ENC_BATCH,
    INGEST_ENC_THREADS, INGEST_ENC_DTYPE, INGEST_ENC_TOKID, INGEST_ENC_SHARD_RECORDS, INGEST_ENC_SHARD_SIZE,
    INGEST_ENC_FLOW, INGEST_ENC_METRICS_PORT, INGEST_ENC_METRICS_ADDR, INGEST_ENC_REGISTER,
};

/* struct option entries of the flags ingest_encode_cli_flag takes (and -X). */
#define INGEST_ENCODE_LONGOPTS                                                                                   \
    {"out", required_argument, 0, INGEST_ENC_OUT}, {"to", required_argument, 0, INGEST_ENC_TO},                  \
        {"vae", required_argument, 0, INGEST_ENC_VAE}, {"stats-dir", required_argument, 0, INGEST_ENC_STATS},    \
        {"keep-crop", no_argument, 0, INGEST_ENC_KEEP}, {"batch", required_argument, 0, INGEST_ENC_BATCH},       \
        {"threads", required_argument, 0, INGEST_ENC_THREADS},                                                   \
        {"latent-dtype", required_argument, 0, INGEST_ENC_DTYPE},                                                \
        {"tokenizer-id", required_argument, 0, INGEST_ENC_TOKID},                                                \
        {"shard-records", required_argument, 0, INGEST_ENC_SHARD_RECORDS},                                       \
        {"shard-size", required_argument, 0, INGEST_ENC_SHARD_SIZE},                                             \
        {"flow-group", required_argument, 0, INGEST_ENC_FLOW},                                                   \
        {"metrics-port", required_argument, 0, INGEST_ENC_METRICS_PORT},                                         \
        {"metrics-addr", required_argument, 0, INGEST_ENC_METRICS_ADDR},                                         \
        {"register", required_argument, 0, INGEST_ENC_REGISTER}

typedef struct IngestEncodeCli {
    IngestEncodeOptions opts;     /* ingest_encode_options_init first */
    const char *vae_dir;
    const char *config[64];       /* -X, NULL-terminated */
    size_t n_config;
    long metrics_port;
    const char *metrics_addr, *register_dir;
    Vae *vae;                     /* ingest_encode_cli_load */
    TfKernels *kernels;
} IngestEncodeCli;

/* Takes one parsed flag. Returns 1 when it was one of the encode flags,
 * 0 when it is not (the caller's own), -1 with err for a bad value. */
int ingest_encode_cli_flag(IngestEncodeCli *c, int flag, const char *arg, TfError *err);
/* After parsing: the required flags are there. Returns 0, or -1 with err. */
int ingest_encode_cli_check(IngestEncodeCli *c, TfError *err);
/* Loads the VAE's encoder and makes the kernels into opts. Returns 0, or -1. */
int ingest_encode_cli_load(IngestEncodeCli *c, TfError *err);
void ingest_encode_cli_deinit(IngestEncodeCli *c);
/* The one-line summary of a stage-2 call on stderr. */
void ingest_encode_report(const char *job, const IngestJobStats *st);

#endif
