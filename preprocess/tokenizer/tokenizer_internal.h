/* tokenizer_internal.h: the loaded tokenizer's tables, shared by the
 * loaders (tokenizer.c), the encoder (tokenizer_encode.c) and the tests.
 * Nothing outside preprocess/ and its tests includes this. */
#ifndef TRANSFUSE_TOKENIZER_INTERNAL_H
#define TRANSFUSE_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <string.h>

#include "preprocess.h"

#define TOK_MAX_STAGES 2
#define TOK_MAX_TEMPLATE 8
#define TOK_MAX_TEXT ((size_t)1 << 30) /* per encode call */

/* Kinds of id, for decoding and identity. */
enum { TOK_KIND_NONE = 0, TOK_KIND_MODEL = 1, TOK_KIND_ADDED = 2, TOK_KIND_SPECIAL = 3 };

/* One pre-tokenizer regex stage: pieces matching the pattern and the gaps
 * between them become pieces ("Isolated" split). */
typedef struct TokStage {
    char *source;     /* the pattern as written in the file */
    pcre2_code *code; /* compiled from the translated pattern */
    int jit;          /* JIT compiled */
} TokStage;

/* A node of the added-token trie (first-child / next-sibling lists). */
typedef struct TokTrieNode {
    int32_t child, sibling; /* node indexes, -1 for none */
    int32_t token;          /* id ending here, -1 for none */
    uint8_t byte;
} TokTrieNode;

/* One slot of the vocabulary hash: everything a lookup needs sits in one
 * cache line (the tag rejects most mismatches without touching the pool). */
typedef struct TokVocabSlot {
    uint64_t off; /* the token's bytes in the pool */
    uint32_t id1; /* id + 1; 0 = empty */
    uint16_t len; /* model tokens are at most TOK_MAX_TOKEN bytes */
    uint16_t tag; /* high bits of the hash */
} TokVocabSlot;
#define TOK_MAX_TOKEN 65535

/* One slot of the merge hash. */
typedef struct TokMergeSlot {
    uint64_t key; /* left << 32 | right; UINT64_MAX = empty */
    uint32_t rank;
    int32_t result;
} TokMergeSlot;

typedef struct TokAdded {
    int32_t id;
    int special, lstrip, rstrip;
} TokAdded;

struct Tokenizer {
    size_t n_ids;          /* one past the largest id */
    uint64_t *tok_off;     /* (n_ids) offset of each id's bytes in pool */
    uint32_t *tok_len;     /* (n_ids) */
    uint8_t *kind;         /* (n_ids) TOK_KIND_* */
    uint8_t *pool;         /* token bytes (model tokens raw, added tokens as text) */
    size_t pool_len;

    /* model vocabulary: raw bytes -> id (open addressing) */
    TokVocabSlot *vocab_slots;
    size_t vocab_mask;
    int32_t byte_id[256]; /* id of each single byte */

    /* merges: (left << 32 | right) -> rank and result id */
    TokMergeSlot *merge_slots;
    size_t merge_mask;
    size_t n_merges;

    int ignore_merges;
    TokenizerRegex regex;
    int n_stages;
    TokStage stages[TOK_MAX_STAGES];
    int prefix_space; /* ByteLevel add_prefix_space on pieces entering BPE */

    TokAdded *added; /* (n_added) */
    size_t n_added;
    TokTrieNode *trie; /* root is node 0 */
    size_t n_trie, cap_trie;
    uint8_t first_byte[256]; /* 1 if some added token starts with it */

    int32_t prefix[TOK_MAX_TEMPLATE], suffix[TOK_MAX_TEMPLATE];
    int n_prefix, n_suffix;
    int32_t bos_id;

    char identity[65];
};

/* Hash of a byte string used by every table here. */
static inline uint64_t tok_hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)p[i] << (8 * i);
    h = (h ^ w) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    return h;
}

static inline uint64_t tok_hash_pair(uint64_t key)
{
    key *= 0x9e3779b97f4a7c15ull;
    return key ^ (key >> 32);
}

/* Model-vocabulary id of raw bytes, or -1. */
int32_t tok_vocab_find(const Tokenizer *tok, const uint8_t *p, size_t n);

/* Looks up a merge of (left, right): returns its rank and sets *result,
 * or returns UINT32_MAX. */
static inline uint32_t tok_merge_find(const Tokenizer *tok, int32_t left, int32_t right, int32_t *result)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t i = tok_hash_pair(key) & tok->merge_mask;
    for (;;) {
        const TokMergeSlot *m = &tok->merge_slots[i];
        if (m->key == key) {
            *result = m->result;
            return m->rank;
        }
        if (m->key == UINT64_MAX)
            return UINT32_MAX;
        i = (i + 1) & tok->merge_mask;
    }
}

/* Byte-pair merges of one piece, starting from its single bytes, with the
 * linear scan (heap = 0) or the heap (heap = 1) algorithm. Writes at most n
 * ids to out and returns their count, or -1 when out of memory. Exposed for
 * the tests, which check both give the same result. */
long tok_bpe_piece(const Tokenizer *tok, const uint8_t *p, size_t n, int heap, int32_t *out);

/* Translates a pattern written for JavaScript / Oniguruma into PCRE2 syntax
 * with the meaning `regex` selects (see tokenizer.c). Returns a malloc'd
 * string or NULL with err filled. */
char *tok_pattern_translate(const char *src, TokenizerRegex regex, TfError *err);

/* Replaces maximal invalid UTF-8 subparts with U+FFFD. Returns the number of
 * bytes written to out, which must hold 3 * n bytes. */
size_t tok_utf8_sanitize(const uint8_t *in, size_t n, uint8_t *out);

/* Returns 1 when the n bytes are valid UTF-8. */
int tok_utf8_valid(const uint8_t *p, size_t n);

#endif
