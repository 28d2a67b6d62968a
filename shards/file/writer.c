/* writer.c: appends records to a dataset folder, rolling shards by bytes
 * and by count. A shard is written under a hidden temporary name with its
 * index, fsynced, renamed into place, and only then added to the manifest:
 * a reader (or a resumed job) never sees half a shard. */
#include "file_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WRITE_BUFFER (1u << 20)

struct ShardWriter {
    char *dir;
    char prefix[64];
    ShardWriterOptions opts;
    ShardFacts facts;
    /* the shard being written */
    int fd;                    /* -1 when none is open */
    char name[128];            /* final file name, chosen when published */
    char tmp_path[4096];       /* hidden, unique to this writer */
    char idx_tmp[4096];
    uint64_t bytes;            /* written so far, buffer included */
    uint64_t records;
    uint32_t file_crc;
    uint8_t *buf;              /* write buffer */
    size_t buf_used;
    uint8_t *index;            /* SHARD_INDEX_HEADER + records * SHARD_INDEX_ENTRY */
    size_t index_cap;
    json_t *source;            /* stored with the next shard published */
    /* totals */
    uint64_t done_records, done_shards;
};

ShardWriter *shard_writer_open(const char *dir, const ShardWriterOptions *opts, const ShardFacts *facts,
                               TfError *err)
{
    ShardWriter *w = calloc(1, sizeof *w);
    if (!w) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    w->fd = -1;
    if (opts)
        w->opts = *opts;
    if (!w->opts.max_shard_bytes)
        w->opts.max_shard_bytes = 256ull << 20;
    if (!w->opts.max_shard_records)
        w->opts.max_shard_records = 100000;
    const char *prefix = w->opts.name_prefix ? w->opts.name_prefix : "shard";
    if (!shard_name_is_plain(prefix) || strlen(prefix) >= sizeof w->prefix) {
        tf_fail(err, "shard name prefix '%s' must be a short plain name", prefix);
        goto fail;
    }
    strcpy(w->prefix, prefix);
    w->opts.name_prefix = w->prefix;
    if (facts)
        w->facts = *facts;
    w->dir = strdup(dir);
    w->buf = malloc(WRITE_BUFFER);
    if (!w->dir || !w->buf) {
        tf_fail(err, "out of memory");
        goto fail;
    }
    if (tf_mkdir_p(dir, err))
        goto fail;
    char mpath[4096];
    if (tf_path_join(mpath, sizeof mpath, dir, SHARD_MANIFEST_NAME)) {
        tf_fail(err, "path too long: %s", dir);
        goto fail;
    }
    if (access(mpath, F_OK) == 0) {
        ShardManifest *m = shard_manifest_load(dir, err);
        if (!m)
            goto fail;
        int bad = shard_facts_check(&w->facts, &m->facts, err);
        shard_manifest_free(m);
        if (bad) {
            tf_fail_context(err, "%s holds other data", dir);
            goto fail;
        }
    }
    return w;
fail:
    shard_writer_free(w);
    return NULL;
}

static int buffer_flush(ShardWriter *w, TfError *err)
{
    if (w->buf_used && tf_write_all(w->fd, w->buf, w->buf_used, err))
        return tf_fail_context(err, "%s", w->tmp_path);
    w->buf_used = 0;
    return 0;
}

/* Appends bytes to the shard (the caller keeps file_crc up to date). */
static int buffer_put(ShardWriter *w, const void *data, size_t len, TfError *err)
{
    w->bytes += len;
    if (len > WRITE_BUFFER - w->buf_used) {
        if (buffer_flush(w, err))
            return -1;
        if (len >= WRITE_BUFFER)
            return tf_write_all(w->fd, data, len, err) ? tf_fail_context(err, "%s", w->tmp_path) : 0;
    }
    if (len)
        memcpy(w->buf + w->buf_used, data, len);
    w->buf_used += len;
    return 0;
}

/* Temporary names are unique per writer (host, process id and a
 * process-wide sequence number) and created with O_EXCL, so writers never
 * share one; those of dead processes are removed by the next publish. */
static atomic_uint_fast64_t writer_sequence;

static int shard_start(ShardWriter *w, TfError *err)
{
    char hidden[256];
    unsigned long long seq = (unsigned long long)atomic_fetch_add(&writer_sequence, 1);
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    for (char *h = host; *h; h++) /* the pid follows the host after a '-' */
        if (*h == '-' || *h == '/')
            *h = '_';
    snprintf(hidden, sizeof hidden, ".%s.tmp-%s-%ld-%llu%s", w->prefix, host, (long)getpid(), seq,
             SHARD_FILE_SUFFIX);
    if (tf_path_join(w->tmp_path, sizeof w->tmp_path, w->dir, hidden) ||
        snprintf(w->idx_tmp, sizeof w->idx_tmp, "%s%s", w->tmp_path, SHARD_INDEX_SUFFIX) >= (int)sizeof w->idx_tmp)
        return tf_fail(err, "path too long: %s", w->dir);
    w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0)
        return tf_fail(err, "%s: %s", w->tmp_path, strerror(errno));
    w->bytes = w->records = 0;
    w->file_crc = 0;
    w->buf_used = 0;
    return 0;
}

int shard_writer_would_roll(const ShardWriter *w, size_t len)
{
    uint64_t frame = SHARD_FRAME_HEADER + (uint64_t)len + SHARD_FRAME_FOOTER;
    return w->fd >= 0 && w->records > 0 &&
           (w->records >= w->opts.max_shard_records || w->bytes + frame > w->opts.max_shard_bytes);
}

