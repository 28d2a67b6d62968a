/* manifest.c: the dataset manifest (DIR/manifest.json): the list of complete
 * shards with counts, bytes and checksums, and the facts shared by every
 * record. Updates take a lock file so that several writer processes can
 * fill one folder; each update rewrites the file atomically. Shard numbers
 * are taken under that lock when a shard is published, and files are
 * renamed into place without replacing anything (RENAME_NOREPLACE), so no
 * writer ever replaces a shard or an entry it did not write. */
#include "file_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#define MANIFEST_MAX_BYTES (256u << 20)

int shard_name_is_plain(const char *name)
{
    return name && *name && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

json_t *shard_facts_to_json(const ShardFacts *f)
{
    json_t *shape = json_array();
    for (int i = 0; i < f->latent_rank; i++)
        json_array_append_new(shape, json_integer(f->latent_shape[i]));
    return json_pack("{s:{s:s,s:s},s:{s:s,s:s,s:f,s:f},s:{s:s,s:o}}",                 /* */
                     "tokenizer", "id", f->tokenizer_id, "name", f->tokenizer_name,    /* */
                     "vae", "id", f->vae_id, "name", f->vae_name, "scaling_factor",    /* */
                     f->latent_scaling, "shift_factor", f->latent_shift,               /* */
                     "latent", "dtype", f->latent_dtype, "shape", shape);
}

int shard_facts_from_json(const json_t *j, ShardFacts *f, TfError *err)
{
    memset(f, 0, sizeof *f);
    if (!json_is_object(j))
        return tf_fail(err, "facts: expected an object");
    json_t *tok = json_object_get(j, "tokenizer"), *vae = json_object_get(j, "vae"),
           *lat = json_object_get(j, "latent");
    copy_str(f->tokenizer_id, sizeof f->tokenizer_id, json_string_value(json_object_get(tok, "id")));
    copy_str(f->tokenizer_name, sizeof f->tokenizer_name, json_string_value(json_object_get(tok, "name")));
    copy_str(f->vae_id, sizeof f->vae_id, json_string_value(json_object_get(vae, "id")));
    copy_str(f->vae_name, sizeof f->vae_name, json_string_value(json_object_get(vae, "name")));
    f->latent_scaling = json_number_value(json_object_get(vae, "scaling_factor"));
    f->latent_shift = json_number_value(json_object_get(vae, "shift_factor"));
    copy_str(f->latent_dtype, sizeof f->latent_dtype, json_string_value(json_object_get(lat, "dtype")));
    const char *dt = f->latent_dtype;
    if (*dt && strcmp(dt, "f32") && strcmp(dt, "f16") && strcmp(dt, "bf16"))
        return tf_fail(err, "facts: latent dtype '%s' is not f32, f16 or bf16", dt);
    json_t *shape = json_object_get(lat, "shape");
    if (shape && !json_is_array(shape))
        return tf_fail(err, "facts: latent shape must be an array");
    size_t n = json_array_size(shape);
    if (n > 4)
        return tf_fail(err, "facts: latent shape has %zu dimensions (at most 4)", n);
    for (size_t i = 0; i < n; i++) {
        json_int_t d = json_integer_value(json_array_get(shape, i));
        if (d <= 0 || d > 1 << 20)
            return tf_fail(err, "facts: latent shape has a bad dimension");
        f->latent_shape[i] = (uint32_t)d;
    }
    f->latent_rank = (int)n;
    return 0;
}

int shard_facts_check(const ShardFacts *want, const ShardFacts *have, TfError *err)
{
    if (*want->tokenizer_id && *have->tokenizer_id && strcmp(want->tokenizer_id, have->tokenizer_id))
        return tf_fail(err, "tokenizer differs: expected %s, data has %s", want->tokenizer_id, have->tokenizer_id);
    if (*want->vae_id && *have->vae_id && strcmp(want->vae_id, have->vae_id))
        return tf_fail(err, "VAE differs: expected %s, data has %s", want->vae_id, have->vae_id);
    if (*want->latent_dtype && *have->latent_dtype && strcmp(want->latent_dtype, have->latent_dtype))
        return tf_fail(err, "latent dtype differs: expected %s, data has %s", want->latent_dtype, have->latent_dtype);
    if (want->latent_rank && have->latent_rank &&
        (want->latent_rank != have->latent_rank ||
         memcmp(want->latent_shape, have->latent_shape, sizeof(uint32_t) * (size_t)want->latent_rank)))
    {
        char w[64] = "", h[64] = "";
        for (int i = 0; i < want->latent_rank && i < 4; i++)
            snprintf(w + strlen(w), sizeof w - strlen(w), "%s%u", i ? "x" : "", want->latent_shape[i]);
        for (int i = 0; i < have->latent_rank && i < 4; i++)
            snprintf(h + strlen(h), sizeof h - strlen(h), "%s%u", i ? "x" : "", have->latent_shape[i]);
        return tf_fail(err, "latent shape differs: expected %s, data has %s", w, h);
    }
    if (want->latent_scaling && have->latent_scaling && want->latent_scaling != have->latent_scaling)
        return tf_fail(err, "latent scaling differs: expected %g, data has %g", want->latent_scaling,
                       have->latent_scaling);
    if (want->latent_shift != have->latent_shift && (*want->vae_id && *have->vae_id))
        return tf_fail(err, "latent shift differs: expected %g, data has %g", want->latent_shift, have->latent_shift);
    return 0;
}

void shard_manifest_free(ShardManifest *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_shards; i++) {
        free(m->shards[i].name);
        json_decref(m->shards[i].source);
    }
    free(m->shards);
    free(m);
}

