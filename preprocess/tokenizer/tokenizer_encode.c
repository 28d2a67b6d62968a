/* tokenizer_encode.c: text -> ids for a loaded Tokenizer.
 *
 * The steps are those of the Hugging Face pipeline: replace invalid UTF-8,
 * cut out added tokens (longest match, left to right), split each section
 * with the pre-tokenizer regex (matches and the gaps between them become
 * pieces), then byte-pair-merge each piece. Merges work on ids: a piece
 * starts as the ids of its single bytes and the adjacent pair with the
 * lowest merge rank (leftmost on ties) is replaced by its merged id until
 * no pair has a merge. Short pieces use a linear scan over a small array
 * (fastest for the few bytes of a typical word); long ones a binary heap
 * with a linked list, so a 1 MB word costs O(n log n), not O(n^2). Each
 * session keeps a cache of piece -> ids, since caption words repeat. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

#define LINEAR_MAX 96          /* pieces up to this many bytes use the linear scan */
#define CACHE_PIECE_MAX 128    /* longer pieces are not cached */
#define CACHE_SLOTS (1u << 16) /* cache entries before it is cleared: 3/4 of this */
#define JIT_STACK_MAX (64u << 20)

typedef struct CacheSlot {
    uint64_t hash;
    uint32_t key_off, val_off;
    uint16_t key_len, val_len; /* key_len 0: empty */
} CacheSlot;

struct TokenizerSession {
    const Tokenizer *tok;
    pcre2_match_data *md[TOK_MAX_STAGES];
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    uint8_t *clean; /* sanitized copy of invalid UTF-8 input */
    size_t clean_cap;
    uint8_t *prefixed; /* piece with a prefix space */
    size_t prefixed_cap;
    int32_t *bpe_ids; /* scratch for one piece */
    size_t bpe_cap;

    CacheSlot *cache;
    size_t cache_count;
    uint8_t *cache_keys;
    size_t cache_keys_len, cache_keys_cap;
    int32_t *cache_vals;
    size_t cache_vals_len, cache_vals_cap;
};

/* ---- BPE on one piece ------------------------------------------------------------ */

/* Linear scan: ids in out[0..m), ranks[i] is the rank of (out[i], out[i+1]). */
static long bpe_linear(const Tokenizer *tok, const uint8_t *p, size_t n, int32_t *out)
{
    uint32_t ranks[LINEAR_MAX];
    int32_t results[LINEAR_MAX];
    for (size_t i = 0; i < n; i++)
        out[i] = tok->byte_id[p[i]];
    for (size_t i = 0; i + 1 < n; i++)
        ranks[i] = tok_merge_find(tok, out[i], out[i + 1], &results[i]);
    size_t m = n;
    while (m > 1) {
        uint32_t best = UINT32_MAX;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < m; i++)
            if (ranks[i] < best) {
                best = ranks[i];
                bi = i;
            }
        if (best == UINT32_MAX)
            break;
        out[bi] = results[bi];
        /* drop element bi + 1 */
        size_t tail = m - bi - 2; /* ids after bi + 1 */
        memmove(out + bi + 1, out + bi + 2, tail * sizeof *out);
        if (tail > 1) {
            memmove(ranks + bi + 1, ranks + bi + 2, (tail - 1) * sizeof *ranks);
            memmove(results + bi + 1, results + bi + 2, (tail - 1) * sizeof *results);
        }
        m--;
        if (bi + 1 < m)
            ranks[bi] = tok_merge_find(tok, out[bi], out[bi + 1], &results[bi]);
        if (bi > 0)
            ranks[bi - 1] = tok_merge_find(tok, out[bi - 1], out[bi], &results[bi - 1]);
    }
    return (long)m;
}

/* Min-heap of uint64 keys rank << 32 | position: lowest rank first, then
 * leftmost, the order the reference merges in. */
