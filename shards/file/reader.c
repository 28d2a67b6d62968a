/* reader.c: shard files mapped read-only, walked sequentially or reached
 * through their index. Every length, CRC and offset is checked before it is
 * used; after damage the cursor resynchronises on the next frame that checks
 * out (through the index when it is sound, else by scanning for a header
 * whose length CRC matches), so one bad record costs only itself. */
#include "file_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct ShardFile {
    char *path;
    const uint8_t *data;
    uint64_t size;
    const uint8_t *index;     /* malloc'd copy of a validated index, or NULL */
    uint64_t index_count;
    char index_problem[256];
    int mapped;               /* data is our mmap */
    int owned;                /* data is our malloc'd copy */
};

static const uint8_t *map_file(const char *path, uint64_t *size, TfError *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        tf_fail(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        tf_fail(err, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    *size = (uint64_t)st.st_size;
    const uint8_t *p = (const uint8_t *)""; /* an empty file maps to an empty buffer */
    if (st.st_size > 0) {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            tf_fail(err, "%s: mmap: %s", path, strerror(errno));
            close(fd);
            return NULL;
        }
        madvise(m, (size_t)st.st_size, MADV_SEQUENTIAL);
        p = m;
    }
    close(fd);
    return p;
}

/* Loads and validates NAME.idx; on any doubt, leaves the file unindexed
 * with the reason in index_problem. */
static void index_load(ShardFile *f)
{
    char path[4096];
    snprintf(path, sizeof path, "%s%s", f->path, SHARD_INDEX_SUFFIX);
    TfError err = {{0}};
    size_t len;
    uint8_t *idx = (uint8_t *)tf_read_file(path, (size_t)1 << 32, &len, &err);
    if (!idx) {
        snprintf(f->index_problem, sizeof f->index_problem, "%s",
                 access(path, F_OK) ? "index missing" : err.msg);
        return;
    }
    const char *why = NULL;
    uint64_t count = 0;
    if (len < SHARD_INDEX_HEADER + 4 || memcmp(idx, SHARD_INDEX_MAGIC, 8)) {
        why = "index has a bad header";
    } else {
        count = shard_le64(idx + 8);
        if (count > (len - SHARD_INDEX_HEADER - 4) / SHARD_INDEX_ENTRY ||
            SHARD_INDEX_HEADER + count * SHARD_INDEX_ENTRY + 4 != len)
            why = "index size does not match its record count";
        else if (shard_crc32c(0, idx, len - 4) != shard_le32(idx + len - 4))
            why = "index checksum mismatch";
    }
    uint64_t prev_end = 0;
    for (uint64_t i = 0; !why && i < count; i++) {
        const uint8_t *e = idx + SHARD_INDEX_HEADER + i * SHARD_INDEX_ENTRY;
        uint64_t off = shard_le64(e), plen = shard_le32(e + 8);
        if (off < prev_end || off > f->size || plen > f->size ||
            SHARD_FRAME_HEADER + plen + SHARD_FRAME_FOOTER > f->size - off)
            why = "index points outside the shard";
        prev_end = off + SHARD_FRAME_HEADER + plen + SHARD_FRAME_FOOTER;
    }
    if (why) {
        snprintf(f->index_problem, sizeof f->index_problem, "%s", why);
        free(idx);
        return;
    }
    f->index = idx;
    f->index_count = count;
}

ShardFile *shard_file_open(const char *path, TfError *err)
{
    ShardFile *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        tf_fail(err, "out of memory");
        return NULL;
    }
    f->data = map_file(path, &f->size, err);
    if (!f->data) {
        free(f->path);
        free(f);
        return NULL;
    }
    f->mapped = 1;
    index_load(f);
    return f;
}

ShardFile *shard_file_load(const char *path, TfError *err)
{
    ShardFile *f = calloc(1, sizeof *f);
    int fd = -1;
    if (!f || !(f->path = strdup(path))) {
        tf_fail(err, "out of memory");
        goto fail;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        tf_fail(err, "%s: %s", path, fd < 0 ? strerror(errno) : "not a regular file");
        goto fail;
    }
    f->size = (uint64_t)st.st_size;
    f->data = (const uint8_t *)"";
    if (f->size) {
        const size_t huge = 2u << 20;
        size_t cap = ((size_t)f->size + huge - 1) & ~(huge - 1);
        void *buf = NULL;
        if (posix_memalign(&buf, huge, cap) != 0) {
            tf_fail(err, "%s: out of memory for %llu bytes", path, (unsigned long long)f->size);
            goto fail;
        }
        madvise(buf, cap, MADV_HUGEPAGE);
        f->data = buf;
        f->owned = 1;
        for (size_t got = 0; got < f->size;) {
            ssize_t n = pread(fd, (uint8_t *)buf + got, (size_t)f->size - got, (off_t)got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                tf_fail(err, "%s: read: %s", path, n < 0 ? strerror(errno) : "file shrank");
                goto fail;
            }
            got += (size_t)n;
        }
    }
    close(fd);
    index_load(f);
    return f;
fail:
    if (fd >= 0)
        close(fd);
    shard_file_free(f);
    return NULL;
}

