/* tokenizer.c: loading a byte-level BPE tokenizer (Hugging Face
 * tokenizer.json, or Meta's tiktoken-format tokenizer.model), its identity
 * hash, and decoding.
 *
 * Both formats end in the same tables: every id's bytes, a hash of raw
 * bytes -> id, and a hash of (left id, right id) -> (rank, merged id). A
 * tiktoken file has no merge list; we derive one the way Hugging Face's
 * converter does (every split of a token into two tokens, ordered by the
 * merged token's rank, then the left and right ranks), so the two files of
 * one tokenizer give the same ids and the same identity.
 *
 * The split pattern is compiled with PCRE2 (UTF + UCP, JIT). Patterns in
 * tokenizer.json are written for Oniguruma / JavaScript; the reference we
 * match (transformers.js) runs them as JavaScript regexes, so the few
 * classes whose meaning differs between JavaScript and PCRE2 (\s, \d, \w,
 * '.', '$') are rewritten to the JavaScript meaning, and the
 * case-insensitive contraction group is rewritten to ASCII case pairs as
 * the reference does (so "'ſ" is not the contraction "'s"). With
 * TOKENIZER_REGEX_RUST, \s is Unicode's White_Space and the rest keeps
 * PCRE2's Unicode meaning, which is what Oniguruma (Hugging Face's Rust
 * library) and fancy-regex (tiktoken) do with these patterns. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

#define TOK_MAX_FILE ((size_t)1 << 30)
#define TOK_MAX_ID (1 << 24)

/* The split pattern and special tokens of Meta's Llama-3 tokenizer.py,
 * used for tiktoken-format files (which carry neither). */
static const char LLAMA3_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
#define LLAMA3_N_SPECIAL 256

/* GPT-2's pattern, used by a ByteLevel pre-tokenizer with use_regex. */
static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- UTF-8 ------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0 when the
 * bytes there are not one; *bad gets the length of the maximal invalid
 * subpart (>= 1) in that case. */
