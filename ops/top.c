/* top.c: `transfuse top`, the command: options, the terminal (alternate
 * screen, no echo, keys read without waiting for Enter), and the loops. A
 * scrape thread and a Kafka thread fill the collector; the main thread
 * reads keys, polls the terminal size (ioctl TIOCGWINSZ each frame: signal
 * handlers belong to cli/transfuse.c alone) and writes each frame in one
 * write(2). `--once` runs two rounds an interval apart (rates need two)
 * and prints the snapshot, as JSON with --json. */
#include "top_internal.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define TOP_TAG "top"
#define TOP_MAX_LIST 1024
#define TOP_FRAME_CAP (1u << 20)

static void top_usage(FILE *out)
{
    fprintf(out,
            "usage: transfuse top [--targets HOST:PORT,...] [--targets-file FILE] [--discover DIR]\n"
            "                     [--kafka kafka://BOOTSTRAP/TOPIC] [--group NAME] [--interval S]\n"
            "                     [--once [--json]] [--prometheus-sd FILE [--headless]]\n\n"
            "A live view of a whole deployment, from the metrics endpoints of its processes:\n"
            "every ingest worker (rows/s, success rate, failure reasons, MB/s, transfers in\n"
            "flight, ETA), encode worker (images/s), trainer rank (step, losses, tokens/s,\n"
            "samples/s, grad norm, data position, how far behind the leading rank), shards\n"
            "publish/archive, and the Kafka topics between stages (per group: high\n"
            "watermark, committed offset, lag and its trend, queried from the cluster).\n"
            "Rates come from counter differences between rounds; sparklines show the last\n"
            "minutes. An endpoint that does not answer, or answers with something that is\n"
            "not Prometheus' text format, shows as an error row.\n\n"
            "keys: q quit, s sort (target, rate, failures), p pause (rounds go on)\n\n"
            "targets:\n"
            "  --targets LIST         HOST:PORT or http(s)://HOST:PORT/PATH, comma separated\n"
            "                         (repeatable)\n"
            "  --targets-file FILE    one target per line (# comments)\n"
            "  --discover DIR         the endpoints registered in DIR (`--register DIR` of\n"
            "                         the long-running commands); re-read every round\n"
            "  --stale-after S        a registration from another host that is older than\n"
            "                         S seconds and does not answer is stale (default 60;\n"
            "                         on this host a gone PID tells at once)\n"
            "kafka:\n"
            "  --kafka URL            also watch kafka://BOOTSTRAP/TOPIC (repeatable; topics\n"
            "                         of a registered `transfuse broker` are found alone)\n"
            "  --group NAME           show this consumer group's offsets and lag on every\n"
            "                         topic (repeatable; also read from the processes'\n"
            "                         transfuse_kafka_consumer_info series; a real cluster\n"
            "                         lists its groups, the embedded broker cannot)\n"
            "rounds:\n"
            "  --interval S           seconds between rounds (default 1)\n"
            "  --timeout S            per scrape (default 2)\n"
            "  --max-bytes SIZE       largest answer accepted (default 16M)\n"
            "  --history N            points kept per row for the sparklines (default 600)\n"
            "output:\n"
            "  --once                 two rounds an interval apart, print, exit (1 when a\n"
            "                         target failed)\n"
            "  --json                 with --once: the snapshot as one JSON object\n"
            "  --prometheus-sd FILE   write the live registrations of --discover as a\n"
            "                         Prometheus file_sd target file (when it changes)\n"
            "  --headless             no terminal: keep FILE current and export the Kafka\n"
            "                         lag (transfuse_kafka_group_lag) until stopped\n"
            "  --metrics-port N       serve this process's metrics (the lag) on N\n"
            "  --metrics-addr A       address for --metrics-port (default 127.0.0.1)\n"
            "  --register DIR         register that endpoint in DIR\n"
            "  -h, --help             this help\n");
}

typedef struct TopState {
    TopCollector *c;
    double interval_s;
    const TfStopFlag *stop;
    atomic_int quit;
    const char *sd_path;
} TopState;

static int top_should_stop(TopState *st)
{
    return atomic_load(&st->quit) || tf_stop_requested(st->stop);
}

