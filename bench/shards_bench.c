/* shards_bench: write, sequential read+parse and verify throughput of
 * shard files with records of the real size (4x32x32 bf16 latent mean and
 * log-variance plus ~60 tokens: about 17 KB), next to the memory-copy
 * bandwidth measured in the same run, all on one core.
 *
 * usage: shards_bench [--records N] [--dir DIR] [--keep] [--transfuse PATH]
 * With --transfuse, also times `transfuse shards verify --quiet DIR` (the
 * real command, one process, one thread). */
#include "shards.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static double best_memcpy_gbs(size_t bytes)
{
    char *a = malloc(bytes), *b = malloc(bytes);
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t = tf_now();
        memcpy(b, a, bytes);
        double dt = tf_now() - t;
        __asm__ volatile("" ::"r"(b) : "memory");
        if (bytes / dt / 1e9 > best)
            best = bytes / dt / 1e9;
    }
    free(a);
    free(b);
    return best;
}

int main(int argc, char **argv)
{
    long n = 6000;
    const char *dir = "/tmp/tf_shards_bench", *transfuse = NULL;
    int keep = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--records") && i + 1 < argc)
            n = atol(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--keep"))
            keep = 1;
        else if (!strcmp(argv[i], "--transfuse") && i + 1 < argc)
            transfuse = argv[++i];
        else {
            fprintf(stderr, "usage: shards_bench [--records N] [--dir DIR] [--keep] [--transfuse PATH]\n");
            return 2;
        }
    }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    sched_setaffinity(0, sizeof one, &one);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        return 1;

    /* One realistic record, varied per sample so CRCs do real work. */
    uint32_t shape[3] = {4, 32, 32}, tokens[60];
    size_t tbytes = 4 * 32 * 32 * 2;
    uint8_t *mean = malloc(tbytes), *logvar = malloc(tbytes);
    for (size_t i = 0; i < tbytes; i++) {
        mean[i] = (uint8_t)(i * 7);
        logvar[i] = (uint8_t)(i * 13);
    }
    for (int i = 0; i < 60; i++)
        tokens[i] = (uint32_t)(1000 + i * 977);
    Transfuse__V1__Tensor tm = TRANSFUSE__V1__TENSOR__INIT, tl = TRANSFUSE__V1__TENSOR__INIT;
    tm.dtype = tl.dtype = TRANSFUSE__V1__DTYPE__DTYPE_BF16;
    tm.n_shape = tl.n_shape = 3;
    tm.shape = tl.shape = shape;
    tm.data = (ProtobufCBinaryData){tbytes, mean};
    tl.data = (ProtobufCBinaryData){tbytes, logvar};
    Transfuse__V1__Provenance pv = TRANSFUSE__V1__PROVENANCE__INIT;
    pv.source_url = "https://images.example.com/some/path/to/an/image_0001.jpg";
    Sample s = TRANSFUSE__V1__SAMPLE__INIT;
    s.caption = "A photograph of a small red boat moored at a wooden pier on a calm lake at dawn";
    s.n_tokens = 60;
    s.tokens = tokens;
    s.latent_mean = &tm;
    s.latent_logvar = &tl;
    s.provenance = &pv;
    char key[32];
    s.key = key;

    TfError err = {{0}};
    ShardWriterOptions wo = {0}; /* real defaults: 256 MiB shards, fsync on close */
    ShardFacts facts = {0};
    ShardWriter *w = shard_writer_open(dir, &wo, &facts, &err);
    if (!w) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    /* Encoding is the producer's cost, not the writer's: pre-encode. */
    size_t rec_len = 0;
    uint8_t **recs = malloc((size_t)n * sizeof *recs);
    size_t *lens = malloc((size_t)n * sizeof *lens);
    for (long i = 0; i < n; i++) {
        snprintf(key, sizeof key, "sample-%08ld", i);
        mean[i % tbytes] ^= 0x55;
        recs[i] = sample_encode(&s, &lens[i]);
        rec_len = lens[i];
    }
    double t0 = tf_now();
    uint64_t bytes = 0;
    for (long i = 0; i < n; i++) {
        snprintf(key, sizeof key, "sample-%08ld", i);
        if (shard_writer_append(w, recs[i], lens[i], key, strlen(key), &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        bytes += lens[i] + 16;
    }
    if (shard_writer_close(w, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double t_write = tf_now() - t0;

    ShardManifest *m = shard_manifest_load(dir, &err);
    double best_read = 1e9;
    uint64_t parsed = 0;
    for (int rep = 0; rep < 3; rep++) {
        /* The record source as the trainer uses it: decode every record. */
        RecordSourceOptions ro = {.path = dir, .decode = 1};
        RecordSource *src = record_source_open(&ro, &err);
        if (!src) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        parsed = 0;
        t0 = tf_now();
        Record rec;
        int rc;
        while ((rc = record_source_next(src, &rec, 0, NULL, &err)) != RECORD_SOURCE_END)
            parsed += rc == RECORD_SOURCE_RECORD && rec.sample->latent_mean && rec.sample->n_tokens == 60;
        double dt = tf_now() - t0;
        if (dt < best_read)
            best_read = dt;
        record_source_free(src);
    }
    double best_verify = 0;
    if (transfuse) {
        best_verify = 1e9;
        for (int rep = 0; rep < 3; rep++) {
            t0 = tf_now();
            pid_t pid = fork();
            if (pid == 0) {
                execl(transfuse, transfuse, "shards", "verify", "--quiet", dir, (char *)NULL);
                _exit(127);
            }
            int status;
            waitpid(pid, &status, 0);
            double dt = tf_now() - t0;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "verify failed\n");
                return 1;
            }
            if (dt < best_verify)
                best_verify = dt;
        }
    }
    double mc = best_memcpy_gbs(256u << 20);
    printf("records: %ld of %zu bytes (%.1f MB in %zu shards), one core\n", n, rec_len, bytes / 1e6, m->n_shards);
    printf("memcpy:        %6.2f GB/s\n", mc);
    printf("write:         %6.2f GB/s  %8.0f records/s  (%.2f of memcpy; fsync at shard close)\n",
           bytes / t_write / 1e9, n / t_write, bytes / t_write / 1e9 / mc);
    printf("read+parse:    %6.2f GB/s  %8.0f records/s  (%.2f of memcpy; record source, decode on)\n", bytes / best_read / 1e9,
           parsed / best_read, bytes / best_read / 1e9 / mc);
    if (transfuse)
        printf("verify (CLI):  %6.2f GB/s  %8.0f records/s  (%.2f of memcpy; file CRC + frame CRCs + parse)\n",
               bytes / best_verify / 1e9, n / best_verify, bytes / best_verify / 1e9 / mc);
    shard_manifest_free(m);
    for (long i = 0; i < n; i++)
        free(recs[i]);
    free(recs);
    free(lens);
    free(mean);
    free(logvar);
    if (keep)
        return 0;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