static size_t utf8_seq(const uint8_t *p, size_t n, size_t *bad)
{
    uint8_t c = p[0];
    if (c < 0x80)
        return 1;
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    size_t i = 1;
    for (; i <= need; i++) {
        if (i >= n || p[i] < lo || p[i] > hi) {
            *bad = i;
            return 0;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

int tok_utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, 8 bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        size_t bad, k = utf8_seq(p + i, n - i, &bad);
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

size_t tok_utf8_sanitize(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t i = 0, o = 0;
    while (i < n) {
        size_t bad, k = utf8_seq(in + i, n - i, &bad);
        if (k) {
            memcpy(out + o, in + i, k);
            o += k;
            i += k;
        } else {
            out[o++] = 0xEF;
            out[o++] = 0xBF;
            out[o++] = 0xBD;
            i += bad;
        }
    }
    return o;
}

/* Decodes one code point of valid-or-not UTF-8; returns its length or 0. */
static size_t utf8_decode(const uint8_t *p, size_t n, uint32_t *cp)
{
    size_t bad, k = utf8_seq(p, n, &bad);
    if (!k)
        return 0;
    if (k == 1)
        *cp = p[0];
    else if (k == 2)
        *cp = (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
    else if (k == 3)
        *cp = (uint32_t)(p[0] & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
    else
        *cp = (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 | (uint32_t)(p[2] & 0x3F) << 6 |
              (p[3] & 0x3F);
    return k;
}

/* ---- byte-level alphabet ------------------------------------------------------- */

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the others
 * to 256 + n in byte order. `unbyte` is the inverse for code points < 324
 * (-1 where none). */
static void byte_level_tables(uint32_t byte_cp[256], int unbyte[324])
{
    for (int i = 0; i < 324; i++)
        unbyte[i] = -1;
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        byte_cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + extra++);
        unbyte[byte_cp[b]] = b;
    }
}

/* Converts a byte-level token string to raw bytes in out (which holds at
 * least strlen(s) bytes). Returns the byte count, or -1 when a character is
 * outside the byte-level alphabet. */
static long byte_level_decode(const char *s, size_t n, const int unbyte[324], uint8_t *out)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0, o = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_decode(p + i, n - i, &cp);
        if (!k || cp >= 324 || unbyte[cp] < 0)
            return -1;
        out[o++] = (uint8_t)unbyte[cp];
        i += k;
    }
    return (long)o;
}

/* ---- building the tables -------------------------------------------------------- */

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

int32_t tok_vocab_find(const Tokenizer *tok, const uint8_t *p, size_t n)
{
    uint64_t h = tok_hash_bytes(p, n);
    uint16_t tag = (uint16_t)(h >> 48);
    size_t i = h & tok->vocab_mask;
    for (;;) {
        const TokVocabSlot *s = &tok->vocab_slots[i];
        if (!s->id1)
            return -1;
        if (s->tag == tag && s->len == n && !memcmp(tok->pool + s->off, p, n))
            return (int32_t)(s->id1 - 1);
        i = (i + 1) & tok->vocab_mask;
    }
}

/* Builder state while loading: token bytes arrive in any id order. */
typedef struct TokBuild {
    Tokenizer *tok;
    size_t pool_cap;
    int32_t (*pairs)[2]; /* merges in rank order, for the identity */
    size_t n_pairs, cap_pairs;
} TokBuild;

static int pool_append(TokBuild *b, const void *data, size_t n, uint64_t *off, TfError *err)
{
    Tokenizer *tok = b->tok;
    if (tok->pool_len + n > b->pool_cap) {
        size_t cap = b->pool_cap ? b->pool_cap : 1 << 20;
        while (cap < tok->pool_len + n)
            cap *= 2;
        uint8_t *np = realloc(tok->pool, cap);
        if (!np)
            return tf_fail(err, "out of memory");
        tok->pool = np;
        b->pool_cap = cap;
    }
    memcpy(tok->pool + tok->pool_len, data, n);
    *off = tok->pool_len;
    tok->pool_len += n;
    return 0;
}

static int alloc_ids(Tokenizer *tok, size_t n_ids, TfError *err)
{
    tok->n_ids = n_ids;
    tok->tok_off = calloc(n_ids, sizeof *tok->tok_off);
    tok->tok_len = calloc(n_ids, sizeof *tok->tok_len);
    tok->kind = calloc(n_ids, 1);
    if (!tok->tok_off || !tok->tok_len || !tok->kind)
        return tf_fail(err, "out of memory");
    return 0;
}

/* Records the raw bytes of model token `id`. */
static int set_model_token(TokBuild *b, int32_t id, const uint8_t *bytes, size_t n, TfError *err)
{
    Tokenizer *tok = b->tok;
    if (tok->kind[id] != TOK_KIND_NONE)
        return tf_fail(err, "id %d is given to two tokens", (int)id);
    if (n == 0)
        return tf_fail(err, "id %d is an empty token", (int)id);
    if (pool_append(b, bytes, n, &tok->tok_off[id], err))
        return -1;
    tok->tok_len[id] = (uint32_t)n;
    tok->kind[id] = TOK_KIND_MODEL;
    return 0;
}

/* Fills the bytes -> id hash and the single-byte table from the model
 * tokens. */
static int build_vocab_hash(Tokenizer *tok, TfError *err)
{
    size_t n_model = 0;
    for (size_t id = 0; id < tok->n_ids; id++)
        n_model += tok->kind[id] == TOK_KIND_MODEL;
    size_t cap = pow2_at_least(n_model * 2 + 1);
    tok->vocab_slots = calloc(cap, sizeof *tok->vocab_slots);
    if (!tok->vocab_slots)
        return tf_fail(err, "out of memory");
    tok->vocab_mask = cap - 1;
    for (size_t id = 0; id < tok->n_ids; id++) {
        if (tok->kind[id] != TOK_KIND_MODEL)
            continue;
        const uint8_t *p = tok->pool + tok->tok_off[id];
        size_t n = tok->tok_len[id];
        if (n > TOK_MAX_TOKEN)
            return tf_fail(err, "token of id %zu is longer than %d bytes", id, TOK_MAX_TOKEN);
        if (tok_vocab_find(tok, p, n) >= 0)
            return tf_fail(err, "token of id %zu appears twice in the vocabulary", id);
        uint64_t h = tok_hash_bytes(p, n);
        size_t i = h & tok->vocab_mask;
        while (tok->vocab_slots[i].id1)
            i = (i + 1) & tok->vocab_mask;
        tok->vocab_slots[i] = (TokVocabSlot){tok->tok_off[id], (uint32_t)id + 1, (uint16_t)n, (uint16_t)(h >> 48)};
    }
    for (int c = 0; c < 256; c++) {
        uint8_t byte = (uint8_t)c;
        tok->byte_id[c] = tok_vocab_find(tok, &byte, 1);
        if (tok->byte_id[c] < 0)
            return tf_fail(err, "the vocabulary lacks the token of byte 0x%02x: not a byte-level BPE vocabulary", c);
    }
    return 0;
}

static int merges_init(TokBuild *b, size_t expected, TfError *err)
{
    Tokenizer *tok = b->tok;
    size_t cap = pow2_at_least(expected + expected / 2 + 1);
    tok->merge_slots = malloc(cap * sizeof *tok->merge_slots);
    b->cap_pairs = expected ? expected : 1;
    b->pairs = malloc(b->cap_pairs * sizeof *b->pairs);
    if (!tok->merge_slots || !b->pairs)
        return tf_fail(err, "out of memory");
    memset(tok->merge_slots, 0xFF, cap * sizeof *tok->merge_slots);
    tok->merge_mask = cap - 1;
    return 0;
}

/* Doubles the merge hash table. */
static int merges_grow(Tokenizer *tok, TfError *err)
{
    size_t old_cap = tok->merge_mask + 1, cap = old_cap * 2;
    TokMergeSlot *slots = malloc(cap * sizeof *slots);
    if (!slots)
        return tf_fail(err, "out of memory");
    memset(slots, 0xFF, cap * sizeof *slots);
    for (size_t j = 0; j < old_cap; j++) {
        if (tok->merge_slots[j].key == UINT64_MAX)
            continue;
        size_t i = tok_hash_pair(tok->merge_slots[j].key) & (cap - 1);
        while (slots[i].key != UINT64_MAX)
            i = (i + 1) & (cap - 1);
        slots[i] = tok->merge_slots[j];
    }
    free(tok->merge_slots);
    tok->merge_slots = slots;
    tok->merge_mask = cap - 1;
    return 0;
}

/* Adds merge number `rank` of (left, right). A pair listed twice keeps its
 * last rank, as the reference's map does. */
static int merge_add(TokBuild *b, int32_t left, int32_t right, TfError *err)
{
    Tokenizer *tok = b->tok;
    uint32_t rank = (uint32_t)b->n_pairs;
    const uint8_t *lp = tok->pool + tok->tok_off[left], *rp = tok->pool + tok->tok_off[right];
    size_t ln = tok->tok_len[left], rn = tok->tok_len[right];
    uint8_t stack[256], *cat = ln + rn <= sizeof stack ? stack : malloc(ln + rn);
    if (!cat)
        return tf_fail(err, "out of memory");
    memcpy(cat, lp, ln);
    memcpy(cat + ln, rp, rn);
    int32_t result = tok_vocab_find(tok, cat, ln + rn);
    if (cat != stack)
        free(cat);
    if (result < 0)
        return tf_fail(err, "merge %u: the merged token of ids %d and %d is not in the vocabulary", rank, (int)left,
                       (int)right);
    if (b->n_pairs == b->cap_pairs) {
        size_t cap = b->cap_pairs * 2;
        void *np = realloc(b->pairs, cap * sizeof *b->pairs);
        if (!np)
            return tf_fail(err, "out of memory");
        b->pairs = np;
        b->cap_pairs = cap;
    }
    if (tok->n_merges + 1 > (tok->merge_mask + 1) / 4 * 3 && merges_grow(tok, err))
        return -1;
    b->pairs[b->n_pairs][0] = left;
    b->pairs[b->n_pairs][1] = right;
    b->n_pairs++;
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t i = tok_hash_pair(key) & tok->merge_mask;
    while (tok->merge_slots[i].key != UINT64_MAX && tok->merge_slots[i].key != key)
        i = (i + 1) & tok->merge_mask;
    if (tok->merge_slots[i].key == UINT64_MAX)
        tok->n_merges++;
    tok->merge_slots[i] = (TokMergeSlot){key, rank, result};
    return 0;
}

/* Registers an added token (its text matched in the input before
 * pre-tokenizing). */
static int trie_add(Tokenizer *tok, const uint8_t *s, size_t n, int32_t id, TfError *err)
{
    if (!tok->trie) {
        tok->cap_trie = 1024;
        tok->trie = malloc(tok->cap_trie * sizeof *tok->trie);
        if (!tok->trie)
            return tf_fail(err, "out of memory");
        tok->trie[0] = (TokTrieNode){-1, -1, -1, 0};
        tok->n_trie = 1;
    }
    if (n == 0)
        return tf_fail(err, "added token %d is empty", (int)id);
    tok->first_byte[s[0]] = 1;
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = tok->trie[node].child;
        while (c >= 0 && tok->trie[c].byte != s[i])
            c = tok->trie[c].sibling;
        if (c < 0) {
            if (tok->n_trie == tok->cap_trie) {
                size_t cap = tok->cap_trie * 2;
                void *np = realloc(tok->trie, cap * sizeof *tok->trie);
                if (!np)
                    return tf_fail(err, "out of memory");
                tok->trie = np;
                tok->cap_trie = cap;
            }
            c = (int32_t)tok->n_trie++;
            tok->trie[c] = (TokTrieNode){-1, tok->trie[node].child, -1, s[i]};
            tok->trie[node].child = c;
        }
        node = c;
    }
    tok->trie[node].token = id;
    return 0;
}

static int added_add(TokBuild *b, int32_t id, const char *content, size_t n, int special, int lstrip,
                     int rstrip, TfError *err)
{
    Tokenizer *tok = b->tok;
    TokAdded *na = realloc(tok->added, (tok->n_added + 1) * sizeof *na);
    if (!na)
        return tf_fail(err, "out of memory");
    tok->added = na;
    tok->added[tok->n_added++] = (TokAdded){id, special, lstrip, rstrip};
    /* Decoding gives an added token's text, even where the model vocabulary
     * has the same id (the reference does the same). */
    if (pool_append(b, content, n, &tok->tok_off[id], err))
        return -1;
    tok->tok_len[id] = (uint32_t)n;
    tok->kind[id] = special ? TOK_KIND_SPECIAL : TOK_KIND_ADDED;
    return trie_add(tok, (const uint8_t *)content, n, id, err);
}

/* ---- the split pattern -------------------------------------------------------------- */

/* Unicode's White_Space property: \s of Oniguruma and Rust's regex. */
#define UNI_SPACE "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* JavaScript's \s: WhiteSpace and LineTerminator of ECMA-262. */
#define JS_SPACE "\\t\\n\\x0B\\f\\r \\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}"

typedef struct Str {
    char *p;
    size_t n, cap;
} Str;

static int str_add(Str *s, const char *t, size_t n)
{
    if (s->n + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        while (cap < s->n + n + 1)
            cap *= 2;
        char *np = realloc(s->p, cap);
        if (!np)
            return -1;
        s->p = np;
        s->cap = cap;
    }
    memcpy(s->p + s->n, t, n);
    s->n += n;
    s->p[s->n] = 0;
    return 0;
}
#define STR_ADD(s, lit) str_add((s), (lit), strlen(lit))

char *tok_pattern_translate(const char *src, TokenizerRegex regex, TfError *err)
{
    int js = regex == TOKENIZER_REGEX_JS;
    /* The substitutions transformers.js makes before compiling. */
    static const char *const subst[][2] = {
        {"(?i:'s|'t|'re|'ve|'m|'ll|'d)", "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))"},
        {" ?[^(\\s|[.,!?\xE2\x80\xA6\xE3\x80\x82\xEF\xBC\x8C\xE3\x80\x81\xE0\xA5\xA4\xDB\x94\xD8\x8C])]+",
         " ?[^\\s.,!?\xE2\x80\xA6\xE3\x80\x82\xEF\xBC\x8C\xE3\x80\x81\xE0\xA5\xA4\xDB\x94\xD8\x8C]+"},
    };
    Str pre = {0}, out = {0};
    if (str_add(&pre, src, strlen(src)))
        goto oom;
    for (size_t k = 0; js && k < sizeof subst / sizeof subst[0]; k++) {
        const char *from = subst[k][0], *to = subst[k][1];
        char *hit;
        size_t start = 0;
        while ((hit = strstr(pre.p + start, from))) {
            Str next = {0};
            size_t at = (size_t)(hit - pre.p);
            if (str_add(&next, pre.p, at) || STR_ADD(&next, to) ||
                STR_ADD(&next, hit + strlen(from))) {
                free(next.p);
                goto oom;
            }
            free(pre.p);
            pre = next;
            start = at + strlen(to);
        }
    }
    int in_class = 0;
    const char *p = pre.p;
    for (size_t i = 0; p[i]; i++) {
        char c = p[i];
        int rc = 0;
        if (c == '\\') {
            char e = p[i + 1];
            if (!e) {
                tf_fail(err, "pattern ends with a backslash");
                goto fail;
            }
            i++;
            const char *space = js ? JS_SPACE : UNI_SPACE;
            switch (e) {
            case 's':
                rc = in_class ? STR_ADD(&out, space) : STR_ADD(&out, "[") || STR_ADD(&out, space) || STR_ADD(&out, "]");
                break;
            case 'S':
                if (in_class)
                    goto unsupported;
                rc = STR_ADD(&out, "[^") || STR_ADD(&out, space) || STR_ADD(&out, "]");
                break;
            /* \d and \w are ASCII in JavaScript, Unicode (as PCRE2 with UCP
             * has them) in Oniguruma and Rust */
            case 'd':
                rc = !js ? STR_ADD(&out, "\\d") : STR_ADD(&out, in_class ? "0-9" : "[0-9]");
                break;
            case 'D':
                if (in_class && js)
                    goto unsupported;
                rc = !js ? STR_ADD(&out, "\\D") : STR_ADD(&out, "[^0-9]");
                break;
            case 'w':
                rc = !js ? STR_ADD(&out, "\\w") : STR_ADD(&out, in_class ? "A-Za-z0-9_" : "[A-Za-z0-9_]");
                break;
            case 'W':
                if (in_class && js)
                    goto unsupported;
                rc = !js ? STR_ADD(&out, "\\W") : STR_ADD(&out, "[^A-Za-z0-9_]");
                break;
            case 'u':
                /* \uXXXX and \u{X...} become \x{...} */
                if (p[i + 1] == '{') {
                    size_t j = i + 2;
                    while (isxdigit((unsigned char)p[j]))
                        j++;
                    if (p[j] != '}')
                        goto unsupported;
                    rc = STR_ADD(&out, "\\x{") || str_add(&out, p + i + 2, j - i - 2) || STR_ADD(&out, "}");
                    i = j;
                } else {
                    for (int k = 1; k <= 4; k++)
                        if (!isxdigit((unsigned char)p[i + k]))
                            goto unsupported;
                    rc = STR_ADD(&out, "\\x{") || str_add(&out, p + i + 1, 4) || STR_ADD(&out, "}");
                    i += 4;
                }
                break;
            default: {
                char two[2] = {'\\', e};
                rc = str_add(&out, two, 2);
            }
            }
        } else if (in_class) {
            if (c == ']')
                in_class = 0;
            if (c == '[' && !js)
                goto unsupported; /* a nested class in Rust's syntax */
            rc = c == '[' ? STR_ADD(&out, "\\[") : str_add(&out, &c, 1);
        } else if (c == '[') {
            in_class = 1;
            rc = STR_ADD(&out, "[");
            if (p[i + 1] == '^') {
                rc = rc || STR_ADD(&out, "^");
                i++;
            }
            if (p[i + 1] == ']')
                goto unsupported; /* [] and [^] differ between the engines */
        } else if (c == '.' && js) {
            rc = STR_ADD(&out, "[^\\n\\r\\x{2028}\\x{2029}]");
        } else {
            rc = str_add(&out, &c, 1);
        }
        if (rc)
            goto oom;
        continue;
    unsupported:
        tf_fail(err, "pattern construct near offset %zu is not supported: %.24s", i, p + (i > 0 ? i - 1 : 0));
        goto fail;
    }
    if (!out.p && STR_ADD(&out, ""))
        goto oom;
    free(pre.p);
    return out.p;
oom:
    tf_fail(err, "out of memory");
fail:
    free(pre.p);
    free(out.p);
    return NULL;
}

static int stage_compile(TokStage *st, const char *source, TokenizerRegex regex, TfError *err)
{
    st->source = strdup(source);
    if (!st->source)
        return tf_fail(err, "out of memory");
    char *pat = tok_pattern_translate(source, regex, err);
    if (!pat)
        return tf_fail_context(err, "split pattern");
    int ec;
    PCRE2_SIZE eo;
    st->code = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                             PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY | PCRE2_NO_UTF_CHECK, &ec, &eo, NULL);
    free(pat);
    if (!st->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return tf_fail(err, "split pattern does not compile at offset %zu: %s", (size_t)eo, (char *)msg);
    }
    st->jit = pcre2_jit_compile(st->code, PCRE2_JIT_COMPLETE) == 0;
    if (!st->jit)
        tf_log(TF_LOG_DEBUG, "tokenizer", "PCRE2 JIT unavailable; using the interpreter");
    return 0;
}