static void heap_sift_down(uint64_t *h, size_t n, size_t i)
{
    uint64_t v = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && h[c + 1] < h[c])
            c++;
        if (h[c] >= v)
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t v)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h[parent] <= v)
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = v;
}

/* Heap of candidate pairs with lazy deletion. rank_at[i] is the rank of
 * the pair that starts at live node i (UINT32_MAX for none or a dead
 * node); a popped key whose rank differs is stale. Ranks are unique per
 * pair, so an equal rank means the same pair. */
static long bpe_heap(const Tokenizer *tok, const uint8_t *p, size_t n, int32_t *out)
{
    if (n >= UINT32_MAX || n > SIZE_MAX / 32)
        return -1;
    int32_t *next = malloc(n * sizeof *next), *prev = malloc(n * sizeof *prev);
    int32_t *res_at = malloc(n * sizeof *res_at);
    uint32_t *rank_at = malloc(n * sizeof *rank_at);
    uint64_t *heap = malloc(3 * n * sizeof *heap); /* n - 1 initial pairs + 2 per merge */
    long m = -1;
    if (!next || !prev || !res_at || !rank_at || !heap)
        goto done;
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        out[i] = tok->byte_id[p[i]];
        next[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        prev[i] = (int32_t)i - 1;
    }
    rank_at[n - 1] = UINT32_MAX;
    for (size_t i = 0; i + 1 < n; i++) {
        rank_at[i] = tok_merge_find(tok, out[i], out[i + 1], &res_at[i]);
        if (rank_at[i] != UINT32_MAX)
            heap[hn++] = (uint64_t)rank_at[i] << 32 | i;
    }
    for (size_t i = hn / 2; i-- > 0;)
        heap_sift_down(heap, hn, i);
    while (hn > 0) {
        uint64_t key = heap[0];
        heap[0] = heap[--hn];
        if (hn)
            heap_sift_down(heap, hn, 0);
        int32_t l = (int32_t)(uint32_t)key;
        if (rank_at[l] != (uint32_t)(key >> 32))
            continue;
        int32_t r = next[l];
        out[l] = res_at[l];
        rank_at[r] = UINT32_MAX;
        next[l] = next[r];
        if (next[r] >= 0)
            prev[next[r]] = l;
        if (next[l] >= 0) {
            rank_at[l] = tok_merge_find(tok, out[l], out[next[l]], &res_at[l]);
            if (rank_at[l] != UINT32_MAX)
                heap_push(heap, &hn, (uint64_t)rank_at[l] << 32 | (uint32_t)l);
        } else {
            rank_at[l] = UINT32_MAX;
        }
        if (prev[l] >= 0) {
            int32_t q = prev[l];
            rank_at[q] = tok_merge_find(tok, out[q], out[l], &res_at[q]);
            if (rank_at[q] != UINT32_MAX)
                heap_push(heap, &hn, (uint64_t)rank_at[q] << 32 | (uint32_t)q);
        }
    }
    m = 0;
    for (int32_t i = 0; i >= 0; i = next[i])
        out[m++] = out[i];
done:
    free(next);
    free(prev);
    free(res_at);
    free(rank_at);
    free(heap);
    return m;
}

long tok_bpe_piece(const Tokenizer *tok, const uint8_t *p, size_t n, int heap, int32_t *out)
{
    if (n == 0)
        return 0;
    if (!heap && n <= LINEAR_MAX)
        return bpe_linear(tok, p, n, out);
    return bpe_heap(tok, p, n, out);
}

/* ---- session ----------------------------------------------------------------------- */

