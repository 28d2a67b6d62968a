/* test_tokenizer.c: unit tests of the tokenizer on a small tokenizer.json
 * written here (the real Llama-3 file is checked against the reference by
 * check_reference.py). Covers merge order, the linear and heap BPE paths
 * against a brute-force BPE, added tokens, BOS, invalid UTF-8, decoding,
 * the identity hash, the tiktoken loader, pattern translation and the
 * files that must be refused. */
#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "tiny_tokenizer.h"
#include "tokenizer_internal.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif
#ifndef UNDER_SANITIZER
#define UNDER_SANITIZER 0
#endif

static char dir[256];

static char *path_in(const char *name)
{
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    fputs(text, f);
    fclose(f);
}

static int32_t id_of(const Tokenizer *tok, const char *raw)
{
    return tok_vocab_find(tok, (const uint8_t *)raw, strlen(raw));
}

static TokenIds enc(TokenizerSession *s, const char *text, size_t len, unsigned flags)
{
    TokenIds ids = {0};
    TfError err;
    if (tokenizer_encode(s, text, len, flags, &ids, &err))
        fprintf(stderr, "encode failed: %s\n", err.msg);
    return ids;
}

/* Plain BPE as in the papers: merge the lowest-rank pair, leftmost first. */
static size_t brute_bpe(const Tokenizer *tok, const uint8_t *p, size_t n, int32_t *ids)
{
    for (size_t i = 0; i < n; i++)
        ids[i] = tok->byte_id[p[i]];
    for (;;) {
        uint32_t best = UINT32_MAX;
        size_t bi = 0;
        int32_t res = -1, r;
        for (size_t i = 0; i + 1 < n; i++) {
            uint32_t rank = tok_merge_find(tok, ids[i], ids[i + 1], &r);
            if (rank < best) {
                best = rank;
                bi = i;
                res = r;
            }
        }
        if (best == UINT32_MAX)
            return n;
        ids[bi] = res;
        memmove(ids + bi + 1, ids + bi + 2, (n - bi - 2) * sizeof *ids);
        n--;
    }
}

static void test_bpe_paths(const Tokenizer *tok)
{
    static const char alphabet[] = "aabthe ingc\xc3\xa9\xe4\xb8\xad" "12'sdo\n";
    uint64_t state = 12345;
    int32_t *a = malloc(4096 * sizeof *a), *b = malloc(4096 * sizeof *b), *c = malloc(4096 * sizeof *c);
    uint8_t *text = malloc(4096);
    REQUIRE(a && b && c && text);
    int mismatches = 0;
    for (int iter = 0; iter < 3000; iter++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        size_t n = 1 + (state >> 33) % (iter < 2500 ? 96 : 3000);
        for (size_t i = 0; i < n; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            text[i] = (uint8_t)alphabet[(state >> 33) % (sizeof alphabet - 1)];
        }
        size_t nb = brute_bpe(tok, text, n, a);
        long nl = tok_bpe_piece(tok, text, n, 0, b);
        long nh = tok_bpe_piece(tok, text, n, 1, c);
        if (nl != (long)nb || nh != (long)nb || memcmp(a, b, nb * 4) || memcmp(a, c, nb * 4))
            mismatches++;
    }
    CHECKF(mismatches == 0, "%d random pieces where linear/heap BPE differ from brute force", mismatches);
    /* runs of one merge: leftmost first */
    int32_t out[16];
    long n = tok_bpe_piece(tok, (const uint8_t *)"aaa", 3, 1, out);
    CHECK(n == 2 && out[0] == id_of(tok, "aa") && out[1] == id_of(tok, "a"));
    n = tok_bpe_piece(tok, (const uint8_t *)"aaaaa", 5, 0, out);
    CHECK(n == 2 && out[0] == id_of(tok, "aaaa") && out[1] == id_of(tok, "a"));
    /* "aba": (a,b) has a lower rank than (b,a), then (ab,a) */
    n = tok_bpe_piece(tok, (const uint8_t *)"aba", 3, 0, out);
    CHECK(n == 1 && out[0] == id_of(tok, "aba"));
    free(a);
    free(b);
    free(c);
    free(text);
}