/* ---- identity -------------------------------------------------------------------- */

static void hash_u32(TfSha256 *h, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    tf_sha256_update(h, b, 4);
}

static void hash_str(TfSha256 *h, const char *s)
{
    hash_u32(h, (uint32_t)strlen(s));
    tf_sha256_update(h, s, strlen(s));
}

/* Everything that changes ids, in a fixed layout (little-endian u32
 * lengths and ids). The file's format does not enter it. */
static int compute_identity(TokBuild *b, TfError *err)
{
    Tokenizer *tok = b->tok;
    TfSha256 *h = tf_sha256_new();
    if (!h)
        return tf_fail(err, "out of memory");
    hash_str(h, "transfuse-tokenizer-1 byte-level-bpe");
    if (tok->regex != TOKENIZER_REGEX_JS) /* absent for the default, so its identities stay as they were */
        hash_str(h, "regex-unicode");
    hash_u32(h, (uint32_t)tok->n_stages);
    for (int i = 0; i < tok->n_stages; i++)
        hash_str(h, tok->stages[i].source);
    hash_u32(h, (uint32_t)tok->prefix_space);
    hash_u32(h, (uint32_t)tok->ignore_merges);
    hash_u32(h, (uint32_t)tok->n_ids);
    for (size_t id = 0; id < tok->n_ids; id++) {
        hash_u32(h, tok->kind[id]);
        hash_u32(h, tok->tok_len[id]);
        tf_sha256_update(h, tok->pool + tok->tok_off[id], tok->tok_len[id]);
    }
    hash_u32(h, (uint32_t)b->n_pairs);
    for (size_t i = 0; i < b->n_pairs; i++) {
        hash_u32(h, (uint32_t)b->pairs[i][0]);
        hash_u32(h, (uint32_t)b->pairs[i][1]);
    }
    hash_u32(h, (uint32_t)tok->n_added);
    for (size_t i = 0; i < tok->n_added; i++) {
        hash_u32(h, (uint32_t)tok->added[i].id);
        hash_u32(h, (uint32_t)(tok->added[i].special | tok->added[i].lstrip << 1 | tok->added[i].rstrip << 2));
    }
    hash_u32(h, (uint32_t)tok->n_prefix);
    for (int i = 0; i < tok->n_prefix; i++)
        hash_u32(h, (uint32_t)tok->prefix[i]);
    hash_u32(h, (uint32_t)tok->n_suffix);
    for (int i = 0; i < tok->n_suffix; i++)
        hash_u32(h, (uint32_t)tok->suffix[i]);
    unsigned char digest[32];
    tf_sha256_final(h, digest);
    tf_hex(digest, 32, tok->identity);
    return 0;
}

