/* tokenizer_cli.c: `transfuse tokenize`, a line filter around the
 * tokenizer: text lines in, one JSON array of ids out per line (or the
 * reverse with --decode). A line that cannot be handled gives an empty
 * output line (so output lines stay aligned with input lines), a warning,
 * and exit status 1 at the end. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tokenizer_internal.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: transfuse tokenize --tokenizer PATH [--bos] [--decode] [--json] [--specials-as-text]\n"
            "       transfuse tokenize --tokenizer PATH --identity\n\n"
            "Reads lines on stdin and writes one line per input line on stdout:\n"
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
            "  --identity          print the tokenizer's identity hash and vocabulary size\n"
            "  -h, --help          this help\n\n"
            "The line ending (\\n) is not part of the text; a \\r before it is. Invalid\n"
            "UTF-8 is replaced by U+FFFD (per maximal invalid subpart) before encoding.\n"
            "A summary (lines, bytes, MB/s) goes to stderr at the end.\n");
}

/* Writes ids as a JSON array with a newline. */
static void write_ids(FILE *out, const int32_t *ids, size_t n)
{
    char buf[16];
    putc_unlocked('[', out);
    for (size_t i = 0; i < n; i++) {
        if (i)
            putc_unlocked(',', out);
        uint32_t v = (uint32_t)ids[i];
        int k = 0;
        do {
            buf[k++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        while (k)
            putc_unlocked(buf[--k], out);
    }
    fputs_unlocked("]\n", out);
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

int tokenize_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"tokenizer", required_argument, 0, 't'}, {"bos", no_argument, 0, 'b'},
        {"decode", no_argument, 0, 'd'},          {"json", no_argument, 0, 'j'},
        {"specials-as-text", no_argument, 0, 's'}, {"identity", no_argument, 0, 'i'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0},
    };
    const char *path = NULL;
    int bos = 0, decode = 0, json = 0, specials_text = 0, identity = 0;
    if (tf_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 't': path = optarg; break;
        case 'b': bos = 1; break;
        case 'd': decode = 1; break;
        case 'j': json = 1; break;
        case 's': specials_text = 1; break;
        case 'i': identity = 1; break;
        default:
            fprintf(stderr, "transfuse tokenize: unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "transfuse tokenize: unexpected argument '%s' (input comes on stdin)\n", argv[optind]);
        return 2;
    }
    if (!path) {
        fprintf(stderr, "transfuse tokenize: --tokenizer PATH is required (see --help)\n");
        return 2;
    }
    if (decode && (bos || specials_text)) {
        fprintf(stderr, "transfuse tokenize: --bos and --specials-as-text apply to encoding, not --decode\n");
        return 2;
    }

    TfError err;
    double t0 = tf_now();
    Tokenizer *tok = tokenizer_load(path, &err);
    if (!tok) {
        fprintf(stderr, "transfuse tokenize: %s\n", err.msg);
        return 1;
    }
    tf_log(TF_LOG_DEBUG, "tokenize", "loaded %s in %.2f s: %zu ids, identity %s", path, tf_now() - t0,
           tokenizer_vocab_size(tok), tokenizer_identity(tok));
    if (identity) {
        printf("%s %zu\n", tokenizer_identity(tok), tokenizer_vocab_size(tok));
        tokenizer_free(tok);
        return 0;
    }
    if (bos && tokenizer_bos_id(tok) < 0) {
        fprintf(stderr, "transfuse tokenize: --bos: %s defines no BOS token\n", path);
        tokenizer_free(tok);
        return 2;
    }
    TokenizerSession *sess = tokenizer_session_new(tok, &err);
    if (!sess) {
        fprintf(stderr, "transfuse tokenize: %s\n", err.msg);
        tokenizer_free(tok);
        return 1;
    }

    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    struct stat st;
    uint64_t total = fstat(0, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
    TfProgress prog;
    tf_progress_init(&prog, decode ? "decode" : "tokenize", total, "B");
    TfRateLimit warn = {.burst = 10, .period_s = 10};

    char *line = NULL;
    size_t line_cap = 0, lines = 0, failed = 0, tokens = 0;
    uint64_t bytes = 0, text_bytes = 0; /* input bytes; text bytes encoded or decoded */
    double work = 0;
    TokenIds ids = {0};
    ssize_t got;
    while ((got = getline(&line, &line_cap, stdin)) >= 0) {
        size_t len = (size_t)got;
        bytes += len;
        lines++;
        if (len && line[len - 1] == '\n')
            line[--len] = 0;
        const char *text = line;
        size_t text_len = len;
        json_t *js = NULL;
        int ok = 1;
        if (json && !decode) {
            json_error_t je;
            js = json_loadb(line, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
            if (!js || !json_is_string(js)) {
                tf_log_limited(&warn, TF_LOG_WARN, "tokenize", "line %zu: not a JSON string%s%s", lines,
                               js ? "" : ": ", js ? "" : je.text);
                ok = 0;
            } else {
                text = json_string_value(js);
                text_len = json_string_length(js);
            }
        }
        double w0 = tf_now();
        if (ok && !decode) {
            ids.len = 0;
            if (tokenizer_encode(sess, text, text_len,
                                 (bos ? TOKENIZER_ADD_BOS : 0) | (specials_text ? TOKENIZER_SPECIALS_AS_TEXT : 0),
                                 &ids, &err)) {
                tf_log_limited(&warn, TF_LOG_WARN, "tokenize", "line %zu: %s", lines, err.msg);
                ok = 0;
            } else {
                work += tf_now() - w0;
                tokens += ids.len;
                text_bytes += text_len;
                write_ids(stdout, ids.ids, ids.len);
            }
        } else if (ok) {
            char *out = NULL;
            size_t out_len = 0;
            if (parse_ids(line, len, &ids, &err) ||
                tokenizer_decode(tok, ids.ids, ids.len, 0, &out, &out_len, &err)) {
                tf_log_limited(&warn, TF_LOG_WARN, "tokenize", "line %zu: %s", lines, err.msg);
                ok = 0;
            } else {
                work += tf_now() - w0;
                tokens += ids.len;
                text_bytes += out_len;
                if (json) {
                    json_t *s = json_stringn_nocheck(out, out_len);
                    char *dump = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
                    if (dump)
                        fputs(dump, stdout);
                    free(dump);
                    json_decref(s);
                } else {
                    fwrite(out, 1, out_len, stdout);
                }
                putc_unlocked('\n', stdout);
            }
            free(out);
        }
        json_decref(js);
        if (!ok) {
            failed++;
            putc_unlocked('\n', stdout);
        }
        tf_progress_update(&prog, bytes);
    }
    tf_progress_finish(&prog, bytes);
    int rc = 0;
    if (ferror(stdin)) {
        fprintf(stderr, "transfuse tokenize: reading stdin failed\n");
        rc = 1;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "transfuse tokenize: writing stdout failed\n");
        rc = 1;
    }
    tf_log(TF_LOG_INFO, "tokenize",
           "%zu lines (%zu failed), %llu bytes of text, %zu tokens; %.3f s in the %s: %.1f MB/s of text", lines,
           failed, (unsigned long long)text_bytes, tokens, work, decode ? "decoder" : "encoder",
           work > 0 ? (double)text_bytes / work / 1e6 : 0.0);
    if (failed)
        rc = 1;
    free(line);
    token_ids_deinit(&ids);
    tokenizer_session_free(sess);
    tokenizer_free(tok);
    return rc;
}