/* Sleeps until `until` (monotonic), waking every 100 ms to check for a stop. */
static void top_sleep_until(TopState *st, double until)
{
    while (!top_should_stop(st)) {
        double left = until - tf_now();
        if (left <= 0)
            return;
        struct timespec ts = {0, (long)((left < 0.1 ? left : 0.1) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

static void top_write_sd(TopState *st)
{
    if (!st->sd_path)
        return;
    TfError err = {{0}};
    if (top_collector_write_sd(st->c, st->sd_path, &err))
        tf_log(TF_LOG_WARN, TOP_TAG, "%s", err.msg);
}

static void *top_scrape_thread(void *arg)
{
    TopState *st = arg;
    while (!top_should_stop(st)) {
        double next = tf_now() + st->interval_s;
        top_collector_scrape(st->c);
        top_write_sd(st);
        top_sleep_until(st, next);
    }
    return NULL;
}

static void *top_kafka_thread(void *arg)
{
    TopState *st = arg;
    while (!top_should_stop(st)) {
        double next = tf_now() + (st->interval_s > 1 ? st->interval_s : 1);
        top_collector_kafka(st->c);
        top_sleep_until(st, next);
    }
    return NULL;
}

/* Seconds in [min, max] from text. */
static int top_parse_seconds(const char *flag, const char *text, double min, double max, double *out, TfError *err)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || errno || !(v >= min && v <= max))
        return tf_fail(err, "%s: expected seconds in [%g, %g], got '%s'", flag, min, max, text);
    *out = v;
    return 0;
}

/* Appends the comma-separated items of text to list. */
static int top_list_add(char ***list, size_t *n, const char *text, TfError *err)
{
    const char *p = text;
    while (*p) {
        size_t len = strcspn(p, ",");
        while (len && (p[0] == ' ' || p[0] == '\t'))
            p++, len--;
        size_t l = len;
        while (l && (p[l - 1] == ' ' || p[l - 1] == '\t' || p[l - 1] == '\r'))
            l--;
        if (l) {
            if (*n >= TOP_MAX_LIST)
                return tf_fail(err, "at most %d targets", TOP_MAX_LIST);
            char **nl = realloc(*list, (*n + 1) * sizeof *nl);
            if (!nl)
                return tf_fail(err, "out of memory");
            *list = nl;
            if (!(nl[*n] = strndup(p, l)))
                return tf_fail(err, "out of memory");
            (*n)++;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

static int top_targets_file(char ***list, size_t *n, const char *path, TfError *err)
{
    size_t len;
    char *text = tf_read_file(path, 1u << 20, &len, err);
    if (!text)
        return tf_fail_context(err, "--targets-file");
    int rc = 0;
    for (char *line = text, *next; line && *line && !rc; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        rc = top_list_add(list, n, line, err);
    }
    free(text);
    return rc;
}

static void top_terminal_size(int *rows, int *cols)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
        *rows = ws.ws_row;
        *cols = ws.ws_col;
    } else {
        *rows = 24;
        *cols = 80;
    }
}

static int top_once(TopState *st, int json, double interval)
{
    top_collector_scrape(st->c);
    top_collector_kafka(st->c);
    top_sleep_until(st, tf_now() + interval);
    if (tf_stop_requested(st->stop))
        return TF_EXIT_STOPPED;
    top_collector_scrape(st->c);
    top_collector_kafka(st->c);
    top_write_sd(st);
    json_t *snap = top_collector_snapshot(st->c);
    if (!snap) {
        fprintf(stderr, "transfuse top: out of memory\n");
        return TF_EXIT_FAIL;
    }
    int failing = (int)json_integer_value(json_object_get(json_object_get(snap, "totals"), "targets_failing"));
    if (json) {
        char *text = json_dumps(snap, JSON_COMPACT);
        if (text)
            printf("%s\n", text);
        free(text);
    } else {
        const char *env = getenv("COLUMNS");
        int cols = env && atoi(env) > 20 ? atoi(env) : 160;
        char *buf = malloc(TOP_FRAME_CAP);
        if (buf) {
            size_t n = top_render(snap, 0, cols, 0, 0, buf, TOP_FRAME_CAP);
            fwrite(buf, 1, n, stdout);
        }
        free(buf);
    }
    json_decref(snap);
    fflush(stdout);
    return failing ? TF_EXIT_CHECK : TF_EXIT_OK;
}

static int top_headless(TopState *st)
{
    pthread_t kafka_t;
    int kafka_ok = pthread_create(&kafka_t, NULL, top_kafka_thread, st) == 0;
    top_scrape_thread(st); /* until stopped */
    atomic_store(&st->quit, 1);
    if (kafka_ok)
        pthread_join(kafka_t, NULL);
    return TF_EXIT_STOPPED;
}

static int top_live(TopState *st)
{
    struct termios saved, raw;
    int have_tty_in = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    int restore = have_tty_in;
    if (have_tty_in) {
        raw = saved;
        raw.c_lflag &= (tcflag_t) ~(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    }
    static const char enter[] = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J";
    static const char leave[] = "\x1b[0m\x1b[?25h\x1b[?1049l";
    TfError err = {{0}};
    tf_write_all(STDOUT_FILENO, enter, sizeof enter - 1, &err);

    pthread_t scrape_t, kafka_t;
    int scrape_ok = pthread_create(&scrape_t, NULL, top_scrape_thread, st) == 0;
    int kafka_ok = pthread_create(&kafka_t, NULL, top_kafka_thread, st) == 0;
    char *frame = malloc(TOP_FRAME_CAP);
    json_t *shown = NULL;
    int sort = 0, paused = 0, dirty = 1, last_rows = 0, last_cols = 0;
    json_int_t last_round = -1;
    double last_draw = 0;
    while (frame && scrape_ok && !top_should_stop(st)) {
        struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
        int pr = have_tty_in ? poll(&pfd, 1, 100) : (nanosleep(&(struct timespec){0, 100000000L}, NULL), 0);
        if (pr > 0 && (pfd.revents & POLLIN)) {
            char keys[64];
            ssize_t got = read(STDIN_FILENO, keys, sizeof keys);
            for (ssize_t i = 0; i < got; i++) {
                char k = keys[i];
                if (k == 'q' || k == 'Q' || k == 3)
                    atomic_store(&st->quit, 1);
                else if (k == 's' || k == 'S')
                    sort = (sort + 1) % TOP_SORTS, dirty = 1;
                else if (k == 'p' || k == 'P')
                    paused = !paused, dirty = 1;
            }
            if (got == 0 && pfd.revents & POLLHUP)
                have_tty_in = 0;
        } else if (pr > 0 && (pfd.revents & (POLLHUP | POLLERR))) {
            have_tty_in = 0;
        }
        if (top_should_stop(st))
            break;
        int rows, cols;
        top_terminal_size(&rows, &cols);
        if (rows != last_rows || cols != last_cols)
            dirty = 1;
        if (!paused) {
            json_t *snap = top_collector_snapshot(st->c);
            json_int_t round = json_integer_value(json_object_get(snap, "rounds"));
            if (snap && (round != last_round || !shown || tf_now() - last_draw >= 1.0)) {
                json_decref(shown);
                shown = snap;
                last_round = round;
                dirty = 1;
            } else {
                json_decref(snap);
            }
        }
        if (dirty && shown) {
            size_t n = top_render(shown, rows, cols, sort, paused, frame, TOP_FRAME_CAP);
            tf_write_all(STDOUT_FILENO, frame, n, &err);
            last_rows = rows;
            last_cols = cols;
            last_draw = tf_now();
            dirty = 0;
        }
    }
    int stopped = tf_stop_requested(st->stop);
    atomic_store(&st->quit, 1);
    if (scrape_ok)
        pthread_join(scrape_t, NULL);
    if (kafka_ok)
        pthread_join(kafka_t, NULL);
    json_decref(shown);
    free(frame);
    tf_write_all(STDOUT_FILENO, leave, sizeof leave - 1, &err);
    if (restore)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    if (!scrape_ok) {
        fprintf(stderr, "transfuse top: cannot start a thread\n");
        return TF_EXIT_FAIL;
    }
    return stopped ? TF_EXIT_STOPPED : TF_EXIT_OK;
}

int top_main(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'},
                                         {"targets", required_argument, NULL, 't'},
                                         {"targets-file", required_argument, NULL, 'T'},
                                         {"discover", required_argument, NULL, 'd'},
                                         {"stale-after", required_argument, NULL, 'A'},
                                         {"kafka", required_argument, NULL, 'k'},
                                         {"group", required_argument, NULL, 'g'},
                                         {"interval", required_argument, NULL, 'i'},
                                         {"timeout", required_argument, NULL, 'o'},
                                         {"max-bytes", required_argument, NULL, 'B'},
                                         {"history", required_argument, NULL, 'H'},
                                         {"once", no_argument, NULL, '1'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"prometheus-sd", required_argument, NULL, 'S'},
                                         {"headless", no_argument, NULL, 'L'},
                                         {"metrics-port", required_argument, NULL, 'm'},
                                         {"metrics-addr", required_argument, NULL, 'a'},
                                         {"register", required_argument, NULL, 'R'},
                                         {NULL, 0, NULL, 0}};
    TopConfig cfg = {.stale_after_s = 60, .timeout_ms = 2000, .max_bytes = PROM_DEFAULT_MAX_BYTES, .history = 600};
    double interval = 1, timeout = 2;
    int once = 0, json = 0, headless = 0;
    const char *sd_path = NULL, *metrics_addr = NULL, *register_dir = NULL;
    long metrics_port = 0;
    TfMetricsServer *metrics = NULL;
    TfError err = {{0}};
    int rc = TF_EXIT_USAGE;
    TopCollector *c = NULL;
    TfOpts o = {.prog = "transfuse top", .argc = argc, .argv = argv, .shortopts = "h", .longopts = opts};
    int opt;
    while ((opt = tf_opts_next(&o)) != -1) {
        const char *v = o.arg;
        long l;
        uint64_t u;
        switch (opt) {
        case 'h': top_usage(stdout); rc = TF_EXIT_OK; goto done;
        case 't':
            if (top_list_add(&cfg.targets, &cfg.n_targets, v, &err))
                goto usage;
            break;
        case 'T':
            if (top_targets_file(&cfg.targets, &cfg.n_targets, v, &err))
                goto usage;
            break;
        case 'd': cfg.discover_dir = v; break;
        case 'A':
            if (top_parse_seconds("--stale-after", v, 0, 1e9, &cfg.stale_after_s, &err))
                goto usage;
            break;
        case 'k':
            if (top_list_add(&cfg.kafka, &cfg.n_kafka, v, &err))
                goto usage;
            break;
        case 'g':
            if (top_list_add(&cfg.groups, &cfg.n_groups, v, &err))
                goto usage;
            break;
        case 'i':
            if (top_parse_seconds("--interval", v, 0.1, 3600, &interval, &err))
                goto usage;
            break;
        case 'o':
            if (top_parse_seconds("--timeout", v, 0.1, 600, &timeout, &err))
                goto usage;
            break;
        case 'B':
            if (tf_parse_size("--max-bytes", v, &u, &err))
                goto usage;
            if (u < 1024 || u > (1u << 30)) {
                tf_fail(&err, "--max-bytes: between 1K and 1Gi");
                goto usage;
            }
            cfg.max_bytes = (size_t)u;
            break;
        case 'H':
            if (tf_parse_long("--history", v, 2, 100000, &l, &err))
                goto usage;
            cfg.history = (int)l;
            break;
        case '1': once = 1; break;
        case 'j': json = 1; break;
        case 'S': sd_path = v; break;
        case 'L': headless = 1; break;
        case 'm':
            if (tf_parse_long("--metrics-port", v, 0, 65535, &metrics_port, &err))
                goto usage;
            break;
        case 'a': metrics_addr = v; break;
        case 'R': register_dir = v; break;
        default: goto done;
        }
    }
    if (o.first_operand < argc) {
        tf_fail(&err, "unexpected argument '%s'", argv[o.first_operand]);
        goto usage;
    }
    if (!cfg.n_targets && !cfg.discover_dir && !cfg.n_kafka) {
        tf_fail(&err, "nothing to watch: give --targets, --targets-file, --discover or --kafka");
        goto usage;
    }
    if (json && !once) {
        tf_fail(&err, "--json needs --once");
        goto usage;
    }
    if (sd_path && !cfg.discover_dir) {
        tf_fail(&err, "--prometheus-sd needs --discover DIR");
        goto usage;
    }
    if (headless && once) {
        tf_fail(&err, "--headless runs until stopped: no --once");
        goto usage;
    }
    if (headless && !sd_path && !metrics_port && !register_dir) {
        tf_fail(&err, "--headless needs --prometheus-sd FILE or --metrics-port N (or --register DIR)");
        goto usage;
    }
    if (!once && !headless && !isatty(STDOUT_FILENO)) {
        tf_fail(&err, "the live view needs a terminal on stdout: use --once (--json) for scripts");
        goto usage;
    }
    cfg.timeout_ms = (int)(timeout * 1000);
    c = top_collector_new(&cfg, &err);
    if (!c) {
        fprintf(stderr, "transfuse top: %s\n", err.msg);
        rc = strstr(err.msg, "kafka") ? TF_EXIT_USAGE : TF_EXIT_FAIL;
        goto done;
    }
    if (metrics_port || register_dir) {
        metrics = tf_metrics_cli_start_registered(TOP_TAG, metrics_addr, metrics_port, register_dir, &err);
        if (!metrics) {
            fprintf(stderr, "transfuse top: %s\n", err.msg);
            rc = TF_EXIT_FAIL;
            goto done;
        }
    }
    TopState st = {.c = c, .interval_s = interval, .stop = tf_cli_stop_flag(), .sd_path = sd_path};
    atomic_init(&st.quit, 0);
    if (once)
        rc = top_once(&st, json, interval);
    else if (headless)
        rc = top_headless(&st);
    else
        rc = top_live(&st);
    goto done;
usage:
    fprintf(stderr, "transfuse top: %s (see transfuse top --help)\n", err.msg);
    rc = TF_EXIT_USAGE;
done:
    top_collector_free(c);
    tf_metrics_server_free(metrics);
    for (size_t i = 0; i < cfg.n_targets; i++)
        free(cfg.targets[i]);
    for (size_t i = 0; i < cfg.n_kafka; i++)
        free(cfg.kafka[i]);
    for (size_t i = 0; i < cfg.n_groups; i++)
        free(cfg.groups[i]);
    free(cfg.targets);
    free(cfg.kafka);
    free(cfg.groups);
    return rc;
}