/* ---- tokenizer.json ------------------------------------------------------------------- */

static int json_flag(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_true(v);
}

/* Reads the pre_tokenizer: a Split on a regex (behavior Isolated) followed
 * by a ByteLevel without its own regex is Llama-3's; a lone ByteLevel with
 * use_regex is GPT-2's. */
static int load_pre_tokenizer(Tokenizer *tok, json_t *pt, TfError *err)
{
    json_t *list = NULL;
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type)
        return tf_fail(err, "pre_tokenizer has no type (a byte-level BPE tokenizer needs one)");
    if (!strcmp(type, "Sequence")) {
        list = json_object_get(pt, "pretokenizers");
        if (!json_is_array(list))
            return tf_fail(err, "pre_tokenizer Sequence without pretokenizers");
    }
    size_t n = list ? json_array_size(list) : 1;
    int saw_byte_level = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *p = list ? json_array_get(list, i) : pt;
        const char *t = json_string_value(json_object_get(p, "type"));
        if (!t)
            return tf_fail(err, "pre_tokenizer %zu has no type", i);
        if (saw_byte_level)
            return tf_fail(err, "pre_tokenizer %s after ByteLevel is not supported", t);
        if (!strcmp(t, "Split")) {
            json_t *pat = json_object_get(p, "pattern");
            const char *re = json_string_value(json_object_get(pat, "Regex"));
            const char *behavior = json_string_value(json_object_get(p, "behavior"));
            if (!re)
                return tf_fail(err, "Split pre_tokenizer without a Regex pattern is not supported");
            if (json_flag(p, "invert") || !behavior || strcmp(behavior, "Isolated"))
                return tf_fail(err, "Split pre_tokenizer: only behavior Isolated without invert is supported");
            if (tok->n_stages == TOK_MAX_STAGES)
                return tf_fail(err, "too many pre_tokenizer stages");
            if (stage_compile(&tok->stages[tok->n_stages++], re, tok->regex, err))
                return -1;
        } else if (!strcmp(t, "ByteLevel")) {
            saw_byte_level = 1;
            json_t *ur = json_object_get(p, "use_regex");
            if (!ur || json_is_true(ur)) {
                if (tok->n_stages == TOK_MAX_STAGES)
                    return tf_fail(err, "too many pre_tokenizer stages");
                if (stage_compile(&tok->stages[tok->n_stages++], GPT2_PATTERN, tok->regex, err))
                    return -1;
            }
            tok->prefix_space = json_flag(p, "add_prefix_space");
        } else {
            return tf_fail(err, "pre_tokenizer type %s is not supported (byte-level BPE only)", t);
        }
    }
    if (!saw_byte_level)
        return tf_fail(err, "pre_tokenizer has no ByteLevel step: not a byte-level BPE tokenizer");
    return 0;
}