TokenizerSession *tokenizer_session_new(const Tokenizer *tok, TfError *err)
{
    TokenizerSession *s = calloc(1, sizeof *s);
    if (!s)
        goto oom;
    s->tok = tok;
    for (int i = 0; i < tok->n_stages; i++) {
        s->md[i] = pcre2_match_data_create_from_pattern(tok->stages[i].code, NULL);
        if (!s->md[i])
            goto oom;
    }
    s->mctx = pcre2_match_context_create(NULL);
    s->jit_stack = pcre2_jit_stack_create(64 * 1024, JIT_STACK_MAX, NULL);
    s->cache = calloc(CACHE_SLOTS, sizeof *s->cache);
    if (!s->mctx || !s->jit_stack || !s->cache)
        goto oom;
    pcre2_jit_stack_assign(s->mctx, NULL, s->jit_stack);
    return s;
oom:
    tokenizer_session_free(s);
    tf_fail(err, "out of memory");
    return NULL;
}

void tokenizer_session_free(TokenizerSession *s)
{
    if (!s)
        return;
    for (int i = 0; i < TOK_MAX_STAGES; i++)
        pcre2_match_data_free(s->md[i]);
    pcre2_match_context_free(s->mctx);
    pcre2_jit_stack_free(s->jit_stack);
    free(s->clean);
    free(s->prefixed);
    free(s->bpe_ids);
    free(s->cache);
    free(s->cache_keys);
    free(s->cache_vals);
    free(s);
}

static int grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem)
            return -1;
        c *= 2;
    }
    void *nb = realloc(*buf, c * elem);
    if (!nb)
        return -1;
    *buf = nb;
    *cap = c;
    return 0;
}

static int ids_push(TokenIds *out, const int32_t *ids, size_t n)
{
    if (!n) /* an empty array may still have no storage: no arithmetic on NULL */
        return 0;
    if (grow((void **)&out->ids, &out->cap, out->len + n, sizeof *out->ids))
        return -1;
    memcpy(out->ids + out->len, ids, n * sizeof *ids);
    out->len += n;
    return 0;
}

static void cache_clear(TokenizerSession *s)
{
    memset(s->cache, 0, CACHE_SLOTS * sizeof *s->cache);
    s->cache_count = 0;
    s->cache_keys_len = 0;
    s->cache_vals_len = 0;
}

static const CacheSlot *cache_find(const TokenizerSession *s, const uint8_t *p, size_t n, uint64_t h)
{
    size_t i = h & (CACHE_SLOTS - 1);
    for (;;) {
        const CacheSlot *c = &s->cache[i];
        if (!c->key_len)
            return NULL;
        if (c->hash == h && c->key_len == n && !memcmp(s->cache_keys + c->key_off, p, n))
            return c;
        i = (i + 1) & (CACHE_SLOTS - 1);
    }
}

/* Remembers a piece's ids; a full cache starts over (cheap, and captions
 * from one source reuse the same few thousand words). Failure to grow is
 * not an error: the piece is just not cached. */
static void cache_put(TokenizerSession *s, const uint8_t *p, size_t n, uint64_t h, const int32_t *ids, size_t m)
{
    if (s->cache_count >= CACHE_SLOTS / 4 * 3 || s->cache_keys_len + n > UINT32_MAX ||
        s->cache_vals_len + m > UINT32_MAX)
        cache_clear(s);
    if (grow((void **)&s->cache_keys, &s->cache_keys_cap, s->cache_keys_len + n, 1) ||
        grow((void **)&s->cache_vals, &s->cache_vals_cap, s->cache_vals_len + m, sizeof(int32_t)))
        return;
    size_t i = h & (CACHE_SLOTS - 1);
    while (s->cache[i].key_len)
        i = (i + 1) & (CACHE_SLOTS - 1);
    CacheSlot *c = &s->cache[i];
    c->hash = h;
    c->key_off = (uint32_t)s->cache_keys_len;
    c->key_len = (uint16_t)n;
    c->val_off = (uint32_t)s->cache_vals_len;
    c->val_len = (uint16_t)m;
    memcpy(s->cache_keys + s->cache_keys_len, p, n);
    memcpy(s->cache_vals + s->cache_vals_len, ids, m * sizeof *ids);
    s->cache_keys_len += n;
    s->cache_vals_len += m;
    s->cache_count++;
}