static ShardManifest *manifest_from_json(const json_t *root, const char *path, TfError *err)
{
    ShardManifest *m = calloc(1, sizeof *m);
    if (!m) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    const char *format = json_string_value(json_object_get(root, "format"));
    if (!format || strcmp(format, "transfuse-shards")) {
        tf_fail(err, "%s: not a transfuse shard manifest (format is not \"transfuse-shards\")", path);
        goto fail;
    }
    if (json_integer_value(json_object_get(root, "version")) != 1) {
        tf_fail(err, "%s: manifest version is not 1", path);
        goto fail;
    }
    if (shard_facts_from_json(json_object_get(root, "facts"), &m->facts, err)) {
        tf_fail_context(err, "%s", path);
        goto fail;
    }
    json_t *shards = json_object_get(root, "shards");
    if (!json_is_array(shards)) {
        tf_fail(err, "%s: \"shards\" is not an array", path);
        goto fail;
    }
    m->shards = calloc(json_array_size(shards) + 1, sizeof *m->shards);
    if (!m->shards) {
        tf_fail(err, "out of memory");
        goto fail;
    }
    size_t i;
    json_t *s;
    json_array_foreach(shards, i, s)
    {
        const char *name = json_string_value(json_object_get(s, "name"));
        const char *crc = json_string_value(json_object_get(s, "crc32c"));
        json_int_t records = json_integer_value(json_object_get(s, "records"));
        json_int_t bytes = json_integer_value(json_object_get(s, "bytes"));
        char *end = NULL;
        unsigned long crcv = crc ? strtoul(crc, &end, 16) : 0;
        if (!shard_name_is_plain(name) || records < 0 || bytes < 0 || !crc || strlen(crc) != 8 || *end) {
            tf_fail(err, "%s: shard entry %zu is malformed (needs a plain name, records, bytes, crc32c)", path, i);
            goto fail;
        }
        ShardEntry *e = &m->shards[m->n_shards++];
        e->name = strdup(name);
        e->records = (uint64_t)records;
        e->bytes = (uint64_t)bytes;
        e->crc32c = (uint32_t)crcv;
        json_t *src = json_object_get(s, "source");
        e->source = json_is_object(src) ? json_incref(src) : NULL;
        if (!e->name) {
            tf_fail(err, "out of memory");
            goto fail;
        }
        m->records += e->records;
        m->bytes += e->bytes;
    }
    return m;
fail:
    shard_manifest_free(m);
    return NULL;
}