ShardFile *shard_file_from_memory(const void *data, size_t size, const char *name, TfError *err)
{
    ShardFile *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(name ? name : "(memory)"))) {
        free(f);
        tf_fail(err, "out of memory");
        return NULL;
    }
    f->data = size ? data : (const uint8_t *)"";
    f->size = size;
    snprintf(f->index_problem, sizeof f->index_problem, "no index (in-memory data)");
    return f;
}

void shard_file_free(ShardFile *f)
{
    if (!f)
        return;
    if (f->mapped && f->size)
        munmap((void *)f->data, (size_t)f->size);
    if (f->owned)
        free((void *)f->data);
    free((void *)f->index);
    free(f->path);
    free(f);
}

const char *shard_file_path(const ShardFile *f) { return f->path; }
const uint8_t *shard_file_data(const ShardFile *f) { return f->data; }
uint64_t shard_file_size(const ShardFile *f) { return f->size; }
int64_t shard_file_index_count(const ShardFile *f) { return f->index ? (int64_t)f->index_count : -1; }
const char *shard_file_index_problem(const ShardFile *f) { return f->index_problem; }

static int problem(ShardProblem *p, const ShardFile *f, uint64_t record, uint64_t offset, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int problem(ShardProblem *p, const ShardFile *f, uint64_t record, uint64_t offset, const char *fmt, ...)
{
    if (p) {
        snprintf(p->shard, sizeof p->shard, "%s", f->path);
        p->partition = -1;
        p->record = record;
        p->offset = offset;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->what, sizeof p->what, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void shard_problem_format(const ShardProblem *p, char *out, size_t cap)
{
    if (p->partition >= 0) {
        snprintf(out, cap, "%s partition %d offset %llu: %s", p->shard, (int)p->partition,
                 (unsigned long long)p->offset, p->what);
        return;
    }
    snprintf(out, cap, "%s: record %llu at byte %llu: %s", p->shard, (unsigned long long)p->record,
             (unsigned long long)p->offset, p->what);
}

/* Checks the frame header at off. Returns its payload length, or -1. */
static int64_t frame_length_at(const ShardFile *f, uint64_t off)
{
    if (f->size - off < SHARD_FRAME_HEADER)
        return -1;
    const uint8_t *h = f->data + off;
    uint64_t len = shard_le64(h);
    if (shard_crc_mask(shard_crc32c(0, h, 8)) != shard_le32(h + 8) || len > SHARD_MAX_RECORD ||
        SHARD_FRAME_HEADER + len + SHARD_FRAME_FOOTER > f->size - off)
        return -1;
    return (int64_t)len;
}

/* Moves the cursor to the first sound frame after `from`: the next index
 * entry when the index is usable, else the next offset whose header checks
 * out, else the end of the file. */
static void resync(ShardCursor *c, uint64_t from)
{
    const ShardFile *f = c->file;
    if (f->index) {
        uint64_t lo = 0, hi = f->index_count; /* first entry with offset >= from */
        while (lo < hi) {
            uint64_t mid = (lo + hi) / 2;
            if (shard_le64(f->index + SHARD_INDEX_HEADER + mid * SHARD_INDEX_ENTRY) < from)
                lo = mid + 1;
            else
                hi = mid;
        }
        c->record = lo;
        c->offset = lo < f->index_count ? shard_le64(f->index + SHARD_INDEX_HEADER + lo * SHARD_INDEX_ENTRY)
                                        : f->size;
        return;
    }
    c->record++;
    for (uint64_t off = from; off + SHARD_FRAME_HEADER <= f->size; off++) {
        if (frame_length_at(f, off) >= 0) {
            c->offset = off;
            return;
        }
    }
    c->offset = f->size;
}

void shard_cursor_init(ShardCursor *c, const ShardFile *f)
{
    c->file = f;
    c->offset = 0;
    c->record = 0;
    c->payload_crc = 0;
}

int shard_cursor_next(ShardCursor *c, const uint8_t **payload, size_t *len, ShardProblem *p)
{
    const ShardFile *f = c->file;
    uint64_t off = c->offset, rec = c->record;
    if (off >= f->size)
        return 0;
    uint64_t left = f->size - off;
    if (left < SHARD_FRAME_HEADER) {
        c->offset = f->size;
        return problem(p, f, rec, off, "truncated: %llu bytes left, a frame header needs 12",
                       (unsigned long long)left);
    }
    const uint8_t *h = f->data + off;
    uint64_t n = shard_le64(h);
    if (shard_crc_mask(shard_crc32c(0, h, 8)) != shard_le32(h + 8)) {
        resync(c, off + 1);
        return problem(p, f, rec, off, "length CRC mismatch (length field reads %llu)", (unsigned long long)n);
    }
    if (n > SHARD_MAX_RECORD) {
        resync(c, off + 1);
        return problem(p, f, rec, off, "record length %llu is over the %u-byte limit", (unsigned long long)n,
                       SHARD_MAX_RECORD);
    }
    if (SHARD_FRAME_HEADER + n + SHARD_FRAME_FOOTER > left) {
        resync(c, off + 1);
        return problem(p, f, rec, off, "truncated: record of %llu bytes needs %llu bytes, %llu left",
                       (unsigned long long)n, (unsigned long long)(n + 16), (unsigned long long)left);
    }
    const uint8_t *body = h + SHARD_FRAME_HEADER;
    c->offset = off + SHARD_FRAME_HEADER + n + SHARD_FRAME_FOOTER;
    c->record = rec + 1;
    c->payload_crc = shard_crc32c(0, body, n);
    if (shard_crc_mask(c->payload_crc) != shard_le32(body + n))
        return problem(p, f, rec, off, "payload CRC mismatch");
    *payload = body;
    *len = (size_t)n;
    return 1;
}

void shard_cursor_seek(ShardCursor *c, uint64_t index)
{
    const ShardFile *f = c->file;
    if (f->index) {
        c->record = index < f->index_count ? index : f->index_count;
        c->offset = index < f->index_count ? shard_le64(f->index + SHARD_INDEX_HEADER + index * SHARD_INDEX_ENTRY)
                                           : f->size;
        return;
    }
    shard_cursor_init(c, f);
    const uint8_t *payload;
    size_t len;
    while (c->record < index && shard_cursor_next(c, &payload, &len, NULL) != 0)
        ;
}

int shard_file_get(const ShardFile *f, uint64_t index, const uint8_t **payload, size_t *len, ShardProblem *p)
{
    if (!f->index)
        return problem(p, f, index, 0, "no usable index (%s)", f->index_problem);
    if (index >= f->index_count)
        return problem(p, f, index, 0, "record %llu is past the last (%llu records)", (unsigned long long)index,
                       (unsigned long long)f->index_count);
    const uint8_t *e = f->index + SHARD_INDEX_HEADER + index * SHARD_INDEX_ENTRY;
    uint64_t off = shard_le64(e);
    int64_t n = frame_length_at(f, off);
    if (n < 0 || (uint64_t)n != shard_le32(e + 8))
        return problem(p, f, index, off, "frame header does not match the index");
    const uint8_t *body = f->data + off + SHARD_FRAME_HEADER;
    if (shard_crc_mask(shard_crc32c(0, body, (size_t)n)) != shard_le32(body + n))
        return problem(p, f, index, off, "payload CRC mismatch");
    *payload = body;
    *len = (size_t)n;
    return 1;
}

int64_t shard_file_find_key(const ShardFile *f, const char *key)
{
    if (!f->index)
        return -1;
    uint32_t want = shard_crc32c(0, key, strlen(key));
    for (uint64_t i = 0; i < f->index_count; i++) {
        if (shard_le32(f->index + SHARD_INDEX_HEADER + i * SHARD_INDEX_ENTRY + 12) != want)
            continue;
        const uint8_t *payload;
        size_t len;
        if (shard_file_get(f, i, &payload, &len, NULL) != 1)
            continue;
        Sample *s = sample_decode(payload, len, NULL, NULL);
        int match = s && s->key && !strcmp(s->key, key);
        sample_free(s);
        if (match)
            return (int64_t)i;
    }
    return -1;
}
