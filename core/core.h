/* core: the small shared home every transfuse library may use.
 *
 * Errors, logging, the subcommand table, files written atomically, base64,
 * SHA-256, progress lines, and JSON loading. Nothing here knows about
 * images, records or models. The tensor kernels are a library of their own
 * (kernels/kernels.h: one interface, CPU and CUDA builds).
 *
 * Conventions used across the code base:
 *   - functions that can fail return 0 on success and -1 on failure, and
 *     describe the failure in a caller-owned TfError (which may be NULL);
 *   - x_new/x_free pairs own heap objects, x_free(NULL) is a no-op;
 *   - libraries never exit; only cli/ decides the process status.
 */
#ifndef TRANSFUSE_CORE_H
#define TRANSFUSE_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#define TF_VERSION_STRING TF_VERSION

/* ---- errors ------------------------------------------------------------ */

typedef struct TfError {
    char msg[512];
} TfError;

/* Formats a message into `err` (when not NULL) and returns -1, so a failing
 * function can end with `return tf_fail(err, "...")`. */
int tf_fail(TfError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the message already in `err` with a formatted context, keeping
 * the original text after ": ". Returns -1. */
int tf_fail_context(TfError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- logging (stderr; stdout carries data) -------------------------------- */

typedef enum { TF_LOG_DEBUG = 0, TF_LOG_INFO, TF_LOG_WARN, TF_LOG_ERROR, TF_LOG_QUIET } TfLogLevel;

/* Sets the minimum level printed. The initial level comes from the
 * TRANSFUSE_LOG environment variable (debug, info, warn, error, quiet);
 * info when it is unset. */
void tf_log_set_level(TfLogLevel level);
TfLogLevel tf_log_get_level(void);

/* Writes "LEVEL tag: message" to stderr when level is enabled. Thread-safe. */
void tf_log(TfLogLevel level, const char *tag, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A per-item warning limiter: at most `burst` messages per `period_s`
 * seconds; the count of suppressed ones is reported with the next message
 * that passes. Zero-initialise, then set burst and period_s. */
typedef struct TfRateLimit {
    int burst;
    double period_s;
    double window_start;
    int in_window;
    long suppressed;
} TfRateLimit;

/* Logs like tf_log unless the limiter says the burst is spent. Not
 * thread-safe for one limiter: give each thread its own or lock around. */
void tf_log_limited(TfRateLimit *limit, TfLogLevel level, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- command line: one dispatcher, one option parser, one table of exit codes
 *
 * Every subcommand of the `transfuse` binary follows the same rules:
 *   - options are parsed by tf_opts_next (getopt_long): `--opt value` and
 *     `--opt=value` both work, options may follow operands, and an unknown
 *     option or a missing value exits TF_EXIT_USAGE before any work starts;
 *   - sizes take decimal suffixes (K, M, G, T = 10^3..10^12) or binary ones
 *     (Ki, Mi, Gi, Ti = 2^10..2^40), an optional trailing B: `100M` is
 *     100,000,000 bytes, `256Mi` is 268,435,456;
 *   - `--threads 0` means one thread per online CPU;
 *   - the exit status is one of TF_EXIT_* below.
 */

#define TF_EXIT_OK 0       /* done; per-item failures are counted in the stats */
#define TF_EXIT_CHECK 1    /* done, but a check failed or a failure limit was passed */
#define TF_EXIT_USAGE 2    /* bad command line or configuration; nothing was done */
#define TF_EXIT_FAIL 3     /* could not run: missing input, I/O or broker error */
#define TF_EXIT_STOPPED 130 /* stopped on request (SIGINT/SIGTERM); finished work is kept */

/* One subcommand. `run` gets argv with argv[0] being the subcommand's name
 * and returns a TF_EXIT_* status. */
typedef struct TfCommand {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} TfCommand;

/* The one subcommand dispatcher. Runs the command named by argv[1] from
 * cmds[0..n). With no command, or an unknown one, prints the table to
 * stderr and returns TF_EXIT_USAGE; with -h, --help or `help` prints it to
 * stdout and returns TF_EXIT_OK. `prog` ("transfuse shards") heads the
 * usage, `about` (may be NULL) is a paragraph under it, `footer` (may be
 * NULL) is printed after the table. */
int tf_cli_dispatch(const char *prog, const char *about, const char *footer, const TfCommand *cmds, size_t n,
                    int argc, char **argv);

/* Returns 1 when argv holds -h or --help (before a "--"), else 0. */
int tf_cli_wants_help(int argc, char **argv);

/* The one option parser: a getopt_long loop with the rules above.
 *
 *     TfOpts o = {"transfuse shards verify", argc, argv, "hq", LONG_OPTIONS};
 *     int c;
 *     while ((c = tf_opts_next(&o)) != -1)
 *         switch (c) { ...; case '?': return TF_EXIT_USAGE; }
 *     operands: argv[o.first_operand .. argc)
 *
 * Returns the option's value, -1 after the last option, or '?' after
 * printing one line naming the unknown option or missing value (prefixed by
 * prog) to stderr. The option's argument is in o.arg. */
#ifndef __cplusplus
struct option;
typedef struct TfOpts {
    const char *prog;
    int argc;
    char **argv;
    const char *shortopts;          /* getopt form, e.g. "ho:" */
    const struct option *longopts;  /* {0} terminated */
    /* filled by tf_opts_next */
    const char *arg;                /* the current option's argument, or NULL */
    int first_operand;              /* after -1: index of the first operand */
    int started;
} TfOpts;
int tf_opts_next(TfOpts *o);
#endif

/* Parses a decimal integer in [min, max] from `text` into *out. Returns 0,
 * or -1 with a message naming `flag` when the text is not such a number. */
int tf_parse_long(const char *flag, const char *text, long min, long max, long *out, TfError *err);

/* Parses a size with the suffixes above into *out. Returns 0 or -1 with a
 * message naming `flag`. */
int tf_parse_size(const char *flag, const char *text, uint64_t *out, TfError *err);

/* Parses a thread count in [0, max]; 0 becomes the number of online CPUs. */
int tf_parse_threads(const char *flag, const char *text, int max, int *out, TfError *err);

/* Online CPUs (at least 1). */
int tf_cpu_count(void);

/* ---- stopping ---------------------------------------------------------------
 *
 * Libraries never install signal handlers: long-running work takes a
 * `const TfStopFlag *stop` (NULL: never stops) and checks it at least every
 * ~100 ms, then drains what is safe to drain. The binary's SIGINT/SIGTERM
 * handler (cli/transfuse.c) sets the process's flag. A command that honours
 * it says so by asking for it with tf_cli_stop_flag(): for such a command
 * the first signal sets the flag and a second one ends the process at once;
 * a command that never asked ends on the first signal. Either way nothing
 * half-written becomes visible, since every output is published by rename.
 */
#ifndef __cplusplus
#include <stdatomic.h>
typedef atomic_int TfStopFlag;

/* Non-zero when a stop was requested; `stop` may be NULL. */
static inline int tf_stop_requested(const TfStopFlag *stop)
{
    return stop && atomic_load_explicit((TfStopFlag *)stop, memory_order_relaxed) != 0;
}

/* The process's stop flag, for the CLI layer of a command that honours it.
 * Calling it marks the running command as one that stops gracefully. */
TfStopFlag *tf_cli_stop_flag(void);

/* For the signal handler only: 1 once tf_cli_stop_flag was called. */
int tf_cli_stop_watched(void);
#endif

/* ---- time, progress ------------------------------------------------------- */

/* Seconds on a monotonic clock. */
double tf_now(void);

/* A single progress line on stderr, redrawn at most 10 times a second and
 * only when stderr is a terminal (or TRANSFUSE_PROGRESS=1). */
typedef struct TfProgress {
    const char *label;
    uint64_t total;       /* units of work expected, 0 if unknown */
    const char *unit;     /* e.g. "B" or "records" */
    double started;
    double last_draw;
    int enabled;
} TfProgress;

void tf_progress_init(TfProgress *p, const char *label, uint64_t total, const char *unit);
void tf_progress_update(TfProgress *p, uint64_t done);
void tf_progress_finish(TfProgress *p, uint64_t done);

/* ---- metrics ------------------------------------------------------------------
 *
 * One process-wide registry of counters, gauges and histograms (fixed
 * buckets), rendered in Prometheus' text format (version 0.0.4) and served
 * on /metrics by tf_metrics_serve. Looking a series up takes a lock and
 * may allocate: do it once, keep the pointer (series live until the process
 * ends). Updating a series is one atomic operation, safe from any thread
 * and cheap on hot paths.
 *
 * Names follow Prometheus' rules ([a-zA-Z_:][a-zA-Z0-9_:]*, counters end in
 * _total, units in the name: _seconds, _bytes). Labels are given as
 * NULL-terminated name, value pairs; values are escaped when rendered. A
 * lookup with an invalid name, label, or a name already used by another
 * kind returns NULL, and every update accepts NULL as a no-op, so a metric
 * can never fail the work it measures.
 */
typedef struct TfCounter TfCounter;
typedef struct TfGauge TfGauge;
typedef struct TfHistogram TfHistogram;

/* The series NAME{labels...}, created on first use with `help`. */
TfCounter *tf_counter(const char *name, const char *help, ...) __attribute__((sentinel));
TfGauge *tf_gauge(const char *name, const char *help, ...) __attribute__((sentinel));
/* `bounds` are the n ascending upper bounds (the +Inf bucket is added); a
 * later lookup of the same name must give the same bounds. */
TfHistogram *tf_histogram(const char *name, const char *help, const double *bounds, size_t n, ...)
    __attribute__((sentinel));

void tf_counter_add(TfCounter *c, uint64_t n);
uint64_t tf_counter_value(const TfCounter *c);
void tf_gauge_set(TfGauge *g, double v);
void tf_gauge_add(TfGauge *g, double v);
double tf_gauge_value(const TfGauge *g);
void tf_histogram_observe(TfHistogram *h, double v);

/* Bucket bounds for latencies in seconds: 1 ms to 60 s, roughly x2.5. */
extern const double TF_SECONDS_BUCKETS[];
extern const size_t TF_SECONDS_BUCKETS_N;

/* The whole registry in text format, sorted by name: a malloc'd string
 * (caller frees) and its length, or NULL when out of memory. */
char *tf_metrics_render(size_t *len);

/* An HTTP server (libmicrohttpd, its own thread) answering GET /metrics
 * with the registry; every other path is 404. Binds `addr` (NULL:
 * 127.0.0.1) on `port` (0 asks the kernel for a free port: see
 * tf_metrics_server_port). Returns NULL with err filled when it cannot
 * listen. */
typedef struct TfMetricsServer TfMetricsServer;
TfMetricsServer *tf_metrics_serve(const char *addr, int port, TfError *err);
int tf_metrics_server_port(const TfMetricsServer *s);
void tf_metrics_server_free(TfMetricsServer *s);

/* Registers the server for discovery (`--register DIR`): writes
 * DIR/<command>-<host>-<pid>.json (DIR created if missing; the name keeps
 * only [A-Za-z0-9._-]) atomically, holding
 *     {"pid", "host", "addr", "port", "command", "started" (Unix seconds),
 *      "start_ticks" (the process start from /proc, to tell a reused PID),
 *      "argv" (the command line, cut at ~500 bytes), "version", "format": 1}
 * tf_metrics_server_free removes the file; a process that dies without
 * freeing leaves it behind, and readers (`transfuse top --discover`) tell
 * such stale entries by PID and start ticks on the same host, and by age
 * and no answer from another host. Readers ignore names not ending in
 * ".json" (the temporary names of the atomic write). One registration per
 * server. Returns 0, or -1 with err filled (nothing is left behind). */
int tf_metrics_server_register(TfMetricsServer *s, const char *dir, const char *command, TfError *err);

/* Field 22 of /proc/PID/stat (pid 0: this process): when the process
 * started, in clock ticks since boot. With the PID it names one process
 * for good (a later process reusing the PID started later). 0 unknown. */
unsigned long long tf_metrics_process_start_ticks(long pid);

/* The registration file's path, or NULL when not registered. */
const char *tf_metrics_server_registration(const TfMetricsServer *s);

/* For the CLI of a long-running command: `--metrics-port N` (0 = off, the
 * default) and `--metrics-addr A`. Starts the server when port > 0 and logs
 * its address under `tag`; returns NULL when off or failed (err filled
 * when failed, so the caller can tell: err->msg[0] != 0). Also sets the
 * transfuse_build_info and process start series. */
TfMetricsServer *tf_metrics_cli_start(const char *tag, const char *addr, long port, TfError *err);

/* The same with `--register DIR` (register_dir non-NULL): the server is
 * started even when port is 0, on a port the kernel picks, and registered
 * under `tag` as the command (tf_metrics_server_register). NULL
 * register_dir is exactly tf_metrics_cli_start. */
TfMetricsServer *tf_metrics_cli_start_registered(const char *tag, const char *addr, long port,
                                                 const char *register_dir, TfError *err);

/* ---- files ---------------------------------------------------------------- */

/* Reads a whole file into a malloc'd buffer (NUL-terminated for
 * convenience, the NUL not counted in *len). Caller frees. Refuses files
 * larger than max_bytes. Returns NULL and fills err on failure. */
char *tf_read_file(const char *path, size_t max_bytes, size_t *len, TfError *err);

/* Writes `len` bytes to `path` so that readers see either the old file or
 * the complete new one: a temporary name in the same folder, fsync,
 * rename, fsync of the folder. */
int tf_write_file_atomic(const char *path, const void *data, size_t len, TfError *err);

/* Writes all of buf to fd, retrying short writes and EINTR. */
int tf_write_all(int fd, const void *buf, size_t len, TfError *err);

/* fsyncs the folder that holds `path` (so a rename there is durable). */
int tf_fsync_parent(const char *path, TfError *err);

/* Creates a folder and its parents (like mkdir -p). */
int tf_mkdir_p(const char *path, TfError *err);

/* Joins a folder and a name into out (of size cap). Returns -1 if it does
 * not fit. */
int tf_path_join(char *out, size_t cap, const char *dir, const char *name);

/* ---- encodings and hashes --------------------------------------------------- */

/* Standard base64 (RFC 4648, with padding). Returns a malloc'd
 * NUL-terminated string, or NULL when out of memory. */
char *tf_base64_encode(const void *data, size_t len);

/* Decodes standard base64 (padding optional, no whitespace). Returns a
 * malloc'd buffer and its length, or NULL with err filled. */
unsigned char *tf_base64_decode(const char *text, size_t text_len, size_t *out_len, TfError *err);

/* SHA-256 of a buffer, through OpenSSL. */
void tf_sha256(const void *data, size_t len, unsigned char out[32]);

/* Incremental SHA-256 for data that arrives in pieces. */
typedef struct TfSha256 TfSha256;
TfSha256 *tf_sha256_new(void);
void tf_sha256_update(TfSha256 *h, const void *data, size_t len);
void tf_sha256_final(TfSha256 *h, unsigned char out[32]); /* also frees h */

/* Writes 2*len lowercase hex digits and a NUL into out. */
void tf_hex(const unsigned char *data, size_t len, char *out);

/* ---- JSON (jansson) ---------------------------------------------------------- */

/* Loads a JSON file (at most max_bytes). Returns a new reference, or NULL
 * with err naming the file, line and column. */
json_t *tf_json_load_file(const char *path, size_t max_bytes, TfError *err);

/* Writes a JSON value to `path` atomically, pretty-printed, with a final
 * newline. */
int tf_json_write_file_atomic(const char *path, const json_t *value, TfError *err);

/* ---- safetensors ---------------------------------------------------------------- */

/* Element types of safetensors files. All dtypes of the format are known
 * (their sizes are checked against byte ranges); conversion to f32 exists
 * for F32, F16 and BF16, the ones model weights use. */
typedef enum {
    TF_DTYPE_F32 = 0,
    TF_DTYPE_F16,
    TF_DTYPE_BF16,
    TF_DTYPE_F64,
    TF_DTYPE_I64,
    TF_DTYPE_I32,
    TF_DTYPE_I16,
    TF_DTYPE_I8,
    TF_DTYPE_U64,
    TF_DTYPE_U32,
    TF_DTYPE_U16,
    TF_DTYPE_U8,
    TF_DTYPE_BOOL,
    TF_DTYPE_F8_E4M3,
    TF_DTYPE_F8_E5M2,
    TF_DTYPE_COUNT
} TfDtype;

/* The safetensors name ("F32", "BF16", ...) and size in bytes of a dtype. */
const char *tf_dtype_name(TfDtype dtype);
size_t tf_dtype_size(TfDtype dtype);

#define TF_TENSOR_MAX_DIMS 8

/* One tensor of an opened checkpoint. `data` points into the read-only
 * mapping and stays valid until the TfSafetensors is freed. */
typedef struct TfTensorInfo {
    const char *name;
    const char *file;   /* the .safetensors file holding it */
    TfDtype dtype;
    int ndim;
    int64_t shape[TF_TENSOR_MAX_DIMS];
    size_t numel;
    size_t nbytes;      /* numel * dtype size, equal to the byte range */
    const void *data;
} TfTensorInfo;

typedef struct TfSafetensors TfSafetensors;

/* Limits on untrusted files: the JSON header and the tensor count. */
#define TF_SAFETENSORS_MAX_HEADER (100u << 20)
#define TF_SAFETENSORS_MAX_TENSORS 1000000

/* Opens a checkpoint: either one `.safetensors` file, or a sharded one
 * through its `*.safetensors.index.json` (weight_map naming the shards,
 * which sit beside the index). Every file is mapped read-only and its
 * header validated: length within the file, JSON object, dtypes known,
 * shapes non-negative, data_offsets inside the data section, byte ranges
 * equal to shape times dtype size, no two tensors overlapping. Tensor
 * names must be unique across shards and, for an index, each tensor must
 * sit in the shard the index names. Returns a new handle, or NULL with
 * `err` naming the file (and the tensor where one is at fault). */
TfSafetensors *tf_safetensors_open(const char *path, TfError *err);

/* Parses and validates one file held in memory (the fuzz target's entry
 * and what _open uses per shard). `bytes` must outlive the handle;
 * `label` names it in messages. */
TfSafetensors *tf_safetensors_open_memory(const void *bytes, size_t len, const char *label, TfError *err);

void tf_safetensors_free(TfSafetensors *st);

/* Tensors in file order (shard by shard). */
size_t tf_safetensors_count(const TfSafetensors *st);
const TfTensorInfo *tf_safetensors_at(const TfSafetensors *st, size_t i);

/* The tensor called `name`, or NULL. */
const TfTensorInfo *tf_safetensors_find(const TfSafetensors *st, const char *name);

/* A string value of the first file's "__metadata__", or NULL. */
const char *tf_safetensors_metadata(const TfSafetensors *st, const char *key);

/* The mapped files (one, or the shards in index order) with their bytes,
 * e.g. to hash a checkpoint. Returns NULL past the end. */
const void *tf_safetensors_file(const TfSafetensors *st, size_t i, size_t *len, const char **path);

/* Converts a tensor to f32 into `dst`, which holds `n` floats; n must
 * equal the tensor's element count. F32, F16 and BF16 convert; other
 * dtypes fail with a message naming file and tensor. */
int tf_tensor_to_f32(const TfTensorInfo *t, float *dst, size_t n, TfError *err);

/* Finds `name`, checks that its shape is exactly shape[0..ndim), and
 * converts it into dst (numel floats). Fails naming file and tensor when
 * missing, misshapen or of a dtype without conversion. */
int tf_safetensors_read_f32(const TfSafetensors *st, const char *name, int ndim, const int64_t *shape, float *dst,
                            TfError *err);

/* Bit conversions between f32 and the 16-bit float formats (round to
 * nearest even; NaN stays NaN). */
float tf_f16_to_f32(uint16_t h);
float tf_bf16_to_f32(uint16_t h);
uint16_t tf_f32_to_f16(float f);
uint16_t tf_f32_to_bf16(float f);

/* A safetensors writer: add tensors (copied, converted from f32 to the
 * chosen dtype), then write the file atomically (temp name, fsync,
 * rename). The header is padded to 8 bytes as the reference library does. */
typedef struct TfSafetensorsWriter TfSafetensorsWriter;

TfSafetensorsWriter *tf_safetensors_writer_new(void);
void tf_safetensors_writer_free(TfSafetensorsWriter *w);

/* Adds tensor `name` of shape shape[0..ndim) from `n` f32 values stored as
 * `dtype` (F32, F16 or BF16). Names must be unique. */
int tf_safetensors_writer_add_f32(TfSafetensorsWriter *w, const char *name, TfDtype dtype, int ndim,
                                  const int64_t *shape, const float *data, size_t n, TfError *err);

/* Sets a string entry of "__metadata__". */
int tf_safetensors_writer_set_metadata(TfSafetensorsWriter *w, const char *key, const char *value, TfError *err);

/* Writes everything added so far to `path`. */
int tf_safetensors_writer_write(TfSafetensorsWriter *w, const char *path, TfError *err);

#endif