/* ---- pieces --------------------------------------------------------------------------- */

static int encode_piece(TokenizerSession *s, const uint8_t *p, size_t n, TokenIds *out, TfError *err)
{
    const Tokenizer *tok = s->tok;
    if (tok->prefix_space && n > 0 && p[0] != ' ') {
        if (grow((void **)&s->prefixed, &s->prefixed_cap, n + 1, 1))
            return tf_fail(err, "out of memory");
        s->prefixed[0] = ' ';
        memcpy(s->prefixed + 1, p, n);
        p = s->prefixed;
        n++;
    }
    if (n == 0)
        return 0;
    if (n == 1)
        return ids_push(out, &tok->byte_id[p[0]], 1) ? tf_fail(err, "out of memory") : 0;
    if (tok->ignore_merges) {
        int32_t id = tok_vocab_find(tok, p, n);
        if (id >= 0)
            return ids_push(out, &id, 1) ? tf_fail(err, "out of memory") : 0;
    }
    uint64_t h = 0;
    if (n <= CACHE_PIECE_MAX) {
        h = tok_hash_bytes(p, n);
        const CacheSlot *c = cache_find(s, p, n, h);
        if (c)
            return ids_push(out, s->cache_vals + c->val_off, c->val_len) ? tf_fail(err, "out of memory") : 0;
    }
    if (grow((void **)&s->bpe_ids, &s->bpe_cap, n, sizeof *s->bpe_ids))
        return tf_fail(err, "out of memory");
    long m = tok_bpe_piece(tok, p, n, 0, s->bpe_ids);
    if (m < 0)
        return tf_fail(err, "out of memory");
    if (n <= CACHE_PIECE_MAX)
        cache_put(s, p, n, h, s->bpe_ids, (size_t)m);
    return ids_push(out, s->bpe_ids, (size_t)m) ? tf_fail(err, "out of memory") : 0;
}