static void test_encode(const Tokenizer *tok)
{
    TfError err;
    TokenizerSession *s = tokenizer_session_new(tok, &err);
    REQUIRE(s);
    TokenIds ids = enc(s, " the cat", 8, 0);
    CHECK(ids.len == 2 && ids.ids[0] == id_of(tok, " the") && ids.ids[1] == id_of(tok, " cat"));
    token_ids_deinit(&ids);

    /* BOS from the template; appended output keeps what was there */
    ids = enc(s, "dog", 3, TOKENIZER_ADD_BOS);
    CHECK(ids.len == 2 && ids.ids[0] == TINY_BOS && ids.ids[1] == id_of(tok, "dog"));
    CHECK(tokenizer_bos_id(tok) == TINY_BOS);
    CHECK(tokenizer_encode(s, "dog", 3, 0, &ids, &err) == 0 && ids.len == 3 && ids.ids[2] == id_of(tok, "dog"));
    token_ids_deinit(&ids);

    /* added tokens: special ones unless SPECIALS_AS_TEXT; lstrip/rstrip */
    ids = enc(s, "<|bos|>dog", 10, 0);
    CHECK(ids.len == 2 && ids.ids[0] == TINY_BOS);
    token_ids_deinit(&ids);
    ids = enc(s, "<|bos|>dog", 10, TOKENIZER_SPECIALS_AS_TEXT);
    CHECK(ids.len > 2);
    for (size_t i = 0; i < ids.len; i++)
        CHECK(ids.ids[i] != TINY_BOS);
    token_ids_deinit(&ids);
    ids = enc(s, "dog  <x>  dog", 13, TOKENIZER_SPECIALS_AS_TEXT);
    CHECK(ids.len == 3 && ids.ids[0] == id_of(tok, "dog") && ids.ids[1] == TINY_ADDED &&
          ids.ids[2] == id_of(tok, "dog"));
    token_ids_deinit(&ids);

    /* contractions are ASCII-case only, like the reference's rewrite: "'S"
     * splits before the letter run, "'ſ" does not */
    ids = enc(s, "it's", 4, 0);
    CHECK(ids.len == 3 && ids.ids[2] == id_of(tok, "'s"));
    token_ids_deinit(&ids);

    /* invalid UTF-8 encodes as U+FFFD per maximal subpart */
    TokenIds bad = enc(s, "x\xff\xe4\xb8y", 5, 0), good = enc(s, "x\xef\xbf\xbd\xef\xbf\xbdy", 8, 0);
    CHECK(bad.len == good.len && bad.len > 0 && !memcmp(bad.ids, good.ids, bad.len * sizeof(int32_t)));
    token_ids_deinit(&bad);
    token_ids_deinit(&good);

    /* NUL bytes and long runs of white space (the JIT stack) */
    ids = enc(s, "a\0b", 3, 0);
    CHECK(ids.len == 3 && ids.ids[1] == tok->byte_id[0]);
    token_ids_deinit(&ids);
    size_t big = 1u << 20;
    char *spaces = malloc(big + 1);
    REQUIRE(spaces);
    memset(spaces, ' ', big);
    spaces[big] = 'x';
    ids = enc(s, spaces, big + 1, 0);
    CHECK(ids.len > 0);
    char *back;
    size_t back_len;
    CHECK(tokenizer_decode(tok, ids.ids, ids.len, 0, &back, &back_len, &err) == 0 && back_len == big + 1 &&
          !memcmp(back, spaces, big + 1));
    free(back);
    free(spaces);
    token_ids_deinit(&ids);

    /* round trips */
    static const char *const texts[] = {"", " ", "the cat's  dog\n\n\tok", "\xe4\xb8\xad\xc3\xa9 123456<x>z",
                                        "<|bos|><|bos|>", "\xf0\x9f\x98\x80 \xe2\x80\x8d", "a\r\n\r\nb  "};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        ids = enc(s, texts[i], strlen(texts[i]), 0);
        CHECK(tokenizer_decode(tok, ids.ids, ids.len, 0, &back, &back_len, &err) == 0);
        CHECKF(back_len == strlen(texts[i]) && !memcmp(back, texts[i], back_len), "round trip of \"%s\"", texts[i]);
        free(back);
        token_ids_deinit(&ids);
    }

    /* decoding half a character gives U+FFFD, or the bytes when raw */
    int32_t half[2] = {0xE4, 0xB8};
    CHECK(tokenizer_decode(tok, half, 2, 0, &back, &back_len, &err) == 0 && back_len == 3 &&
          !memcmp(back, "\xef\xbf\xbd", 3));
    free(back);
    CHECK(tokenizer_decode(tok, half, 2, 1, &back, &back_len, &err) == 0 && back_len == 2);
    free(back);
    int32_t out_of_range = (int32_t)tokenizer_vocab_size(tok);
    CHECK(tokenizer_decode(tok, &out_of_range, 1, 0, &back, &back_len, &err) == -1 && strstr(err.msg, "outside"));
    tokenizer_session_free(s);
}