/* Reads the token ids a TemplateProcessing puts around a single sequence. */
static int load_template(Tokenizer *tok, json_t *tp, TfError *err)
{
    json_t *single = json_object_get(tp, "single"), *specials = json_object_get(tp, "special_tokens");
    if (!json_is_array(single))
        return tf_fail(err, "TemplateProcessing without a single template");
    int after = 0;
    for (size_t i = 0; i < json_array_size(single); i++) {
        json_t *item = json_array_get(single, i);
        if (json_object_get(item, "Sequence")) {
            after = 1;
            continue;
        }
        json_t *st = json_object_get(item, "SpecialToken");
        const char *name = json_string_value(json_object_get(st, "id"));
        if (!name)
            return tf_fail(err, "post_processor template item %zu is not understood", i);
        json_t *ids = json_object_get(json_object_get(specials, name), "ids");
        if (!json_is_array(ids) || json_array_size(ids) == 0)
            return tf_fail(err, "post_processor special token %s has no ids", name);
        for (size_t k = 0; k < json_array_size(ids); k++) {
            json_int_t id = json_integer_value(json_array_get(ids, k));
            if (id < 0 || (size_t)id >= tok->n_ids)
                return tf_fail(err, "post_processor special token %s has id %lld outside the vocabulary", name,
                               (long long)id);
            int *count = after ? &tok->n_suffix : &tok->n_prefix;
            int32_t *arr = after ? tok->suffix : tok->prefix;
            if (*count == TOK_MAX_TEMPLATE)
                return tf_fail(err, "post_processor template too long");
            arr[(*count)++] = (int32_t)id;
        }
    }
    return 0;
}

static int load_post_processor(Tokenizer *tok, json_t *pp, TfError *err)
{
    if (!pp || json_is_null(pp))
        return 0;
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (!type)
        return tf_fail(err, "post_processor has no type");
    if (!strcmp(type, "TemplateProcessing"))
        return load_template(tok, pp, err);
    if (!strcmp(type, "ByteLevel"))
        return 0; /* offsets only */
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(pp, "processors");
        for (size_t i = 0; i < json_array_size(list); i++)
            if (load_post_processor(tok, json_array_get(list, i), err))
                return -1;
        return 0;
    }
    return tf_fail(err, "post_processor type %s is not supported", type);
}

/* The BOS token name from tokenizer_config.json beside the file, if any. */
static int32_t bos_from_config(Tokenizer *tok, const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t dir = slash ? (size_t)(slash - path + 1) : 0;
    char cfg[4096];
    if (dir + sizeof "tokenizer_config.json" > sizeof cfg)
        return -1;
    memcpy(cfg, path, dir);
    strcpy(cfg + dir, "tokenizer_config.json");
    TfError ignored;
    json_t *root = tf_json_load_file(cfg, 64u << 20, &ignored);
    if (!root)
        return -1;
    json_t *b = json_object_get(root, "bos_token");
    const char *name = json_is_string(b) ? json_string_value(b) : json_string_value(json_object_get(b, "content"));
    int32_t id = name ? tokenizer_token_id(tok, name) : -1;
    json_decref(root);
    return id;
}

