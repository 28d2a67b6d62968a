/* job.c: the Job message (proto/transfuse.proto) that `ingest plan`
 * publishes and `ingest worker` consumes: protobuf bytes for Kafka, JSON
 * lines for files, the checks a worker makes before it runs one, and the
 * digest of the stage options that must agree between plan and worker. */
#include "ingest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

uint8_t *ingest_job_encode(const IngestJob *j, size_t *len)
{
    *len = transfuse__v1__job__get_packed_size(j);
    uint8_t *out = malloc(*len ? *len : 1);
    if (out)
        transfuse__v1__job__pack(j, out);
    return out;
}

IngestJob *ingest_job_decode(const uint8_t *data, size_t len, TfError *err)
{
    IngestJob *j = transfuse__v1__job__unpack(NULL, len, data);
    if (!j) {
        tf_fail(err, "not a transfuse.v1.Job message (%zu bytes)", len);
        return NULL;
    }
    if (ingest_job_check(j, err)) {
        ingest_job_free(j);
        return NULL;
    }
    return j;
}

void ingest_job_free(IngestJob *j)
{
    if (j)
        transfuse__v1__job__free_unpacked(j, NULL);
}

json_t *ingest_job_to_json(const IngestJob *j)
{
    return shard_message_to_json(&j->base, NULL);
}

IngestJob *ingest_job_from_json(const json_t *obj, TfError *err)
{
    ProtobufCMessage *m = shard_message_from_json(&transfuse__v1__job__descriptor, obj, err);
    if (!m)
        return NULL;
    IngestJob *j = (IngestJob *)m;
    if (ingest_job_check(j, err)) {
        protobuf_c_message_free_unpacked(m, NULL);
        return NULL;
    }
    return j;
}

int ingest_job_name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 200)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
              *p == '_' || *p == '-'))
            return 0;
    return 1;
}

int ingest_job_check(const IngestJob *j, TfError *err)
{
    if (!ingest_job_name_ok(j->id))
        return tf_fail(err, "job id \"%s\" is not [A-Za-z0-9._-]+ (at most 200 characters)", j->id ? j->id : "");
    if (!j->manifest || !*j->manifest)
        return tf_fail(err, "job %s names no manifest", j->id);
    if (j->end && j->end <= j->start)
        return tf_fail(err, "job %s: empty or reversed byte range [%llu, %llu)", j->id, (unsigned long long)j->start,
                       (unsigned long long)j->end);
    if (j->start && !j->first_line)
        return tf_fail(err, "job %s starts at byte %llu without its first line number", j->id,
                       (unsigned long long)j->start);
    return 0;
}

int ingest_job_check_file(const IngestJob *j, TfError *err)
{
    struct stat st;
    if (stat(j->manifest, &st))
        return tf_fail(err, "job %s: cannot open manifest %s: %s", j->id, j->manifest, strerror(errno));
    int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if ((uint64_t)st.st_size != j->manifest_size || (j->manifest_mtime_ns && mtime != j->manifest_mtime_ns))
        return tf_fail(err,
                       "job %s: manifest %s is not the file that was planned (planned %llu bytes, mtime %lld ns; "
                       "found %llu bytes, mtime %lld ns): plan again",
                       j->id, j->manifest, (unsigned long long)j->manifest_size, (long long)j->manifest_mtime_ns,
                       (unsigned long long)st.st_size, (long long)mtime);
    return 0;
}

void ingest_options_digest(const IngestColumns *cols, int crop_size, int crop_format, int png_level, int bos,
                           char out[INGEST_DIGEST_HEX + 1])
{
    char text[1024];
    snprintf(text, sizeof text, "transfuse-stage1-v1\nurl=%s\ncaption=%s\nkey=%s\nhash=%s\nsize=%d\ncrop=%d\npng=%d\nbos=%d\n",
             cols->image ? cols->image : "url", cols->caption ? cols->caption : "caption", cols->key ? cols->key : "",
             cols->hash ? cols->hash : "", crop_size, crop_format, crop_format == INGEST_CROP_PNG ? png_level : 0,
             bos);
    unsigned char h[32];
    char hex[65];
    tf_sha256(text, strlen(text), h);
    tf_hex(h, 32, hex);
    memcpy(out, hex, INGEST_DIGEST_HEX);
    out[INGEST_DIGEST_HEX] = 0;
}