static size_t utf8_char_len(uint8_t c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Splits by the regex of `stage`: every match and every gap between matches
 * is a piece, handed to the next stage (or to BPE after the last). */
static int split_stage(TokenizerSession *s, int stage, const uint8_t *p, size_t n, TokenIds *out, TfError *err)
{
    const Tokenizer *tok = s->tok;
    if (stage == tok->n_stages)
        return encode_piece(s, p, n, out, err);
    const TokStage *st = &tok->stages[stage];
    pcre2_match_data *md = s->md[stage];
    size_t gap = 0, pos = 0;
    while (pos < n) {
        int rc = st->jit ? pcre2_jit_match(st->code, p, n, pos, 0, md, s->mctx)
                         : pcre2_match(st->code, p, n, pos, PCRE2_NO_UTF_CHECK, md, s->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return tf_fail(err, "split pattern failed: %s", (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        if (a > gap && split_stage(s, stage + 1, p + gap, a - gap, out, err))
            return -1;
        if (b > a && split_stage(s, stage + 1, p + a, b - a, out, err))
            return -1;
        gap = b;
        pos = b > a ? b : a + utf8_char_len(p[a]); /* an empty match moves on one character */
    }
    if (gap < n && split_stage(s, stage + 1, p + gap, n - gap, out, err))
        return -1;
    return 0;
}

/* Length of the JavaScript white space (String.prototype.trim's set) that
 * starts at p, or 0. */
static size_t js_space_at(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    if (c == ' ' || (c >= '\t' && c <= '\r'))
        return 1;
    if (n >= 2 && c == 0xC2 && p[1] == 0xA0)
        return 2;
    if (n >= 3 && c == 0xE1 && p[1] == 0x9A && p[2] == 0x80)
        return 3;
    if (n >= 3 && c == 0xE2 && p[1] == 0x80 && (p[2] <= 0x8A || p[2] == 0xA8 || p[2] == 0xA9 || p[2] == 0xAF))
        return 3;
    if (n >= 3 && c == 0xE2 && p[1] == 0x81 && p[2] == 0x9F)
        return 3;
    if (n >= 3 && c == 0xE3 && p[1] == 0x80 && p[2] == 0x80)
        return 3;
    if (n >= 3 && c == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
        return 3;
    return 0;
}

static size_t trim_start(const uint8_t *p, size_t n)
{
    size_t i = 0, k;
    while (i < n && (k = js_space_at(p + i, n - i)))
        i += k;
    return i;
}

static size_t trim_end(const uint8_t *p, size_t n)
{
    /* walk forward, remembering where the trailing run of space began */
    size_t i = 0, run = 0, k;
    while (i < n) {
        if ((k = js_space_at(p + i, n - i))) {
            i += k;
        } else {
            i += utf8_char_len(p[i]);
            run = i;
        }
    }
    return run > n ? n : run;
}

int tokenizer_encode(TokenizerSession *s, const char *text, size_t len, unsigned flags, TokenIds *out,
                     TfError *err)
{
    const Tokenizer *tok = s->tok;
    size_t start_len = out->len;
    if (len > TOK_MAX_TEXT)
        return tf_fail(err, "text of %zu bytes is over the limit of %zu", len, TOK_MAX_TEXT);
    const uint8_t *p = (const uint8_t *)text;
    if (!tok_utf8_valid(p, len)) {
        if (grow((void **)&s->clean, &s->clean_cap, 3 * len, 1))
            return tf_fail(err, "out of memory");
        len = tok_utf8_sanitize(p, len, s->clean);
        p = s->clean;
    }
    if ((flags & TOKENIZER_ADD_BOS) && ids_push(out, tok->prefix, (size_t)tok->n_prefix))
        goto oom;
    int specials = !(flags & TOKENIZER_SPECIALS_AS_TEXT);
    size_t sec = 0, i = 0;
    int strip_next = 0;
    while (i < len) {
        if (!tok->first_byte[p[i]]) {
            i++;
            continue;
        }
        int32_t node = 0, best = -1;
        size_t best_len = 0;
        for (size_t j = i; j < len; j++) {
            int32_t c = tok->trie[node].child;
            while (c >= 0 && tok->trie[c].byte != p[j])
                c = tok->trie[c].sibling;
            if (c < 0)
                break;
            node = c;
            int32_t id = tok->trie[c].token;
            if (id >= 0 && (specials || tok->kind[id] != TOK_KIND_SPECIAL)) {
                best = id;
                best_len = j - i + 1;
            }
        }
        if (best < 0) {
            i++;
            continue;
        }
        const TokAdded *a = NULL;
        for (size_t k = 0; k < tok->n_added; k++)
            if (tok->added[k].id == best) {
                a = &tok->added[k];
                break;
            }
        const uint8_t *sp = p + sec;
        size_t sn = i - sec;
        if (strip_next) {
            size_t t = trim_start(sp, sn);
            sp += t;
            sn -= t;
        }
        if (a && a->lstrip)
            sn = trim_end(sp, sn);
        if (sn && split_stage(s, 0, sp, sn, out, err))
            goto fail;
        if (ids_push(out, &best, 1))
            goto oom;
        strip_next = a && a->rstrip;
        i += best_len;
        sec = i;
    }
    if (sec < len) {
        const uint8_t *sp = p + sec;
        size_t sn = len - sec;
        if (strip_next) {
            size_t t = trim_start(sp, sn);
            sp += t;
            sn -= t;
        }
        if (sn && split_stage(s, 0, sp, sn, out, err))
            goto fail;
    }
    if ((flags & TOKENIZER_ADD_BOS) && ids_push(out, tok->suffix, (size_t)tok->n_suffix))
        goto oom;
    return 0;
oom:
    tf_fail(err, "out of memory");
fail:
    out->len = start_len;
    return -1;
}