static int load_json(TokBuild *b, const char *path, json_t *root, TfError *err)
{
    Tokenizer *tok = b->tok;
    uint8_t *buf = NULL;
    int rc = -1;
    int unbyte[324];
    uint32_t byte_cp[256];
    byte_level_tables(byte_cp, unbyte);

    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!json_is_object(vocab) || !json_is_array(merges) || (mtype && strcmp(mtype, "BPE"))) {
        tf_fail(err, "model is not BPE (type %s)", mtype ? mtype : "missing");
        goto done;
    }
    if (json_flag(model, "byte_fallback") ||
        (json_string_value(json_object_get(model, "continuing_subword_prefix")) &&
         *json_string_value(json_object_get(model, "continuing_subword_prefix"))) ||
        (json_string_value(json_object_get(model, "end_of_word_suffix")) &&
         *json_string_value(json_object_get(model, "end_of_word_suffix")))) {
        tf_fail(err, "BPE options byte_fallback, continuing_subword_prefix and end_of_word_suffix are not supported");
        goto done;
    }
    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && json_number_value(dropout) != 0.0) {
        tf_fail(err, "BPE dropout is not supported (it makes encoding random)");
        goto done;
    }
    json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm)) {
        tf_fail(err, "normalizers are not supported (byte-level BPE of the Llama-3 kind has none)");
        goto done;
    }
    json_t *dec = json_object_get(root, "decoder");
    const char *dtype = json_string_value(json_object_get(dec, "type"));
    if (dec && !json_is_null(dec) && (!dtype || strcmp(dtype, "ByteLevel"))) {
        tf_fail(err, "decoder type %s is not supported (ByteLevel only)", dtype ? dtype : "missing");
        goto done;
    }
    tok->ignore_merges = json_flag(model, "ignore_merges");

    /* ids: the largest of the vocabulary and the added tokens */
    json_t *added = json_object_get(root, "added_tokens");
    json_int_t max_id = -1;
    const char *key;
    json_t *val;
    size_t max_key = 0;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id >= TOK_MAX_ID) {
            tf_fail(err, "vocab entry has a bad id");
            goto done;
        }
        if (id > max_id)
            max_id = id;
        if (strlen(key) > max_key)
            max_key = strlen(key);
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        json_t *a = json_array_get(added, i);
        json_int_t id = json_integer_value(json_object_get(a, "id"));
        if (!json_is_integer(json_object_get(a, "id")) || id < 0 || id >= TOK_MAX_ID ||
            !json_is_string(json_object_get(a, "content"))) {
            tf_fail(err, "added_tokens[%zu] needs an id below %d and a content", i, TOK_MAX_ID);
            goto done;
        }
        if (id > max_id)
            max_id = id;
    }
    if (max_id < 255) {
        tf_fail(err, "vocabulary has %lld ids: too small for byte-level BPE", (long long)max_id + 1);
        goto done;
    }
    if (alloc_ids(tok, (size_t)max_id + 1, err))
        goto done;
    buf = malloc(max_key + 1);
    if (!buf) {
        tf_fail(err, "out of memory");
        goto done;
    }
    json_object_foreach(vocab, key, val) {
        long n = byte_level_decode(key, strlen(key), unbyte, buf);
        if (n < 0) {
            tf_fail(err, "vocab token \"%.40s\" is outside the byte-level alphabet", key);
            goto done;
        }
        if (set_model_token(b, (int32_t)json_integer_value(val), buf, (size_t)n, err))
            goto done;
    }
    if (build_vocab_hash(tok, err))
        goto done;

    /* merges: "left right" strings (older files) or [left, right] pairs */
    if (merges_init(b, json_array_size(merges), err))
        goto done;
    for (size_t i = 0; i < json_array_size(merges); i++) {
        json_t *m = json_array_get(merges, i);
        const char *l = NULL, *r = NULL;
        size_t ln = 0, rn = 0;
        if (json_is_string(m)) {
            l = json_string_value(m);
            const char *sp = strchr(l, ' ');
            if (!sp) {
                tf_fail(err, "merges[%zu] \"%.40s\" has no space", i, l);
                goto done;
            }
            ln = (size_t)(sp - l);
            r = sp + 1;
            const char *sp2 = strchr(r, ' ');
            rn = sp2 ? (size_t)(sp2 - r) : strlen(r);
        } else if (json_is_array(m) && json_array_size(m) == 2) {
            l = json_string_value(json_array_get(m, 0));
            r = json_string_value(json_array_get(m, 1));
            if (l && r) {
                ln = strlen(l);
                rn = strlen(r);
            }
        }
        if (!l || !r) {
            tf_fail(err, "merges[%zu] is neither \"a b\" nor [a, b]", i);
            goto done;
        }
        int32_t ids[2];
        const char *parts[2] = {l, r};
        size_t lens[2] = {ln, rn};
        for (int k = 0; k < 2; k++) {
            uint8_t small[512];
            uint8_t *tmp = lens[k] <= sizeof small ? small : malloc(lens[k]);
            if (!tmp) {
                tf_fail(err, "out of memory");
                goto done;
            }
            long n = byte_level_decode(parts[k], lens[k], unbyte, tmp);
            ids[k] = n > 0 ? tok_vocab_find(tok, tmp, (size_t)n) : -1;
            if (tmp != small)
                free(tmp);
            if (ids[k] < 0) {
                tf_fail(err, "merges[%zu]: \"%.*s\" is not in the vocabulary", i, (int)(lens[k] > 40 ? 40 : lens[k]),
                        parts[k]);
                goto done;
            }
        }
        if (merge_add(b, ids[0], ids[1], err))
            goto done;
    }

    for (size_t i = 0; i < json_array_size(added); i++) {
        json_t *a = json_array_get(added, i);
        const char *content = json_string_value(json_object_get(a, "content"));
        if (added_add(b, (int32_t)json_integer_value(json_object_get(a, "id")), content,
                      json_string_length(json_object_get(a, "content")), json_flag(a, "special"),
                      json_flag(a, "lstrip"), json_flag(a, "rstrip"), err))
            goto done;
    }
    for (size_t id = 0; id < tok->n_ids; id++)
        if (tok->kind[id] == TOK_KIND_NONE) {
            tf_fail(err, "id %zu has no token (ids must be contiguous)", id);
            goto done;
        }

    if (load_pre_tokenizer(tok, json_object_get(root, "pre_tokenizer"), err) ||
        load_post_processor(tok, json_object_get(root, "post_processor"), err))
        goto done;
    if (tok->n_prefix > 0) {
        tok->bos_id = tok->prefix[0];
    } else {
        tok->bos_id = bos_from_config(tok, path);
        if (tok->bos_id < 0)
            tok->bos_id = tokenizer_token_id(tok, "<|begin_of_text|>");
        if (tok->bos_id >= 0 && tok->n_suffix == 0)
            tok->prefix[tok->n_prefix++] = tok->bos_id;
    }
    rc = 0;