ShardManifest *shard_manifest_load(const char *dir, TfError *err)
{
    char path[4096];
    if (tf_path_join(path, sizeof path, dir, SHARD_MANIFEST_NAME)) {
        tf_fail(err, "path too long: %s", dir);
        return NULL;
    }
    json_t *root = tf_json_load_file(path, MANIFEST_MAX_BYTES, err);
    if (!root)
        return NULL;
    ShardManifest *m = manifest_from_json(root, path, err);
    json_decref(root);
    return m;
}

static json_t *entry_to_json(const ShardEntry *e)
{
    char crc[9];
    snprintf(crc, sizeof crc, "%08x", e->crc32c);
    char idx[4096];
    snprintf(idx, sizeof idx, "%s%s", e->name, SHARD_INDEX_SUFFIX);
    json_t *j = json_pack("{s:s,s:I,s:I,s:s,s:s}", "name", e->name, "records", (json_int_t)e->records, "bytes",
                          (json_int_t)e->bytes, "crc32c", crc, "index", idx);
    if (j && e->source)
        json_object_set(j, "source", e->source);
    return j;
}

/* Largest NNNNNN among files named PREFIX-NNNNNN.tfrecord[.idx] in dir, or -1. */
static long long highest_on_disk(const char *dir, const char *prefix)
{
    long long best = -1;
    DIR *d = opendir(dir);
    if (!d)
        return best;
    size_t plen = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        if (strncmp(n, prefix, plen) || n[plen] != '-' || n[plen + 1] < '0' || n[plen + 1] > '9')
            continue;
        char *end;
        long long v = strtoll(n + plen + 1, &end, 10);
        if (!strncmp(end, SHARD_FILE_SUFFIX, strlen(SHARD_FILE_SUFFIX)) && v > best)
            best = v;
    }
    closedir(d);
    return best;
}

/* Renames `from` to `to` unless `to` exists. Returns 0, 1 when `to`
 * exists (nothing changed), -1 with err filled. renameat2(RENAME_NOREPLACE)
 * where the file system has it, else link + unlink (also refuses to
 * replace). */
static int rename_noreplace(const char *from, const char *to, TfError *err)
{
#ifdef RENAME_NOREPLACE
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno == EEXIST)
        return 1;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        return tf_fail(err, "rename %s to %s: %s", from, to, strerror(errno));
#endif
    if (link(from, to) != 0)
        return errno == EEXIST ? 1 : tf_fail(err, "link %s to %s: %s", from, to, strerror(errno));
    if (unlink(from) != 0)
        return tf_fail(err, "unlink %s: %s", from, strerror(errno));
    return 0;
}

/* Holds the exclusive lock on DIR/.manifest.lock. Returns the lock's fd or -1. */
static int manifest_lock(const char *dir, TfError *err)
{
    char lock_path[4096];
    if (tf_path_join(lock_path, sizeof lock_path, dir, ".manifest.lock")) {
        tf_fail(err, "path too long: %s", dir);
        return -1;
    }
    int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock < 0) {
        tf_fail(err, "%s: %s", lock_path, strerror(errno));
        return -1;
    }
    while (flock(lock, LOCK_EX) != 0) {
        if (errno != EINTR) {
            tf_fail(err, "lock %s: %s", lock_path, strerror(errno));
            close(lock);
            return -1;
        }
    }
    return lock;
}

/* Adds `entry` to the manifest; the caller holds the lock. Refuses an
 * entry whose name is listed already. */
