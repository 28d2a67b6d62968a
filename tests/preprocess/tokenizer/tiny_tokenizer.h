/* tiny_tokenizer.h: writes a small but complete byte-level BPE
 * tokenizer.json (Llama-3's split pattern, 256 byte tokens, a few dozen
 * merges, added tokens and a BOS template) for the unit test and the
 * fuzzer. */
#ifndef TINY_TOKENIZER_H
#define TINY_TOKENIZER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define TINY_PATTERN                                                                                             \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* The byte-level form of a byte string, UTF-8 encoded into out. */
static inline void tiny_byte_level(const char *raw, char *out)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)raw; *p; p++) {
        int b = *p, printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        unsigned cp;
        if (printable) {
            cp = (unsigned)b;
        } else {
            int n = 0;
            for (int c = 0; c < b; c++) {
                int pr = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255);
                n += !pr;
            }
            cp = 256u + (unsigned)n;
        }
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else {
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[o] = 0;
}

/* Merges in rank order, as raw byte strings "left" "right". */
static const char *const TINY_MERGES[][2] = {
    {"a", "a"},  {"aa", "aa"}, {" ", "t"},  {"h", "e"},   {" t", "he"}, {"i", "n"}, {"in", "g"},
    {" ", " "},  {"  ", "  "}, {"c", "a"},  {"ca", "t"},  {" ", "cat"}, {"o", "g"}, {"d", "og"},
    {" ", "dog"}, {"1", "2"},  {"12", "3"}, {"'", "s"},   {"a", "b"},   {"ab", "a"}, {"b", "a"},
    {"\xc3", "\xa9"}, {"\xe4\xb8", "\xad"}, {"\xe4", "\xb8"}, {"\n", "\n"}, {" ", "\n"}, {"\xc5", "\xbf"}, {"\xc5\xbf", "x"},
};
#define TINY_N_MERGES (sizeof TINY_MERGES / sizeof TINY_MERGES[0])
#define TINY_BOS 512
#define TINY_ADDED 513

/* Writes the tokenizer.json to path. Returns 0 or -1. */
static inline int tiny_tokenizer_write(const char *path)
{
    json_t *root = json_object(), *model = json_object(), *vocab = json_object(), *merges = json_array();
    char a[64], b[64], ab[128];
    for (int c = 0; c < 256; c++) {
        char raw[2] = {(char)c, 0};
        if (c == 0) {
            /* NUL: byte-level form of byte 0 is U+0100 */
            json_object_set_new(vocab, "\xc4\x80", json_integer(0));
            continue;
        }
        tiny_byte_level(raw, a);
        json_object_set_new(vocab, a, json_integer(c));
    }
    for (size_t i = 0; i < TINY_N_MERGES; i++) {
        char raw[128];
        snprintf(raw, sizeof raw, "%s%s", TINY_MERGES[i][0], TINY_MERGES[i][1]);
        tiny_byte_level(TINY_MERGES[i][0], a);
        tiny_byte_level(TINY_MERGES[i][1], b);
        tiny_byte_level(raw, ab);
        if (!json_object_get(vocab, ab))
            json_object_set_new(vocab, ab, json_integer(256 + (json_int_t)i));
        char m[160];
        snprintf(m, sizeof m, "%s %s", a, b);
        json_array_append_new(merges, json_string(m));
    }
    /* ids must be contiguous: fill the gap up to TINY_BOS with long tokens */
    json_int_t next = 256 + (json_int_t)TINY_N_MERGES;
    for (json_int_t id = next; id < TINY_BOS; id++) {
        char t[32];
        snprintf(t, sizeof t, "zz%lldq", (long long)id);
        json_object_set_new(vocab, t, json_integer(id));
    }
    json_object_set_new(model, "type", json_string("BPE"));
    json_object_set_new(model, "ignore_merges", json_true());
    json_object_set_new(model, "vocab", vocab);
    json_object_set_new(model, "merges", merges);
    json_object_set_new(root, "model", model);
    json_object_set_new(root, "normalizer", json_null());
    json_t *added = json_array();
    json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b}", "id", TINY_BOS, "content", "<|bos|>", "special",
                                           1, "lstrip", 0, "rstrip", 0));
    json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b}", "id", TINY_ADDED, "content", "<x>", "special", 0,
                                           "lstrip", 1, "rstrip", 1));
    json_object_set_new(root, "added_tokens", added);
    json_object_set_new(
        root, "pre_tokenizer",
        json_pack("{s:s,s:[{s:s,s:{s:s},s:s,s:b},{s:s,s:b,s:b,s:b}]}", "type", "Sequence", "pretokenizers", "type",
                  "Split", "pattern", "Regex", TINY_PATTERN, "behavior", "Isolated", "invert", 0, "type", "ByteLevel",
                  "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0));
    json_object_set_new(root, "post_processor",
                        json_pack("{s:s,s:[{s:{s:s,s:i}},{s:{s:s,s:i}}],s:{s:{s:s,s:[i],s:[s]}}}", "type",
                                  "TemplateProcessing", "single", "SpecialToken", "id", "<|bos|>", "type_id", 0,
                                  "Sequence", "id", "A", "type_id", 0, "special_tokens", "<|bos|>", "id", "<|bos|>",
                                  "ids", TINY_BOS, "tokens", "<|bos|>"));
    json_object_set_new(root, "decoder", json_pack("{s:s}", "type", "ByteLevel"));
    int rc = json_dump_file(root, path, 0);
    json_decref(root);
    return rc;
}

#endif
