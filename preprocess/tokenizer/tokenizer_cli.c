/* tokenizer_cli.c: `transfuse tokenize`, a line filter around the
 * tokenizer: text lines in, one JSON array of ids out per line (or the
 * reverse with --decode). Lines are read in batches; with --threads each
 * thread takes a contiguous part of a batch through its own session and the
 * parts are written in input order. A line that cannot be handled gives an
 * empty output line (so output lines stay aligned with input lines), a
 * warning, and exit status 1 at the end. */
#include <getopt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tokenizer_internal.h"

#define BATCH_LINES 8192
#define BATCH_BYTES (8u << 20)
#define MAX_THREADS 256

static void usage(FILE *out)
{
    fprintf(out,
            "usage: transfuse tokenize --tokenizer PATH [--bos] [--decode] [--json] [--specials-as-text]\n"
            "                          [--regex js|rust] [--threads N]\n"
            "       transfuse tokenize --tokenizer PATH --identity\n\n"
            "Reads lines on stdin and writes one line per input line on stdout, in order:\n"
            "  encode (default): a JSON array of token ids, e.g. [9906,1917,0]\n"
            "  --decode:         input lines are JSON arrays of ids; output is text\n\n"
            "options:\n"
            "  --tokenizer PATH    Hugging Face tokenizer.json, or Meta's tokenizer.model\n"
            "                      (tiktoken format; Llama-3 split pattern and special tokens)\n"
            "  --bos               add the post-processor's special tokens (Llama-3:\n"
            "                      <|begin_of_text|> in front)\n"
            "  --decode            ids -> text instead of text -> ids\n"
            "  --json              lines are JSON strings (\"a\\nb\"), so text may hold\n"
            "                      newlines; with --decode, write JSON strings\n"
            "  --specials-as-text  encode \"<|eot_id|>\" and other special-token text as\n"
            "                      ordinary text (default: the special id, as Hugging Face does)\n"
            "  --regex js|rust     meaning of the split pattern's \\s and (?i): js (default) as\n"
            "                      transformers.js runs it; rust as Hugging Face tokenizers\n"
            "                      (Python transformers) and tiktoken do. They differ only on\n"
            "                      U+FEFF, U+0085 and the case folding of 's/'S (e.g. 'ſ)\n"
            "  --threads N         encode on N threads (default 1; 0 = one per CPU)\n"
            "  --identity          print the tokenizer's identity hash and vocabulary size\n"
            "  -h, --help          this help\n\n"
            "The line ending (\\n) is not part of the text; a \\r before it is. Invalid\n"
            "UTF-8 is replaced by U+FFFD (per maximal invalid subpart) before encoding.\n"
            "A line that fails gives an empty output line and a warning; the exit status\n"
            "is then 1. A summary (lines, bytes, MB/s) goes to stderr at the end.\n"
            "Exit status: 0 every line handled, 1 some lines failed, 2 bad command line,\n"
            "3 the tokenizer cannot be loaded or stdin/stdout fail.\n");
}

typedef struct Buf {
    char *p;
    size_t n, cap;
} Buf;

static int buf_reserve(Buf *b, size_t extra)
{
    if (b->n + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->n + extra)
        cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np)
        return -1;
    b->p = np;
    b->cap = cap;
    return 0;
}

static int buf_add(Buf *b, const void *data, size_t n)
{
    if (buf_reserve(b, n))
        return -1;
    memcpy(b->p + b->n, data, n);
    b->n += n;
    return 0;
}