static int manifest_add_locked(const char *dir, const ShardFacts *facts, const ShardEntry *entry, int no_fsync,
                               TfError *err)
{
    char path[4096];
    if (tf_path_join(path, sizeof path, dir, SHARD_MANIFEST_NAME))
        return tf_fail(err, "path too long: %s", dir);
    int rc = -1;
    json_t *root = NULL;
    if (access(path, F_OK) == 0) {
        root = tf_json_load_file(path, MANIFEST_MAX_BYTES, err);
        if (!root)
            goto done;
        ShardManifest *have = manifest_from_json(root, path, err);
        if (!have)
            goto done;
        int mismatch = shard_facts_check(facts, &have->facts, err);
        shard_manifest_free(have);
        if (mismatch) {
            tf_fail_context(err, "%s", path);
            goto done;
        }
    } else {
        root = json_pack("{s:s,s:i,s:s,s:o,s:I,s:I,s:[]}", "format", "transfuse-shards", "version", 1, "schema",
                         "transfuse.v1.Sample", "facts", shard_facts_to_json(facts), "records", (json_int_t)0,
                         "bytes", (json_int_t)0, "shards");
    }
    json_t *shards = json_object_get(root, "shards");
    size_t i;
    json_t *s;
    json_array_foreach(shards, i, s)
    {
        if (!strcmp(json_string_value(json_object_get(s, "name")), entry->name)) {
            tf_fail(err, "%s already lists %s: a shard is never replaced", path, entry->name);
            goto done;
        }
    }
    json_array_append_new(shards, entry_to_json(entry));
    json_int_t records = 0, bytes = 0;
    json_array_foreach(shards, i, s)
    {
        records += json_integer_value(json_object_get(s, "records"));
        bytes += json_integer_value(json_object_get(s, "bytes"));
    }
    json_object_set_new(root, "records", json_integer(records));
    json_object_set_new(root, "bytes", json_integer(bytes));
    if (no_fsync) {
        char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *fp = text ? fopen(tmp, "w") : NULL;
        int ok = fp && fputs(text, fp) >= 0 && fputc('\n', fp) != EOF;
        if (fp && fclose(fp) != 0)
            ok = 0;
        free(text);
        if (!ok || rename(tmp, path) != 0) {
            tf_fail(err, "%s: could not write", path);
            goto done;
        }
    } else if (tf_json_write_file_atomic(path, root, err)) {
        goto done;
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

/* 1 when `name` ends in `suffix`. */
static int ends_with(const char *name, const char *suffix)
{
    size_t n = strlen(name), k = strlen(suffix);
    return n > k && !strcmp(name + n - k, suffix);
}

/* The pid in a temporary name ".PREFIX.tmp-HOST-PID-SEQ..." or
 * "manifest.json.tmp.PID" written on this host, or 0. */
static long tmp_pid(const char *name, const char *host)
{
    const char *t = strstr(name, ".tmp-");
    if (name[0] == '.' && t) {
        size_t hl = strlen(host);
        if (strncmp(t + 5, host, hl) || t[5 + hl] != '-')
            return 0;
        return strtol(t + 6 + hl, NULL, 10);
    }
    if (!strncmp(name, SHARD_MANIFEST_NAME ".tmp.", strlen(SHARD_MANIFEST_NAME) + 5))
        return strtol(name + strlen(SHARD_MANIFEST_NAME) + 5, NULL, 10);
    return 0;
}

/* Under the manifest lock, what a writer killed mid-publish left behind:
 * a shard (or index) renamed into place but never listed is moved aside
 * to ".orphan-NAME" (its records are not part of the dataset; a resumed
 * job writes them again), and temporary files of dead processes on this
 * host are removed. Every live writer's files stay: publishing happens
 * only under this lock, and temporary names carry host and pid. */
static void folder_tidy(const char *dir, const ShardManifest *m)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    for (char *h = host; *h; h++) /* as writer.c names them */
        if (*h == '-' || *h == '/')
            *h = '_';
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        char path[4096], moved[4200];
        if (tf_path_join(path, sizeof path, dir, n))
            continue;
        long pid = tmp_pid(n, host);
        if (pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
            unlink(path);
            continue;
        }
        if (n[0] == '.' || !(ends_with(n, SHARD_FILE_SUFFIX) || ends_with(n, SHARD_FILE_SUFFIX SHARD_INDEX_SUFFIX)))
            continue;
        size_t base = strlen(n) - (ends_with(n, SHARD_INDEX_SUFFIX) ? strlen(SHARD_INDEX_SUFFIX) : 0);
        int listed = 0;
        for (size_t i = 0; m && i < m->n_shards && !listed; i++)
            listed = strlen(m->shards[i].name) == base && !strncmp(m->shards[i].name, n, base);
        if (listed)
            continue;
        snprintf(moved, sizeof moved, "%s/.orphan-%s", dir, n);
        if (rename(path, moved) == 0)
            tf_log(TF_LOG_WARN, "shards", "%s: %s was never listed in the manifest (a writer stopped between rename "
                   "and manifest update): moved aside to .orphan-%s", dir, n, n);
    }
    closedir(d);
}