done:
    free(buf);
    return rc;
}

/* ---- tokenizer.model (tiktoken) ------------------------------------------------------------ */

static int load_tiktoken(TokBuild *b, const char *text, size_t len, TfError *err)
{
    Tokenizer *tok = b->tok;
    int rc = -1;
    uint8_t *bytes = NULL;
    /* The file is untrusted: first count its tokens (non-blank lines), and
     * refuse more than ids can hold, so what is allocated follows the
     * tokens, never the line count (a file of newlines allocates nothing). */
    size_t n_lines = 0;
    for (const char *q = text, *end = text + len; q < end;) {
        const char *nl = memchr(q, '\n', (size_t)(end - q));
        const char *le = nl ? nl : end;
        if (le > q && le[-1] == '\r')
            le--;
        n_lines += le > q;
        q = nl ? nl + 1 : end;
    }
    if (n_lines > (size_t)TOK_MAX_ID - LLAMA3_N_SPECIAL) {
        tf_fail(err, "%zu tokens: more than the %d ids this tokenizer supports", n_lines, TOK_MAX_ID);
        goto done;
    }
    /* Meta's loader puts the special tokens right after the base ranks. */
    if (alloc_ids(tok, n_lines + LLAMA3_N_SPECIAL, err))
        goto done;
    size_t count = 0, line_no = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        line_no++;
        if (le > p && le[-1] == '\r')
            le--;
        if (le == p) {
            p = nl ? nl + 1 : end;
            continue;
        }
        const char *sp = memchr(p, ' ', (size_t)(le - p));
        if (!sp) {
            tf_fail(err, "line %zu: expected \"<base64> <rank>\"", line_no);
            goto done;
        }
        size_t n;
        bytes = tf_base64_decode(p, (size_t)(sp - p), &n, err);
        if (!bytes) {
            tf_fail_context(err, "line %zu", line_no);
            goto done;
        }
        char num[24];
        size_t nl_len = (size_t)(le - sp - 1);
        if (nl_len == 0 || nl_len >= sizeof num) {
            tf_fail(err, "line %zu: bad rank", line_no);
            goto done;
        }
        memcpy(num, sp + 1, nl_len);
        num[nl_len] = 0;
        char *e;
        errno = 0;
        long rank = strtol(num, &e, 10);
        if (*e || errno || rank < 0 || (size_t)rank >= n_lines) {
            tf_fail(err, "line %zu: rank %s is not below the number of tokens (%zu)", line_no, num, n_lines);
            goto done;
        }
        if (set_model_token(b, (int32_t)rank, bytes, n, err)) {
            tf_fail_context(err, "line %zu", line_no);
            goto done;
        }
        free(bytes);
        bytes = NULL;
        count++;
        p = nl ? nl + 1 : end;
    }
    if (count < 256) {
        tf_fail(err, "only %zu tokens: not a tiktoken BPE file", count);
        goto done;
    }
    for (size_t id = 0; id < count; id++)
        if (tok->kind[id] != TOK_KIND_MODEL) {
            tf_fail(err, "rank %zu is missing (ranks must be 0..%zu)", id, count - 1);
            goto done;
        }
    tok->n_ids = count + LLAMA3_N_SPECIAL; /* count == n_lines: every non-blank line is a token */
    if (build_vocab_hash(tok, err))
        goto done;

    /* Merges as Hugging Face's TikTokenConverter makes them: for each token
     * in rank order, its splits into two tokens, ordered by (left rank,
     * right rank). */
    if (merges_init(b, count * 2, err))
        goto done;
    int32_t(*local)[2] = malloc(sizeof *local * 1024);
    if (!local) {
        tf_fail(err, "out of memory");
        goto done;
    }
    for (size_t id = 0; id < count; id++) {
        const uint8_t *t = tok->pool + tok->tok_off[id];
        size_t n = tok->tok_len[id], nl = 0;
        for (size_t k = 1; k < n && nl < 1024; k++) {
            int32_t l = tok_vocab_find(tok, t, k), r = tok_vocab_find(tok, t + k, n - k);
            if (l >= 0 && r >= 0) {
                local[nl][0] = l;
                local[nl][1] = r;
                nl++;
            }
        }
        /* insertion sort by (left, right): few splits per token */
        for (size_t x = 1; x < nl; x++) {
            int32_t a = local[x][0], c = local[x][1];
            size_t y = x;
            while (y > 0 && (local[y - 1][0] > a || (local[y - 1][0] == a && local[y - 1][1] > c))) {
                local[y][0] = local[y - 1][0];
                local[y][1] = local[y - 1][1];
                y--;
            }
            local[y][0] = a;
            local[y][1] = c;
        }
        for (size_t x = 0; x < nl; x++) {
            if (merge_add(b, local[x][0], local[x][1], err)) {
                free(local);
                goto done;
            }
        }
    }
    free(local);

    /* Llama-3's special tokens (Meta's tokenizer.py) */
    static const char *const named[10] = {"<|begin_of_text|>",
                                          "<|end_of_text|>",
                                          "<|reserved_special_token_0|>",
                                          "<|reserved_special_token_1|>",
                                          "<|reserved_special_token_2|>",
                                          "<|reserved_special_token_3|>",
                                          "<|start_header_id|>",
                                          "<|end_header_id|>",
                                          "<|reserved_special_token_4|>",
                                          "<|eot_id|>"};
    for (int i = 0; i < LLAMA3_N_SPECIAL; i++) {
        char name[64];
        if (i < 10)
            snprintf(name, sizeof name, "%s", named[i]);
        else
            snprintf(name, sizeof name, "<|reserved_special_token_%d|>", i - 5);
        if (added_add(b, (int32_t)(count + (size_t)i), name, strlen(name), 1, 0, 0, err))
            goto done;
    }
    tok->ignore_merges = 1; /* tiktoken looks a whole piece up first */
    if (stage_compile(&tok->stages[tok->n_stages++], LLAMA3_PATTERN, tok->regex, err))
        goto done;
    tok->bos_id = (int32_t)count;
    tok->prefix[tok->n_prefix++] = tok->bos_id;
    rc = 0;