static void test_refused(void)
{
    static const struct {
        const char *name, *text, *want;
    } cases[] = {
        {"empty.json", "{}", "not BPE"},
        {"notjson.json", "{ \"model\": ", "line"},
        {"wordpiece.json", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "not BPE"},
        {"tiktoken_bad.model", "YQ== 0\nYg== 5\n", "rank"},
        {"tiktoken_b64.model", "!!!! 0\n", "line 1"},
        {"tiktoken_small.model", "YQ== 0\nYg== 1\n", "only 2 tokens"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_text(path_in(cases[i].name), cases[i].text);
        TfError err = {{0}};
        Tokenizer *tok = tokenizer_load(path_in(cases[i].name), &err);
        CHECKF(!tok && strstr(err.msg, cases[i].want), "%s: got \"%s\"", cases[i].name, err.msg);
        tokenizer_free(tok);
    }
    TfError err;
    CHECK(tokenizer_load(path_in("missing.json"), &err) == NULL);

    /* a valid file with one thing changed */
    json_error_t je;
    json_t *root = json_load_file(path_in("tiny.json"), 0, &je);
    REQUIRE(root);
    json_t *copy = json_deep_copy(root);
    json_object_set_new(copy, "normalizer", json_pack("{s:s}", "type", "NFC"));
    json_dump_file(copy, path_in("norm.json"), 0);
    json_decref(copy);
    Tokenizer *tok = tokenizer_load(path_in("norm.json"), &err);
    CHECK(!tok && strstr(err.msg, "normalizer"));
    copy = json_deep_copy(root);
    json_array_append_new(json_object_get(json_object_get(copy, "model"), "merges"), json_string("q zzz"));
    json_dump_file(copy, path_in("merge.json"), 0);
    json_decref(copy);
    tok = tokenizer_load(path_in("merge.json"), &err);
    CHECKF(!tok && strstr(err.msg, "not in the vocabulary"), "%s", err.msg);
    copy = json_deep_copy(root);
    json_object_set_new(json_object_get(json_object_get(copy, "model"), "vocab"), "\xe2\x82\xac", json_integer(700));
    json_dump_file(copy, path_in("alpha.json"), 0);
    json_decref(copy);
    tok = tokenizer_load(path_in("alpha.json"), &err);
    CHECKF(!tok && strstr(err.msg, "byte-level"), "%s", err.msg);
    json_decref(root);
}

static void test_pattern(void)
{
    TfError err;
    char *p = tok_pattern_translate("\\s+(?!\\S)|\\d|(?i:'s|'t|'re|'ve|'m|'ll|'d)|.", TOKENIZER_REGEX_JS, &err);
    REQUIRE(p);
    CHECK(strstr(p, "\\x{FEFF}") && strstr(p, "[0-9]") && strstr(p, "[sS]") && !strstr(p, "(?i"));
    free(p);
    p = tok_pattern_translate("[\\S]", TOKENIZER_REGEX_JS, &err);
    CHECK(!p && strstr(err.msg, "not supported"));
    p = tok_pattern_translate("[]", TOKENIZER_REGEX_JS, &err);
    CHECK(!p);
}

/* --regex rust: Unicode \s (U+0085 yes, U+FEFF no) and case folding */
static void test_regex_rust(const Tokenizer *js_tok)
{
    TfError err;
    Tokenizer *rs_tok = tokenizer_load_regex(path_in("tiny.json"), TOKENIZER_REGEX_RUST, &err);
    REQUIRE(rs_tok);
    CHECK(strcmp(tokenizer_identity(js_tok), tokenizer_identity(rs_tok)));
    TokenizerSession *js = tokenizer_session_new(js_tok, &err), *rs = tokenizer_session_new(rs_tok, &err);
    REQUIRE(js && rs);
    static const struct {
        const char *text;
        int same;
    } cases[] = {{"the cat's dog  ok", 1}, {"a  \xef\xbb\xbf  b", 0}, {"a  \xc2\x85  b", 0}, {"x'\xc5\xbfx", 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TokenIds a = enc(js, cases[i].text, strlen(cases[i].text), 0);
        TokenIds b = enc(rs, cases[i].text, strlen(cases[i].text), 0);
        int same = a.len == b.len && !memcmp(a.ids, b.ids, a.len * sizeof(int32_t));
        CHECKF(same == cases[i].same, "case %zu: js and rust %s", i, same ? "agree" : "differ");
        token_ids_deinit(&a);
        token_ids_deinit(&b);
    }
    tokenizer_session_free(js);
    tokenizer_session_free(rs);
    tokenizer_free(rs_tok);
}

/* Writes the tiny vocabulary in tiktoken form (ranks = ids) to f. */
static void write_tiktoken(FILE *f, const Tokenizer *json_tok)
{
    for (size_t id = 0; id < TINY_BOS; id++) {
        char *b64 = tf_base64_encode(json_tok->pool + json_tok->tok_off[id], json_tok->tok_len[id]);
        REQUIRE(b64);
        fprintf(f, "%s %zu\n", b64, id);
        free(b64);
    }
}

static void test_tiktoken(const Tokenizer *json_tok)
{
    FILE *f = fopen(path_in("tiny.model"), "w");
    REQUIRE(f);
    write_tiktoken(f, json_tok);
    fclose(f);
    TfError err;
    Tokenizer *tok = tokenizer_load(path_in("tiny.model"), &err);
    REQUIRE(tok);
    CHECK(tokenizer_vocab_size(tok) == TINY_BOS + 256);
    CHECK(tokenizer_bos_id(tok) == TINY_BOS);
    CHECK(tokenizer_token_id(tok, "<|eot_id|>") == TINY_BOS + 9);
    CHECK(tokenizer_token_id(tok, "<|reserved_special_token_250|>") == TINY_BOS + 255);
    TokenizerSession *a = tokenizer_session_new(json_tok, &err), *b = tokenizer_session_new(tok, &err);
    REQUIRE(a && b);
    static const char *const texts[] = {"the cat's dog", "aaaaaaa ab aba", "\xe4\xb8\xad 12345", "  \n\n x"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        TokenIds x = enc(a, texts[i], strlen(texts[i]), 0), y = enc(b, texts[i], strlen(texts[i]), 0);
        CHECKF(x.len == y.len && !memcmp(x.ids, y.ids, x.len * sizeof(int32_t)), "tiktoken differs on \"%s\"",
               texts[i]);
        token_ids_deinit(&x);
        token_ids_deinit(&y);
    }
    TokenIds z = enc(b, "<|begin_of_text|>hi", 19, 0);
    CHECK(z.len >= 2 && z.ids[0] == TINY_BOS);
    token_ids_deinit(&z);
    tokenizer_session_free(a);
    tokenizer_session_free(b);
    tokenizer_free(tok);
}

/* One Tokenizer, one session per thread: the results must not depend on
 * what other threads do (sanitizer builds catch races on shared state). */
typedef struct ThreadJob {
    const Tokenizer *tok;
    int failures;
} ThreadJob;

/* the second is 115 bytes long: the heap path */
static const char *const THREAD_TEXTS[] = {"the cat's dog",
                                           ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
                                           "\xe4\xb8\xad\xc3\xa9 123456 <|bos|>", "  \n\n x\xff"};

static void *thread_run(void *arg)
{
    ThreadJob *job = arg;
    TfError err;
    TokenizerSession *s = tokenizer_session_new(job->tok, &err);
    TokenizerSession *ref = tokenizer_session_new(job->tok, &err);
    if (!s || !ref) {
        job->failures++;
        goto done;
    }
    for (int round = 0; round < 300; round++) {
        for (size_t i = 0; i < sizeof THREAD_TEXTS / sizeof THREAD_TEXTS[0]; i++) {
            const char *t = THREAD_TEXTS[(i + (size_t)round) % 4];
            TokenIds a = {0}, b = {0};
            if (tokenizer_encode(s, t, strlen(t), 0, &a, &err) || tokenizer_encode(ref, t, strlen(t), 0, &b, &err) ||
                a.len != b.len || memcmp(a.ids, b.ids, a.len * sizeof(int32_t)))
                job->failures++;
            token_ids_deinit(&a);
            token_ids_deinit(&b);
        }
    }
done:
    tokenizer_session_free(s);
    tokenizer_session_free(ref);
    return NULL;
}

/* The sizes the tiktoken loader allocates come from the tokens it has
 * validated, not from the file's line count: the tiny vocabulary followed
 * by 64 Mi blank lines loads in a child whose address space has 256 MiB to
 * spare (the file itself takes 64 of them). Allocating an id per line (9
 * bytes each: 576 MiB) fails there. Not under sanitizers, whose shadow
 * memory does not fit an address-space limit. */
static void test_tiktoken_blank_lines(const Tokenizer *json_tok)
{
    if (UNDER_SANITIZER) {
        fprintf(stderr, "tiktoken blank lines: skipped under a sanitizer\n");
        return;
    }
    FILE *f = fopen(path_in("blank.model"), "w");
    REQUIRE(f);
    write_tiktoken(f, json_tok);
    static char blank[1 << 20];
    memset(blank, '\n', sizeof blank);
    for (int i = 0; i < 64; i++)
        REQUIRE(fwrite(blank, 1, sizeof blank, f) == sizeof blank);
    REQUIRE(fclose(f) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        long pages = 0;
        FILE *st = fopen("/proc/self/statm", "r");
        if (!st || fscanf(st, "%ld", &pages) != 1)
            _exit(2);
        fclose(st);
        struct rlimit rl;
        rl.rlim_cur = rl.rlim_max = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)256 << 20);
        if (setrlimit(RLIMIT_AS, &rl))
            _exit(2);
        TfError err;
        Tokenizer *tok = tokenizer_load(path_in("blank.model"), &err);
        if (!tok) {
            fprintf(stderr, "blank.model: %s\n", err.msg);
            _exit(1);
        }
        int ok = tokenizer_vocab_size(tok) == TINY_BOS + 256;
        tokenizer_free(tok);
        _exit(ok ? 0 : 3);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "64 Mi blank lines: child status %d", status);
    unlink(path_in("blank.model"));
}