/* Appends ids as a JSON array and a newline. */
static int buf_add_ids(Buf *b, const int32_t *ids, size_t n)
{
    if (n > (SIZE_MAX - 3) / 12 || buf_reserve(b, n * 12 + 3))
        return -1;
    char *o = b->p + b->n;
    *o++ = '[';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *o++ = ',';
        char tmp[12];
        int k = 0;
        uint32_t v = (uint32_t)ids[i];
        do {
            tmp[k++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        while (k)
            *o++ = tmp[--k];
    }
    *o++ = ']';
    *o++ = '\n';
    b->n = (size_t)(o - b->p);
    return 0;
}

/* Parses "[1, 2, 3]" into ids. Returns 0 or -1 with err filled. */
static int parse_ids(const char *line, size_t len, TokenIds *ids, TfError *err)
{
    size_t i = 0;
    ids->len = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    if (i >= len || line[i] != '[')
        return tf_fail(err, "expected a JSON array of ids");
    i++;
    int need_value = 0;
    for (;;) {
        while (i < len && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (i >= len)
            return tf_fail(err, "unterminated array");
        if (line[i] == ']' && !need_value) {
            i++;
            break;
        }
        if (line[i] < '0' || line[i] > '9')
            return tf_fail(err, "expected a non-negative integer at column %zu", i + 1);
        long long v = 0;
        while (i < len && line[i] >= '0' && line[i] <= '9') {
            v = v * 10 + (line[i++] - '0');
            if (v > INT32_MAX)
                return tf_fail(err, "id too large at column %zu", i);
        }
        if (ids->len == ids->cap) {
            size_t cap = ids->cap ? ids->cap * 2 : 64;
            int32_t *np = realloc(ids->ids, cap * sizeof *np);
            if (!np)
                return tf_fail(err, "out of memory");
            ids->ids = np;
            ids->cap = cap;
        }
        ids->ids[ids->len++] = (int32_t)v;
        while (i < len && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (i < len && line[i] == ',') {
            i++;
            need_value = 1;
        } else {
            need_value = 0;
        }
    }
    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
        i++;
    if (i != len)
        return tf_fail(err, "trailing characters after the array");
    return 0;
}

/* Appends the UTF-8 form of code point cp. */
static int buf_add_utf8(Buf *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | cp >> 12);
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | cp >> 18);
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return buf_add(b, u, n);
}

static int hex4(const char *p, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        *v = *v << 4 | (uint32_t)d;
    }
    return 0;
}

/* Decodes a line holding one JSON string into out (replacing its
 * contents). Bytes pass through as they are (the tokenizer replaces invalid
 * UTF-8); a lone surrogate escape becomes U+FFFD, as JavaScript's
 * TextEncoder makes it. Faster than a general JSON parser on this one shape.
 * Returns 0 or -1 with err filled. */
static int json_string_decode(const char *line, size_t len, Buf *out, TfError *err)
{
    size_t i = 0;
    out->n = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
        i++;
    if (i >= len || line[i] != '"')
        return tf_fail(err, "expected a JSON string");
    i++;
    for (;;) {
        size_t start = i;
        while (i < len && line[i] != '"' && line[i] != '\\' && (unsigned char)line[i] >= 0x20)
            i++;
        if (i > start && buf_add(out, line + start, i - start))
            return tf_fail(err, "out of memory");
        if (i >= len)
            return tf_fail(err, "unterminated JSON string");
        char c = line[i];
        if (c == '"') {
            i++;
            break;
        }
        if ((unsigned char)c < 0x20)
            return tf_fail(err, "control character 0x%02x in a JSON string (must be escaped)", (unsigned)c);
        if (i + 1 >= len)
            return tf_fail(err, "unterminated JSON string");
        char e = line[i + 1];
        i += 2;
        int rc = 0;
        switch (e) {
        case '"': rc = buf_add(out, "\"", 1); break;
        case '\\': rc = buf_add(out, "\\", 1); break;
        case '/': rc = buf_add(out, "/", 1); break;
        case 'b': rc = buf_add(out, "\b", 1); break;
        case 'f': rc = buf_add(out, "\f", 1); break;
        case 'n': rc = buf_add(out, "\n", 1); break;
        case 'r': rc = buf_add(out, "\r", 1); break;
        case 't': rc = buf_add(out, "\t", 1); break;
        case 'u': {
            uint32_t cp, lo;
            if (i + 4 > len || hex4(line + i, &cp))
                return tf_fail(err, "bad \\u escape in a JSON string");
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 <= len && line[i] == '\\' && line[i + 1] == 'u' &&
                !hex4(line + i + 2, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            } else if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp = 0xFFFD;
            }
            rc = buf_add_utf8(out, cp);
            break;
        }
        default:
            return tf_fail(err, "bad escape \\%c in a JSON string", e);
        }
        if (rc)
            return tf_fail(err, "out of memory");
    }
    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
        i++;
    if (i != len)
        return tf_fail(err, "trailing characters after the JSON string");
    return 0;
}

