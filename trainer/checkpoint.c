/* checkpoint.c: training checkpoints. A folder per step,
 * OUT/step-NNNNNNNN/, holding the trainable weights (model.safetensors,
 * fusion_save_trainable), the AdamW state (optimizer.safetensors: m, v
 * over the one allocation, the step in its metadata), the run state
 * (state.json: step, the data stream's state (position and RNG ordinal),
 * the data's facts), the run's config (config.json) and the completion
 * marker COMPLETE. Written into OUT/.tmp-step-NNNNNNNN-PID, every file
 * fsynced, the marker last, then renamed into place and OUT fsynced, so a
 * step-* folder with its marker is whole. docs/TRAINER.md "Checkpoints". */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "train_internal.h"

#define OPTIM_FILE "optimizer.safetensors"
#define STATE_FILE "state.json"
#define CONFIG_FILE "config.json"

/* Removes a folder of plain files (a checkpoint). Returns 0 or -1. */
static int remove_flat_dir(const char *dir, TfError *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : tf_fail(err, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    char path[4096];
    int rc = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (unlink(path) != 0 && errno != ENOENT)
                rc = tf_fail(err, "remove %s: %s", path, strerror(errno));
        }
    closedir(d);
    if (rc == 0 && rmdir(dir) != 0)
        rc = tf_fail(err, "remove %s: %s", dir, strerror(errno));
    return rc;
}

static int write_json(const char *path, const json_t *j, TfError *err)
{
    char *s = json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    if (!s)
        return tf_fail(err, "out of memory");
    size_t n = strlen(s);
    s[n] = '\n'; /* json_dumps leaves room: replace the NUL, written by length */
    int rc = tf_write_file_atomic(path, s, n + 1, err);
    free(s);
    return rc;
}

/* The optimizer's m and v (downloaded) and step. */
static int write_optim(const TrainOptim *o, const char *path, TfError *err)
{
    int rc = -1;
    TfSafetensorsWriter *w = tf_safetensors_writer_new();
    float *m = malloc((o->n ? o->n : 1) * sizeof *m), *v = malloc((o->n ? o->n : 1) * sizeof *v);
    char step[32];
    snprintf(step, sizeof step, "%ld", o->step);
    const int64_t shape[1] = {(int64_t)o->n};
    if (!w || !m || !v) {
        tf_fail(err, "out of memory");
        goto done;
    }
    if (tf_kernels_download(o->k, m, o->m, o->n, err) != 0 || tf_kernels_download(o->k, v, o->v, o->n, err) != 0 ||
        tf_safetensors_writer_set_metadata(w, "transfuse.optimizer_step", step, err) != 0 ||
        tf_safetensors_writer_add_f32(w, "m", TF_DTYPE_F32, 1, shape, m, o->n, err) != 0 ||
        tf_safetensors_writer_add_f32(w, "v", TF_DTYPE_F32, 1, shape, v, o->n, err) != 0)
        goto done;
    rc = tf_safetensors_writer_write(w, path, err);
done:
    free(m);
    free(v);
    tf_safetensors_writer_free(w);
    return rc;
}

static int read_optim(TrainOptim *o, const char *path, TfError *err)
{
    int rc = -1;
    TfSafetensors *st = tf_safetensors_open(path, err);
    float *m = malloc((o->n ? o->n : 1) * sizeof *m), *v = malloc((o->n ? o->n : 1) * sizeof *v);
    const int64_t shape[1] = {(int64_t)o->n};
    if (!st || !m || !v) {
        if (st)
            tf_fail(err, "out of memory");
        goto done;
    }
    const char *step = tf_safetensors_metadata(st, "transfuse.optimizer_step");
    char *end = NULL;
    long s = step ? strtol(step, &end, 10) : -1;
    if (!step || *end || s < 0) {
        tf_fail(err, "%s: no transfuse.optimizer_step", path);
        goto done;
    }
    if (tf_safetensors_read_f32(st, "m", 1, shape, m, err) != 0 || tf_safetensors_read_f32(st, "v", 1, shape, v, err) ||
        tf_kernels_upload(o->k, o->m, m, o->n, err) != 0 || tf_kernels_upload(o->k, o->v, v, o->n, err) != 0) {
        tf_fail_context(err, "%s", path);
        goto done;
    }
    o->step = s;
    rc = 0;
done:
    free(m);
    free(v);
    tf_safetensors_free(st);
    return rc;
}

void train_checkpoint_path(const char *out, long step, char *path, size_t cap)
{
    snprintf(path, cap, "%s/step-%08ld", out, step);
}

