/* ops: operating transfuse: the embedded Kafka broker for one machine,
 * watching a deployment live (`transfuse top`: the Prometheus text parser,
 * scraping, the discovery folder), plots of training and ingest logs
 * (`transfuse plot`), contact sheets of records (`transfuse shards
 * preview`), and the Prometheus rules under ops/prometheus/. Nothing
 * depends on ops except the binaries. */
#ifndef TRANSFUSE_OPS_H
#define TRANSFUSE_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

/* `transfuse broker`: librdkafka's mock Kafka cluster as a standalone local
 * process (--brokers N, --topic NAME:PARTITIONS, --bootstrap-file FILE).
 * Prints the bootstrap address and runs until SIGINT/SIGTERM. Returns the
 * process status (0 stopped cleanly, 1 failed, 2 usage). */
int broker_main(int argc, char **argv);

/* `transfuse top`: a live terminal view of every process of a deployment
 * (targets from --targets, --targets-file or --discover DIR), Kafka lag
 * queried from the cluster, `--once --json` for scripts and
 * `--prometheus-sd FILE` for Prometheus. Returns the process status. */
int top_main(int argc, char **argv);

/* `transfuse plot LOG... --out FILE.png`: trainer and ingest JSON-lines
 * logs drawn with gnuplot (pngcairo). Returns the process status. */
int plot_main(int argc, char **argv);

/* `transfuse shards preview PATH --out sheet.png`: a contact sheet of the
 * records of a dataset folder or topic (stored crops, or latents decoded
 * with --vae DIR), captions and keys set with pango. Composed into the
 * `shards` command table by the binary (shards/ knows nothing of images).
 * Returns the process status. */
int preview_main(int argc, char **argv);

/* ---- Prometheus text format (version 0.0.4), from untrusted endpoints ----
 *
 * prom_parse is as strict as Prometheus' own scrape: any malformed line
 * fails the whole document, with the line number in the message. Limits
 * bound everything an endpoint controls; a NUL byte, invalid UTF-8 in a
 * label value, a duplicated label, an unknown escape, a bad value or
 * timestamp, or a TYPE given twice are errors. Comments other than TYPE
 * are skipped. */

#define PROM_DEFAULT_MAX_BYTES (16u << 20)

typedef struct PromLimits {
    size_t max_bytes;    /* whole document; default 16 MiB */
    size_t max_line;     /* bytes per line; default 64 KiB */
    size_t max_samples;  /* series (and TYPE lines); default 200,000 */
    size_t max_labels;   /* labels per series; default 64 (also the most allowed) */
    size_t max_name;     /* metric and label name bytes; default 512 */
} PromLimits;

void prom_limits_init(PromLimits *lim);

typedef enum { PROM_UNTYPED = 0, PROM_COUNTER, PROM_GAUGE, PROM_HISTOGRAM, PROM_SUMMARY } PromType;

typedef struct PromLabel {
    const char *name, *value; /* value unescaped, valid UTF-8 (may hold any character) */
} PromLabel;

typedef struct PromSample {
    const char *name;
    const PromLabel *labels;  /* in the order written */
    size_t n_labels;
    double value;             /* NaN and +-Inf as such */
    int64_t timestamp_ms;
    int has_timestamp;
} PromSample;

typedef struct PromDoc PromDoc;

/* Parses len bytes of text (copied; need not be NUL-terminated). limits
 * NULL: the defaults. Returns a new document, or NULL with err naming the
 * line and the problem. */
PromDoc *prom_parse(const char *text, size_t len, const PromLimits *limits, TfError *err);
void prom_doc_free(PromDoc *d);

/* The samples in document order; strings live as long as the document. */
size_t prom_doc_count(const PromDoc *d);
const PromSample *prom_doc_at(const PromDoc *d, size_t i);

/* The TYPE given for a family name, PROM_UNTYPED when none. */
PromType prom_doc_type(const PromDoc *d, const char *family);

/* The value of label `name`, or NULL. */
const char *prom_sample_label(const PromSample *s, const char *name);

/* ---- scraping (libcurl multi) ----------------------------------------------- */

typedef struct OpsScrape {
    const char *url;   /* in: http(s)://HOST:PORT/metrics */
    char *body;        /* out: the answer (NUL-terminated), NULL on failure */
    size_t len;
    long status;       /* HTTP status, 0 when none came */
    double seconds;    /* how long the transfer took */
    char error[256];   /* "" on success: 2xx within the time and byte limits */
} OpsScrape;

/* Fetches every url, up to 32 at a time, each within timeout_ms and
 * max_bytes (bigger answers fail as "response larger than ..."); no
 * redirects, http and https only. Per-target failures are in the items'
 * error; returns -1 only when libcurl cannot be used at all. Bodies from a
 * previous call are freed first; free the last with ops_scrape_clear. */
int ops_scrape(OpsScrape *items, size_t n, int timeout_ms, size_t max_bytes, TfError *err);
void ops_scrape_clear(OpsScrape *items, size_t n);

/* ---- the discovery folder (`--register DIR`, see core.h) ------------------------ */

#define OPS_REGISTRY_MAX 4096

typedef enum {
    OPS_REG_LIVE = 0,  /* on this host, the process is running */
    OPS_REG_REMOTE,    /* on another host: only an answer tells (readers decide with age_s) */
    OPS_REG_STALE,     /* on this host, the process is gone (or its PID was reused) */
    OPS_REG_BAD,       /* the file is not a registration */
} OpsRegState;

typedef struct OpsRegistration {
    char file[256];      /* name in the folder */
    long pid;
    char host[256], addr[64], command[64], argv[512], version[32];
    int port;
    double started;      /* Unix seconds */
    double age_s;        /* now - started */
    unsigned long long start_ticks;
    int local;           /* registered on this host */
    OpsRegState state;
    char why[256];       /* stale or bad: why */
    char target[300];    /* HOST:PORT to scrape */
} OpsRegistration;

/* Reads every *.json of dir (at most OPS_REGISTRY_MAX, each at most 64 KiB)
 * into a malloc'd array sorted by file name (caller frees). Unreadable or
 * malformed files are listed with state OPS_REG_BAD. Returns 0, or -1 with
 * err filled when the folder cannot be read. */
int ops_registry_scan(const char *dir, OpsRegistration **out, size_t *n, TfError *err);

/* "live", "remote", "stale", "bad". */
const char *ops_registration_state_name(OpsRegState state);

/* Writes every entry but the bad ones as a Prometheus file_sd target list
 * ([{"targets": [HOST:PORT], "labels": {command, transfuse_host,
 * transfuse_pid, transfuse_registration}}, ...]) to path, atomically and
 * only when the content changes. Stale entries are kept on purpose: a
 * process that left its file behind crashed, and Prometheus should see it
 * down (TransfuseTargetDown) until the file is removed. */
int ops_registry_write_sd(const char *path, const OpsRegistration *regs, size_t n, TfError *err);

#endif