/* Appends text as a JSON string (UTF-8 kept, quotes, backslashes and
 * control characters escaped). */
static int buf_add_json_string(Buf *b, const char *text, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (len > (SIZE_MAX - 2) / 6 || buf_reserve(b, len * 6 + 2))
        return -1;
    char *o = b->p + b->n;
    *o++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20) {
            *o++ = '\\';
            switch (c) {
            case '\n': *o++ = 'n'; break;
            case '\r': *o++ = 'r'; break;
            case '\t': *o++ = 't'; break;
            case '\b': *o++ = 'b'; break;
            case '\f': *o++ = 'f'; break;
            default:
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hex[c >> 4];
                *o++ = hex[c & 15];
            }
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    b->n = (size_t)(o - b->p);
    return 0;
}

typedef struct Options {
    int decode, json;
    unsigned flags;
} Options;

/* A batch of lines: their bytes one after another, with offsets. */
typedef struct Batch {
    Buf text;
    size_t off[BATCH_LINES + 1];
    size_t n;
    size_t first_line; /* 1-based number of the batch's first line */
} Batch;

/* One thread's share of a batch, and its running totals. */
typedef struct Worker {
    const Tokenizer *tok;
    TokenizerSession *sess;
    const Options *opt;
    const Batch *batch;
    size_t begin, end; /* lines of the batch */
    Buf out;
    Buf json; /* decoded JSON string */
    TokenIds ids;
    TfRateLimit warn;
    size_t failed, tokens;
    uint64_t text_bytes;
    double work;
    int oom;
} Worker;

static void warn_line(Worker *w, size_t line_no, const char *msg)
{
    tf_log_limited(&w->warn, TF_LOG_WARN, "tokenize", "line %zu: %s", line_no, msg);
    w->failed++;
}

/* Handles one line, appending its output line to w->out. */
static void process_line(Worker *w, const char *line, size_t len, size_t line_no)
{
    TfError err;
    const Options *o = w->opt;
    size_t before = w->out.n;
    if (!o->decode) {
        const char *text = line;
        size_t text_len = len;
        if (o->json) {
            if (json_string_decode(line, len, &w->json, &err)) {
                warn_line(w, line_no, err.msg);
                goto failed;
            }
            text = w->json.p ? w->json.p : "";
            text_len = w->json.n;
        }
        double t0 = tf_now();
        w->ids.len = 0;
        int rc = tokenizer_encode(w->sess, text, text_len, o->flags, &w->ids, &err);
        w->work += tf_now() - t0;
        if (rc) {
            warn_line(w, line_no, err.msg);
            goto failed;
        }
        w->tokens += w->ids.len;
        w->text_bytes += text_len;
        if (buf_add_ids(&w->out, w->ids.ids, w->ids.len))
            goto oom;
        return;
    }
    if (parse_ids(line, len, &w->ids, &err)) {
        warn_line(w, line_no, err.msg);
        goto failed;
    }
    char *text;
    size_t text_len;
    double t0 = tf_now();
    int rc = tokenizer_decode(w->tok, w->ids.ids, w->ids.len, 0, &text, &text_len, &err);
    w->work += tf_now() - t0;
    if (rc) {
        warn_line(w, line_no, err.msg);
        goto failed;
    }
    w->tokens += w->ids.len;
    w->text_bytes += text_len;
    if (o->json) {
        rc = buf_add_json_string(&w->out, text, text_len);
    } else {
        rc = buf_add(&w->out, text, text_len);
    }
    free(text);
    if (rc || buf_add(&w->out, "\n", 1))
        goto oom;
    return;
failed:
    w->out.n = before;
    if (buf_add(&w->out, "\n", 1))
        goto oom;
    return;
oom:
    w->oom = 1;
}

static void *worker_run(void *arg)
{
    Worker *w = arg;
    const Batch *b = w->batch;
    for (size_t i = w->begin; i < w->end && !w->oom; i++)
        process_line(w, b->text.p + b->off[i], b->off[i + 1] - b->off[i], b->first_line + i);
    return NULL;
}

/* Reads up to a batch of lines (without their \n). Returns the count; 0 at
 * the end of input; -1 when out of memory. */
