/* sink.c: the record output of the ingest stages: a shard writer on a
 * dataset folder and/or a producer on a topic behind one append and one
 * durability point (ingest_out_finish), plus the keys a sink already
 * holds, which a redone job skips. */
#include "ingest_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct IngestOut {
    ShardWriter *writer;
    KafkaSink *kafka;
    uint64_t records;
};

IngestOut *ingest_out_open(const IngestSink *sink, const char *prefix, const ShardFacts *facts,
                           const TfStopFlag *stop, TfError *err)
{
    if (!sink->out && !sink->to) {
        tf_fail(err, "no output: give a folder, a topic or both");
        return NULL;
    }
    IngestOut *o = calloc(1, sizeof *o);
    if (!o) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    if (sink->out) {
        ShardWriterOptions wo = {.max_shard_records = sink->shard_records, .max_shard_bytes = sink->shard_bytes,
                                 .name_prefix = prefix, .no_fsync = sink->no_fsync};
        if (!(o->writer = shard_writer_open(sink->out, &wo, facts, err)))
            goto fail;
    }
    if (sink->to) {
        char bs[1024], topic[256];
        if (kafka_url_parse(sink->to, bs, sizeof bs, topic, sizeof topic, err))
            goto fail;
        KafkaSinkOptions so = {.bootstrap = bs, .topic = topic, .facts = facts, .config = sink->kafka_config,
                               .flow_group = sink->flow_group, .stop = stop};
        if (!(o->kafka = kafka_sink_new(&so, err)))
            goto fail;
    }
    return o;
fail:
    ingest_out_free(o);
    return NULL;
}

int ingest_out_append_bytes(IngestOut *o, const uint8_t *payload, size_t len, const char *key, unsigned where,
                            TfError *err)
{
    size_t klen = strlen(key);
    if (o->writer && (where & INGEST_OUT_FOLDER) && shard_writer_append(o->writer, payload, len, key, klen, err))
        return -1;
    if (o->kafka && (where & INGEST_OUT_TOPIC) && kafka_sink_send(o->kafka, -1, payload, len, key, klen, err))
        return -1;
    o->records++;
    return 0;
}

int ingest_out_append(IngestOut *o, const Sample *s, unsigned where, TfError *err)
{
    size_t len;
    uint8_t *bytes = sample_encode(s, &len);
    if (!bytes)
        return tf_fail(err, "out of memory");
    int rc = ingest_out_append_bytes(o, bytes, len, s->key, where, err);
    free(bytes);
    return rc;
}

int ingest_out_finish(IngestOut *o, TfError *err)
{
    if (o->writer && shard_writer_flush(o->writer, err))
        return -1;
    /* Delivery reports: the mock broker answers in milliseconds, a real one
     * within its request timeout (librdkafka's default 30 s, retried). */
    if (o->kafka && kafka_sink_flush(o->kafka, 300000, err))
        return -1;
    return 0;
}

uint64_t ingest_out_records(const IngestOut *o)
{
    return o->records;
}

void ingest_out_free(IngestOut *o)
{
    if (!o)
        return;
    shard_writer_free(o->writer);
    kafka_sink_free(o->kafka);
    free(o);
}

int ingest_prefix_filter(void *ctx, const char *name, size_t shard_index)
{
    (void)shard_index;
    const IngestPrefix *f = ctx;
    return !strncmp(name, f->prefix, f->len);
}

/* The keys of the folder's shards named PREFIX*, through the record source. */
static int folder_prefix_keys(const char *dir, const char *prefix, ShardKeySet *keys, TfError *err)
{
    char path[4096];
    if (tf_path_join(path, sizeof path, dir, SHARD_MANIFEST_NAME) || access(path, F_OK) != 0)
        return 0;
    IngestPrefix f = {prefix, strlen(prefix)};
    RecordSourceOptions so = {.path = dir, .shard_filter = ingest_prefix_filter, .filter_ctx = &f};
    RecordSource *src = record_source_open(&so, err);
    if (!src)
        return -1;
    Record rec;
    ShardProblem prob;
    uint64_t damaged = 0;
    int rc;
    while ((rc = record_source_next(src, &rec, 0, &prob, err)) != RECORD_SOURCE_END) {
        if (rc < 0)
            break;
        if (rc == RECORD_SOURCE_PROBLEM)
            damaged++;
        else if (rc == RECORD_SOURCE_RECORD && rec.key_len &&
                 shard_keyset_add(keys, rec.key, rec.key_len, 0, NULL) < 0) {
            rc = tf_fail(err, "out of memory for the key set");
            break;
        }
    }
    record_source_free(src);
    if (rc < 0)
        return -1;
    if (damaged)
        tf_log(TF_LOG_WARN, "ingest", "%s: %llu damaged record(s) in shards %s*; their rows are done again", dir,
               (unsigned long long)damaged, prefix);
    return 0;
}

int ingest_sink_keys(const IngestSink *sink, const char *folder_prefix, ShardKeySet *folder_keys,
                     ShardKeySet *topic_keys, TfError *err)
{
    if (sink->out && folder_keys) {
        int rc = folder_prefix ? folder_prefix_keys(sink->out, folder_prefix, folder_keys, err)
                               : ingest_folder_keys(sink->out, folder_keys, err);
        if (rc)
            return tf_fail_context(err, "%s", sink->out);
    }
    if (sink->to && topic_keys && record_source_keys(sink->to, topic_keys, NULL, err))
        return tf_fail_context(err, "%s", sink->to);
    return 0;
}
