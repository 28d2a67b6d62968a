/* top_internal.h: the parts of `transfuse top` (ops/top*.c). The collector
 * scrapes the targets and queries Kafka, keeps per-row state (previous
 * counter values for rates, histories for sparklines) and hands out
 * snapshots as JSON, the same object `--once --json` prints; the terminal
 * view only ever draws such a snapshot. */
#ifndef TRANSFUSE_TOP_INTERNAL_H
#define TRANSFUSE_TOP_INTERNAL_H

#include "ops.h"

typedef struct TopConfig {
    char **targets;          /* HOST:PORT or http(s) URLs */
    size_t n_targets;
    const char *discover_dir;
    double stale_after_s;    /* a registration from another host that does not answer and is older: stale */
    int timeout_ms;          /* per scrape */
    size_t max_bytes;        /* per answer */
    char **kafka;            /* kafka://BOOTSTRAP/TOPIC to watch besides those brokers export */
    size_t n_kafka;
    char **groups;           /* consumer groups to show for every topic */
    size_t n_groups;
    int history;             /* points kept per row (one per scrape round) */
} TopConfig;

typedef struct TopCollector TopCollector;

/* A collector over cfg (copied, strings included). Returns NULL with err
 * filled when out of memory or a Kafka address is malformed. */
TopCollector *top_collector_new(const TopConfig *cfg, TfError *err);
void top_collector_free(TopCollector *c);

/* One round: refreshes discovered targets, scrapes every target, parses
 * what came back and updates the rows. Safe to call while another thread
 * takes snapshots or runs a Kafka round (the network part runs unlocked). */
void top_collector_scrape(TopCollector *c);

/* One round over the Kafka topics known so far: watermarks and the
 * committed offsets of the groups, lag and its trend. */
void top_collector_kafka(TopCollector *c);

/* Writes the live discovered registrations as a Prometheus file_sd file
 * (no-op without --discover). */
int top_collector_write_sd(TopCollector *c, const char *path, TfError *err);

/* The current state (new reference):
 * {"time", "rounds", "targets": [...], "ingest": [...], "encode": [...],
 *  "trainer": [...], "shards": [...], "topics": [...], "totals": {...}}
 * (docs/OPERATIONS.md lists every field). */
json_t *top_collector_snapshot(TopCollector *c);

/* Draws a snapshot into buf (cap bytes) as one terminal frame of rows x
 * cols: cursor home, each line cleared to its end, the rest of the screen
 * cleared, so that one write(2) replaces the previous frame without a
 * flash. sort: 0 by target, 1 by rate, 2 by failures. Returns the length. */
size_t top_render(const json_t *snap, int rows, int cols, int sort, int paused, char *buf, size_t cap);

/* The sort order names for the header. */
const char *top_sort_name(int sort);
#define TOP_SORTS 3

#endif