int shard_manifest_publish(const char *dir, const char *prefix, const ShardFacts *facts, const char *tmp_shard,
                           const char *tmp_index, ShardEntry *entry, char *name, size_t name_cap, int no_fsync,
                           TfError *err)
{
    int lock = manifest_lock(dir, err);
    if (lock < 0)
        return -1;
    int rc = -1;
    char final_path[4096], idx_final[4200];
    /* Numbers after every shard on disk (listed or not) and every entry. */
    long long number = highest_on_disk(dir, prefix) + 1;
    ShardManifest *m = NULL;
    char mpath[4096];
    if (tf_path_join(mpath, sizeof mpath, dir, SHARD_MANIFEST_NAME) == 0 && access(mpath, F_OK) == 0 &&
        !(m = shard_manifest_load(dir, err)))
        goto done;
    size_t plen = strlen(prefix);
    for (size_t i = 0; m && i < m->n_shards; i++) {
        const char *n = m->shards[i].name;
        if (!strncmp(n, prefix, plen) && n[plen] == '-' && n[plen + 1] >= '0' && n[plen + 1] <= '9') {
            long long v = strtoll(n + plen + 1, NULL, 10);
            if (v >= number)
                number = v + 1;
        }
    }
    folder_tidy(dir, m);
    shard_manifest_free(m);
    for (int tries = 0;; tries++, number++) {
        if (snprintf(name, name_cap, "%s-%06lld%s", prefix, number, SHARD_FILE_SUFFIX) >= (int)name_cap ||
            tf_path_join(final_path, sizeof final_path, dir, name) ||
            snprintf(idx_final, sizeof idx_final, "%s%s", final_path, SHARD_INDEX_SUFFIX) >= (int)sizeof idx_final) {
            tf_fail(err, "path too long: %s", dir);
            goto done;
        }
        /* Index first: a visible shard always has its index beside it. */
        int r = rename_noreplace(tmp_index, idx_final, err);
        if (r < 0)
            goto done;
        if (r == 1) {
            if (tries > 1000) {
                tf_fail(err, "%s: no free shard number after %s", dir, name);
                goto done;
            }
            continue;
        }
        r = rename_noreplace(tmp_shard, final_path, err);
        if (r == 0)
            break;
        /* Take the index back (it is ours: nobody else takes a number
         * while we hold the lock) and try the next number. */
        if (rename(idx_final, tmp_index) != 0) {
            tf_fail(err, "rename %s back: %s", idx_final, strerror(errno));
            goto done;
        }
        if (r < 0)
            goto done;
    }
    if (!no_fsync && tf_fsync_parent(final_path, err))
        goto done;
    entry->name = name;
    rc = manifest_add_locked(dir, facts, entry, no_fsync, err);
done:
    close(lock);
    return rc;
}