done:
    free(bytes);
    return rc;
}

/* ---- public --------------------------------------------------------------------------------- */

Tokenizer *tokenizer_load(const char *path, TfError *err)
{
    return tokenizer_load_regex(path, TOKENIZER_REGEX_JS, err);
}

Tokenizer *tokenizer_load_regex(const char *path, TokenizerRegex regex, TfError *err)
{
    TokBuild b = {0};
    size_t len;
    json_t *root = NULL;
    Tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    char *text = tf_read_file(path, TOK_MAX_FILE, &len, err); /* its message names the file */
    if (!text) {
        free(tok);
        return NULL;
    }
    tok->bos_id = -1;
    tok->regex = regex;
    b.tok = tok;
    size_t i = 0;
    while (i < len && isspace((unsigned char)text[i]))
        i++;
    if (i < len && text[i] == '{') {
        json_error_t je;
        root = json_loadb(text, len, 0, &je);
        free(text);
        text = NULL;
        if (!root) {
            tf_fail(err, "line %d column %d: %s", je.line, je.column, je.text);
            goto fail;
        }
        if (load_json(&b, path, root, err))
            goto fail;
    } else {
        if (load_tiktoken(&b, text, len, err))
            goto fail;
    }
    if (compute_identity(&b, err))
        goto fail;
    json_decref(root);
    free(text);
    free(b.pairs);
    return tok;
fail:
    tf_fail_context(err, "%s", path);
    json_decref(root);
    free(text);
    free(b.pairs);
    tokenizer_free(tok);
    return NULL;
}

void tokenizer_free(Tokenizer *tok)
{
    if (!tok)
        return;
    for (int i = 0; i < tok->n_stages; i++) {
        free(tok->stages[i].source);
        pcre2_code_free(tok->stages[i].code);
    }
    free(tok->tok_off);
    free(tok->tok_len);
    free(tok->kind);
    free(tok->pool);
    free(tok->vocab_slots);
    free(tok->merge_slots);
    free(tok->added);
    free(tok->trie);
    free(tok);
}

size_t tokenizer_vocab_size(const Tokenizer *tok)
{
    return tok->n_ids;
}

int32_t tokenizer_bos_id(const Tokenizer *tok)
{
    return tok->bos_id;
}

const char *tokenizer_identity(const Tokenizer *tok)
{
    return tok->identity;
}

int32_t tokenizer_token_id(const Tokenizer *tok, const char *text)
{
    size_t n = strlen(text);
    for (size_t i = 0; i < tok->n_added; i++) {
        int32_t id = tok->added[i].id;
        if (tok->tok_len[id] == n && !memcmp(tok->pool + tok->tok_off[id], text, n))
            return id;
    }
    int unbyte[324];
    uint32_t byte_cp[256];
    byte_level_tables(byte_cp, unbyte);
    uint8_t *buf = malloc(n + 1);
    if (!buf)
        return -1;
    long k = byte_level_decode(text, n, unbyte, buf);
    int32_t id = k > 0 ? tok_vocab_find(tok, buf, (size_t)k) : -1;
    free(buf);
    return id;
}

void token_ids_deinit(TokenIds *ids)
{
    free(ids->ids);
    ids->ids = NULL;
    ids->len = ids->cap = 0;
}

int tokenizer_decode(const Tokenizer *tok, const int32_t *ids, size_t n, int raw, char **text, size_t *len,
                     TfError *err)
{
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= tok->n_ids)
            return tf_fail(err, "id %lld at position %zu is outside the vocabulary (0..%zu)", (long long)ids[i], i,
                           tok->n_ids - 1);
        total += tok->tok_len[ids[i]];
    }
    /* Runs of model tokens are decoded as UTF-8 together; replacement can
     * triple their size. */
    if (total > SIZE_MAX / 3 - 1)
        return tf_fail(err, "decoded text too large");
    uint8_t *out = malloc(total * 3 + 1), *run = malloc(total + 1);
    if (!out || !run) {
        free(out);
        free(run);
        return tf_fail(err, "out of memory");
    }
    size_t o = 0, r = 0;
    for (size_t i = 0; i <= n; i++) {
        int model = i < n && tok->kind[ids[i]] == TOK_KIND_MODEL;
        if (model) {
            memcpy(run + r, tok->pool + tok->tok_off[ids[i]], tok->tok_len[ids[i]]);
            r += tok->tok_len[ids[i]];
            continue;
        }
        if (r) {
            if (raw) {
                memcpy(out + o, run, r);
                o += r;
            } else {
                o += tok_utf8_sanitize(run, r, out + o);
            }
            r = 0;
        }
        if (i < n) {
            memcpy(out + o, tok->pool + tok->tok_off[ids[i]], tok->tok_len[ids[i]]);
            o += tok->tok_len[ids[i]];
        }
    }
    free(run);
    out[o] = 0;
    *text = (char *)out;
    *len = o;
    return 0;
}