static void test_threads(const Tokenizer *tok)
{
    pthread_t th[3];
    ThreadJob jobs[3] = {{tok, 0}, {tok, 0}, {tok, 0}};
    for (int i = 0; i < 3; i++)
        REQUIRE(pthread_create(&th[i], NULL, thread_run, &jobs[i]) == 0);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECKF(jobs[i].failures == 0, "thread %d: %d differing encodes", i, jobs[i].failures);
    }
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/tf_tokenizer_test_%d", (int)getpid());
    TfError err;
    REQUIRE(tf_mkdir_p(dir, &err) == 0);
    REQUIRE(tiny_tokenizer_write(path_in("tiny.json")) == 0);
    Tokenizer *tok = tokenizer_load(path_in("tiny.json"), &err);
    if (!tok)
        fprintf(stderr, "load: %s\n", err.msg);
    REQUIRE(tok);
    CHECK(tokenizer_vocab_size(tok) == TINY_ADDED + 1);
    CHECK(strlen(tokenizer_identity(tok)) == 64);
    Tokenizer *again = tokenizer_load(path_in("tiny.json"), &err);
    REQUIRE(again);
    CHECK(!strcmp(tokenizer_identity(tok), tokenizer_identity(again)));
    tokenizer_free(again);
    CHECK(tokenizer_token_id(tok, "<x>") == TINY_ADDED);
    CHECK(tokenizer_token_id(tok, "\xc4\xa0the") == id_of(tok, " the")); /* byte-level form of " the" */

    test_bpe_paths(tok);
    test_encode(tok);
    test_pattern();
    test_regex_rust(tok);
    test_tiktoken(tok);
    test_tiktoken_blank_lines(tok);
    test_threads(tok);
    test_refused();
    tokenizer_free(tok);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return test_main_end("test_tokenizer");
}