static long batch_read(Batch *b, char **line, size_t *line_cap, uint64_t *bytes)
{
    b->first_line += b->n;
    b->n = 0;
    b->text.n = 0;
    b->off[0] = 0;
    while (b->n < BATCH_LINES && b->text.n < BATCH_BYTES) {
        ssize_t got = getline(line, line_cap, stdin);
        if (got < 0)
            break;
        size_t len = (size_t)got;
        *bytes += len;
        if (len && (*line)[len - 1] == '\n')
            len--;
        if (buf_add(&b->text, *line, len))
            return -1;
        b->off[++b->n] = b->text.n;
    }
    return (long)b->n;
}

int tokenize_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"tokenizer", required_argument, 0, 't'}, {"bos", no_argument, 0, 'b'},
        {"decode", no_argument, 0, 'd'},          {"json", no_argument, 0, 'j'},
        {"specials-as-text", no_argument, 0, 's'}, {"identity", no_argument, 0, 'i'},
        {"threads", required_argument, 0, 'n'},   {"regex", required_argument, 0, 'r'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *path = NULL;
    int bos = 0, specials_text = 0, identity = 0;
    long threads;
    TokenizerRegex regex = TOKENIZER_REGEX_JS;
    Options opt = {0};
    TfError err;
    if (tf_cli_wants_help(argc, argv)) {
        usage(stdout);
        return TF_EXIT_OK;
    }
    TfOpts op = {.prog = "transfuse tokenize", .argc = argc, .argv = argv, .shortopts = "h", .longopts = longopts};
    int c, nthreads = 1;
    while ((c = tf_opts_next(&op)) != -1) {
        switch (c) {
        case 't': path = op.arg; break;
        case 'b': bos = 1; break;
        case 'd': opt.decode = 1; break;
        case 'j': opt.json = 1; break;
        case 's': specials_text = 1; break;
        case 'i': identity = 1; break;
        case 'r':
            if (!strcmp(op.arg, "js")) {
                regex = TOKENIZER_REGEX_JS;
            } else if (!strcmp(op.arg, "rust")) {
                regex = TOKENIZER_REGEX_RUST;
            } else {
                fprintf(stderr, "transfuse tokenize: --regex must be js or rust, not '%s'\n", op.arg);
                return TF_EXIT_USAGE;
            }
            break;
        case 'n':
            if (tf_parse_threads("--threads", op.arg, MAX_THREADS, &nthreads, &err)) {
                fprintf(stderr, "transfuse tokenize: %s\n", err.msg);
                return TF_EXIT_USAGE;
            }
            break;
        default: return TF_EXIT_USAGE; /* tf_opts_next said why */
        }
    }
    threads = nthreads;
    if (op.first_operand < argc) {
        fprintf(stderr, "transfuse tokenize: unexpected argument '%s' (input comes on stdin)\n",
                argv[op.first_operand]);
        return TF_EXIT_USAGE;
    }
    if (!path) {
        fprintf(stderr, "transfuse tokenize: --tokenizer PATH is required (see --help)\n");
        return TF_EXIT_USAGE;
    }
    if (opt.decode && (bos || specials_text)) {
        fprintf(stderr, "transfuse tokenize: --bos and --specials-as-text apply to encoding, not --decode\n");
        return TF_EXIT_USAGE;
    }
    opt.flags = (bos ? TOKENIZER_ADD_BOS : 0) | (specials_text ? TOKENIZER_SPECIALS_AS_TEXT : 0);

    double t0 = tf_now();
    Tokenizer *tok = tokenizer_load_regex(path, regex, &err);
    if (!tok) {
        fprintf(stderr, "transfuse tokenize: %s\n", err.msg);
        return TF_EXIT_FAIL;
    }
    tf_log(TF_LOG_DEBUG, "tokenize", "loaded %s in %.2f s: %zu ids, identity %s", path, tf_now() - t0,
           tokenizer_vocab_size(tok), tokenizer_identity(tok));
    if (identity) {
        printf("%s %zu\n", tokenizer_identity(tok), tokenizer_vocab_size(tok));
        tokenizer_free(tok);
        return TF_EXIT_OK;
    }
    if (bos && tokenizer_bos_id(tok) < 0) {
        fprintf(stderr, "transfuse tokenize: --bos: %s defines no BOS token\n", path);
        tokenizer_free(tok);
        return TF_EXIT_USAGE;
    }

    int rc = TF_EXIT_FAIL;
    char *line = NULL;
    size_t line_cap = 0;
    uint64_t bytes = 0;
    Batch *batch = calloc(1, sizeof *batch);
    Worker *workers = calloc((size_t)threads, sizeof *workers);
    if (!batch || !workers) {
        fprintf(stderr, "transfuse tokenize: out of memory\n");
        goto done;
    }
    batch->first_line = 1;
    for (long t = 0; t < threads; t++) {
        Worker *w = &workers[t];
        w->tok = tok;
        w->opt = &opt;
        w->batch = batch;
        w->warn = (TfRateLimit){.burst = 10, .period_s = 10};
        if (!(w->sess = tokenizer_session_new(tok, &err))) {
            fprintf(stderr, "transfuse tokenize: %s\n", err.msg);
            goto done;
        }
    }
    struct stat st;
    uint64_t total = fstat(0, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
    TfProgress prog;
    tf_progress_init(&prog, opt.decode ? "decode" : "tokenize", total, "B");
    size_t lines = 0;
    int io_error = 0;
    double started_at = tf_now();
    long n;
    while ((n = batch_read(batch, &line, &line_cap, &bytes)) > 0) {
        lines += (size_t)n;
        /* contiguous shares; a few threads on a small batch is fine */
        long active = threads < n ? threads : n;
        for (long t = 0; t < active; t++) {
            workers[t].begin = (size_t)(n * t / active);
            workers[t].end = (size_t)(n * (t + 1) / active);
            workers[t].out.n = 0;
        }
        pthread_t tids[MAX_THREADS];
        long started = 1;
        for (long t = 1; t < active; t++, started++)
            if (pthread_create(&tids[t], NULL, worker_run, &workers[t]))
                break;
        worker_run(&workers[0]);
        for (long t = started; t < active; t++) /* threads that did not start: do their share here */
            worker_run(&workers[t]);
        for (long t = 1; t < started; t++)
            pthread_join(tids[t], NULL);
        for (long t = 0; t < active; t++) {
            if (workers[t].oom) {
                fprintf(stderr, "transfuse tokenize: out of memory\n");
                goto done;
            }
            if (workers[t].out.n && fwrite(workers[t].out.p, 1, workers[t].out.n, stdout) != workers[t].out.n)
                io_error = 1;
        }
        if (io_error)
            break;
        tf_progress_update(&prog, bytes);
    }
    tf_progress_finish(&prog, bytes);
    if (n < 0) {
        fprintf(stderr, "transfuse tokenize: out of memory\n");
        goto done;
    }
    rc = TF_EXIT_OK;
    if (ferror(stdin)) {
        fprintf(stderr, "transfuse tokenize: reading stdin failed\n");
        rc = TF_EXIT_FAIL;
    }
    if (io_error || fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "transfuse tokenize: writing stdout failed\n");
        rc = TF_EXIT_FAIL;
    }
    size_t failed = 0, tokens = 0;
    uint64_t text_bytes = 0;
    double work = 0;
    for (long t = 0; t < threads; t++) {
        failed += workers[t].failed;
        tokens += workers[t].tokens;
        text_bytes += workers[t].text_bytes;
        work += workers[t].work;
    }
    /* MB/s per thread: text bytes over the time spent inside the tokenizer */
    tf_log(TF_LOG_INFO, "tokenize",
           "%zu lines (%zu failed), %llu bytes of text, %zu tokens in %.2f s; %.3f s in the %s: %.1f MB/s of "
           "text%s",
           lines, failed, (unsigned long long)text_bytes, tokens, tf_now() - started_at, work,
           opt.decode ? "decoder" : "encoder", work > 0 ? (double)text_bytes / work / 1e6 : 0.0,
           threads > 1 ? " per thread" : "");
    if (failed && rc == TF_EXIT_OK)
        rc = TF_EXIT_CHECK; /* done, but some lines could not be handled */
done:
    if (workers)
        for (long t = 0; t < threads; t++) {
            tokenizer_session_free(workers[t].sess);
            free(workers[t].out.p);
            free(workers[t].json.p);
            token_ids_deinit(&workers[t].ids);
        }
    free(workers);
    if (batch)
        free(batch->text.p);
    free(batch);
    free(line);
    tokenizer_free(tok);
    return rc;
}