int shard_writer_set_source(ShardWriter *w, const json_t *source)
{
    json_t *copy = source ? json_deep_copy(source) : NULL;
    if (source && !copy)
        return -1;
    json_decref(w->source);
    w->source = copy;
    return 0;
}

int shard_writer_append(ShardWriter *w, const void *payload, size_t len, const char *key, size_t key_len,
                        TfError *err)
{
    if (len > SHARD_MAX_RECORD)
        return tf_fail(err, "record of %zu bytes is over the %u-byte limit", len, SHARD_MAX_RECORD);
    if (shard_writer_would_roll(w, len))
        if (shard_writer_flush(w, err))
            return -1;
    if (w->fd < 0 && shard_start(w, err))
        return -1;
    size_t need = SHARD_INDEX_HEADER + (w->records + 1) * SHARD_INDEX_ENTRY + 4;
    if (need > w->index_cap) {
        size_t cap = w->index_cap ? w->index_cap * 2 : 64 * 1024;
        while (cap < need)
            cap *= 2;
        uint8_t *grown = realloc(w->index, cap);
        if (!grown)
            return tf_fail(err, "out of memory for the shard index");
        w->index = grown;
        w->index_cap = cap;
    }
    uint8_t *entry = w->index + SHARD_INDEX_HEADER + w->records * SHARD_INDEX_ENTRY;
    shard_put_le64(entry, w->bytes);
    shard_put_le32(entry + 8, (uint32_t)len);
    shard_put_le32(entry + 12, shard_crc32c(0, key, key_len));

    uint8_t header[SHARD_FRAME_HEADER], footer[SHARD_FRAME_FOOTER];
    shard_frame_header(header, len);
    uint32_t payload_crc = shard_crc32c(0, payload, len);
    shard_put_le32(footer, shard_crc_mask(payload_crc));
    /* The whole-file checksum without a second pass over the payload. */
    w->file_crc = shard_crc32c(w->file_crc, header, sizeof header);
    w->file_crc = shard_crc32c_combine(w->file_crc, payload_crc, len);
    w->file_crc = shard_crc32c(w->file_crc, footer, sizeof footer);
    if (buffer_put(w, header, sizeof header, err) || buffer_put(w, payload, len, err) ||
        buffer_put(w, footer, sizeof footer, err))
        return -1;
    w->records++;
    return 0;
}

int shard_writer_append_sample(ShardWriter *w, const Sample *sample, TfError *err)
{
    size_t len;
    uint8_t *bytes = sample_encode(sample, &len);
    if (!bytes)
        return tf_fail(err, "out of memory encoding a record");
    const char *key = sample->key ? sample->key : "";
    int rc = shard_writer_append(w, bytes, len, key, strlen(key), err);
    free(bytes);
    return rc;
}

/* Writes the index for the open shard next to it, under its hidden name. */
static int index_write(ShardWriter *w, TfError *err)
{
    const char *tmp_out = w->idx_tmp;
    memcpy(w->index, SHARD_INDEX_MAGIC, 8);
    shard_put_le64(w->index + 8, w->records);
    size_t body = SHARD_INDEX_HEADER + w->records * SHARD_INDEX_ENTRY;
    shard_put_le32(w->index + body, shard_crc32c(0, w->index, body));
    int fd = open(tmp_out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return tf_fail(err, "%s: %s", tmp_out, strerror(errno));
    int rc = tf_write_all(fd, w->index, body + 4, err);
    if (!rc && !w->opts.no_fsync && fsync(fd) != 0)
        rc = tf_fail(err, "fsync %s: %s", tmp_out, strerror(errno));
    close(fd);
    return rc;
}

int shard_writer_flush(ShardWriter *w, TfError *err)
{
    if (w->fd < 0)
        return 0;
    if (buffer_flush(w, err))
        return -1;
    if (!w->opts.no_fsync && fsync(w->fd) != 0)
        return tf_fail(err, "fsync %s: %s", w->tmp_path, strerror(errno));
    if (index_write(w, err))
        return -1;
    /* The number is taken, and both files renamed, under the manifest
     * lock: see shard_manifest_publish. */
    ShardEntry e = {.records = w->records, .bytes = w->bytes, .crc32c = w->file_crc, .source = w->source};
    if (shard_manifest_publish(w->dir, w->prefix, &w->facts, w->tmp_path, w->idx_tmp, &e, w->name, sizeof w->name,
                               w->opts.no_fsync, err))
        return -1;
    close(w->fd);
    w->fd = -1;
    w->done_records += w->records;
    w->done_shards++;
    w->records = 0;
    return 0;
}

int shard_writer_close(ShardWriter *w, TfError *err)
{
    if (!w)
        return 0;
    int rc = shard_writer_flush(w, err);
    shard_writer_free(w);
    return rc;
}

void shard_writer_free(ShardWriter *w)
{
    if (!w)
        return;
    if (w->fd >= 0) { /* an incomplete shard is discarded, never published */
        close(w->fd);
        unlink(w->tmp_path);
        unlink(w->idx_tmp);
    }
    json_decref(w->source);
    free(w->dir);
    free(w->buf);
    free(w->index);
    free(w);
}

uint64_t shard_writer_records(const ShardWriter *w)
{
    return w->done_records;
}

uint64_t shard_writer_shards(const ShardWriter *w)
{
    return w->done_shards;
}