int train_checkpoint_write(const char *out, long step, FusionModel *m, const TrainOptim *o, const json_t *state,
                           const json_t *config, TfError *err)
{
    char final[4096], tmp[4096], path[4200], marker[4200];
    train_checkpoint_path(out, step, final, sizeof final);
    snprintf(marker, sizeof marker, "%s/%s", final, TRAIN_CHECKPOINT_MARKER);
    if (access(marker, F_OK) == 0)
        return 0; /* this step is saved already */
    snprintf(tmp, sizeof tmp, "%s/.tmp-step-%08ld-%ld", out, step, (long)getpid());
    if (tf_mkdir_p(out, err) != 0 || remove_flat_dir(tmp, err) != 0)
        return -1;
    if (mkdir(tmp, 0777) != 0)
        return tf_fail(err, "mkdir %s: %s", tmp, strerror(errno));
    snprintf(path, sizeof path, "%s/%s", tmp, FUSION_CHECKPOINT_WEIGHTS);
    if (fusion_save_trainable(m, path, err) != 0)
        goto fail;
    snprintf(path, sizeof path, "%s/%s", tmp, OPTIM_FILE);
    if (write_optim(o, path, err) != 0)
        goto fail;
    snprintf(path, sizeof path, "%s/%s", tmp, STATE_FILE);
    if (write_json(path, state, err) != 0)
        goto fail;
    snprintf(path, sizeof path, "%s/%s", tmp, CONFIG_FILE);
    if (write_json(path, config, err) != 0)
        goto fail;
    char text[64];
    int n = snprintf(text, sizeof text, "step %ld\n", step);
    snprintf(path, sizeof path, "%s/%s", tmp, TRAIN_CHECKPOINT_MARKER);
    if (tf_write_file_atomic(path, text, (size_t)n, err) != 0)
        goto fail;
    /* an incomplete folder of this step (copied, damaged) gives way */
    if (remove_flat_dir(final, err) != 0)
        goto fail;
    if (rename(tmp, final) != 0) {
        tf_fail(err, "rename %s -> %s: %s", tmp, final, strerror(errno));
        goto fail;
    }
    return tf_fsync_parent(final, err);
fail:
    tf_fail_context(err, "checkpoint %s", final);
    remove_flat_dir(tmp, NULL);
    return -1;
}

/* The complete step-NNNNNNNN folders of `out`, ascending (malloc'd). */
static long *complete_steps(const char *out, size_t *n, TfError *err)
{
    *n = 0;
    DIR *d = opendir(out);
    if (!d) {
        if (errno != ENOENT)
            tf_fail(err, "%s: %s", out, strerror(errno));
        return NULL;
    }
    long *steps = NULL;
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        if (strncmp(e->d_name, "step-", 5))
            continue;
        long s = strtol(e->d_name + 5, &end, 10);
        if (*end || s < 0 || strlen(e->d_name) != 13)
            continue;
        char marker[4200];
        snprintf(marker, sizeof marker, "%s/%s/%s", out, e->d_name, TRAIN_CHECKPOINT_MARKER);
        if (access(marker, F_OK) != 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            long *g = realloc(steps, cap * sizeof *g);
            if (!g) {
                free(steps);
                closedir(d);
                tf_fail(err, "out of memory");
                *n = 0;
                return NULL;
            }
            steps = g;
        }
        steps[(*n)++] = s;
    }
    closedir(d);
    for (size_t i = 1; i < *n; i++) /* insertion sort: a few dozen at most */
        for (size_t j = i; j > 0 && steps[j - 1] > steps[j]; j--) {
            long t = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = t;
        }
    return steps;
}

long train_checkpoint_latest(const char *out, TfError *err)
{
    size_t n;
    if (err)
        err->msg[0] = 0;
    long *steps = complete_steps(out, &n, err);
    long latest = n ? steps[n - 1] : (err && err->msg[0] ? -2 : -1);
    free(steps);
    return latest;
}

int train_checkpoint_prune(const char *out, int keep_last, long keep_every, TfError *err)
{
    size_t n;
    long *steps = complete_steps(out, &n, err);
    int rc = 0;
    for (size_t i = 0; i + (size_t)keep_last < n; i++) {
        if (keep_every > 0 && steps[i] % keep_every == 0)
            continue;
        char path[4096];
        train_checkpoint_path(out, steps[i], path, sizeof path);
        if (remove_flat_dir(path, err) != 0)
            rc = -1;
    }
    free(steps);
    /* temporary folders of runs that died while writing */
    DIR *d = opendir(out);
    struct dirent *e;
    char pfx[32];
    snprintf(pfx, sizeof pfx, "-%ld", (long)getpid());
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, ".tmp-step-", 10)) {
            const size_t L = strlen(e->d_name), P = strlen(pfx);
            if (L > P && !strcmp(e->d_name + L - P, pfx))
                continue; /* this process's own */
            char path[4200];
            snprintf(path, sizeof path, "%s/%s", out, e->d_name);
            remove_flat_dir(path, NULL);
        }
    if (d)
        closedir(d);
    return rc;
}

int train_checkpoint_read(const char *dir, FusionModel *m, TrainOptim *o, json_t **state, TfError *err)
{
    char path[4200];
    *state = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, FUSION_CHECKPOINT_WEIGHTS);
    if (fusion_load_trainable(m, path, err) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/%s", dir, OPTIM_FILE);
    if (read_optim(o, path, err) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/%s", dir, STATE_FILE);
    json_error_t je;
    json_t *s = json_load_file(path, 0, &je);
    if (!s)
        return tf_fail(err, "%s: %s (line %d)", path, je.text, je.line);
    json_t *step = json_object_get(s, "step");
    if (!json_is_integer(step) || json_integer_value(step) != o->step) {
        json_decref(s);
        return tf_fail(err, "%s: step differs from the optimizer's %ld", path, o->step);
    }
    *state = s;
    return 0;
}

json_t *train_checkpoint_config(const char *dir, TfError *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, CONFIG_FILE);
    json_error_t je;
    json_t *c = json_load_file(path, 0, &je);
    if (!c)
        tf_fail(err, "%s: %s (line %d)", path, je.text, je.line);
    return c;
}
