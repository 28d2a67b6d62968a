/* test_safetensors.c: the safetensors reader and writer (core/) and the
 * round trips in F32/F16/BF16, exact 16-bit conversions, hostile headers
 * (truncated, header length past the end, offsets out of range, overlaps,
 * unknown dtype, misshapen) and sharded checkpoints, each failing with a
 * message that names the file and the tensor. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "test.h"

static char tmpdir[256];

/* A file image: 8-byte length, header, then data_len bytes of data. */
static unsigned char *make_file(const char *header, size_t data_len, size_t *len)
{
    size_t h = strlen(header);
    *len = 8 + h + data_len;
    unsigned char *b = calloc(1, *len);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    for (size_t i = 0; i < data_len; i++)
        b[8 + h + i] = (unsigned char)(i * 7);
    return b;
}

/* Opening must fail and the message must hold every `want` string. */
static void expect_bad(const char *what, const char *header, size_t data_len, const char *want1, const char *want2)
{
    size_t len;
    unsigned char *b = make_file(header, data_len, &len);
    TfError err = {{0}};
    TfSafetensors *st = tf_safetensors_open_memory(b, len, "hostile.safetensors", &err);
    CHECKF(st == NULL, "%s: accepted", what);
    tf_safetensors_free(st);
    CHECKF(strstr(err.msg, "hostile.safetensors") != NULL, "%s: message lacks the file: %s", what, err.msg);
    if (want1)
        CHECKF(strstr(err.msg, want1) != NULL, "%s: message lacks '%s': %s", what, want1, err.msg);
    if (want2)
        CHECKF(strstr(err.msg, want2) != NULL, "%s: message lacks '%s': %s", what, want2, err.msg);
    free(b);
}

static void test_hostile(void)
{
    expect_bad("unknown dtype", "{\"w\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, "'w'", "Q4");
    expect_bad("offsets past data", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12, "'w'",
               "outside");
    expect_bad("begin after end", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 12, "'w'",
               NULL);
    expect_bad("negative offset", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 12, "'w'",
               NULL);
    expect_bad("shape vs bytes", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "'w'",
               "byte range");
    expect_bad("overflowing shape",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,8]}}", 8, "'w'",
               NULL);
    expect_bad("negative dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 8, "'w'", NULL);
    expect_bad("overlap",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, "overlap", "'b'");
    expect_bad("not an object", "[1,2]", 0, "object", NULL);
    expect_bad("bad json", "{\"w\":", 0, "JSON", NULL);
    expect_bad("duplicate key",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, NULL, NULL);
    expect_bad("metadata not strings", "{\"__metadata__\":{\"a\":1}}", 0, "__metadata__", NULL);
    expect_bad("dtype missing", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w'", "dtype");
    expect_bad("offsets not integers", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.5]}}", 8,
               "'w'", NULL);
    expect_bad("too many dims", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
               "'w'", NULL);

    /* Header length past the end, and every truncation of a valid file. */
    size_t len;
    unsigned char *b = make_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, &len);
    TfError err = {{0}};
    TfSafetensors *st = tf_safetensors_open_memory(b, len, "ok.safetensors", &err);
    CHECKF(st != NULL, "valid file rejected: %s", err.msg);
    tf_safetensors_free(st);
    for (size_t cut = 0; cut < len; cut++) {
        unsigned char *c = malloc(cut ? cut : 1); /* exact size: ASan sees any read past it */
        memcpy(c, b, cut);
        st = tf_safetensors_open_memory(c, cut, "cut.safetensors", &err);
        CHECKF(st == NULL, "truncated to %zu bytes accepted", cut);
        tf_safetensors_free(st);
        free(c);
    }
    b[0] = 0xff; /* header length far beyond the file */
    b[3] = 0x7f;
    st = tf_safetensors_open_memory(b, len, "long.safetensors", &err);
    CHECK(st == NULL);
    CHECKF(strstr(err.msg, "long.safetensors") && strstr(err.msg, "header length"), "%s", err.msg);
    free(b);

    /* An I64 tensor is a valid file, but does not convert to f32. */
    b = make_file("{\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, &len);
    st = tf_safetensors_open_memory(b, len, "ints.safetensors", &err);
    REQUIRE(st != NULL);
    float f;
    CHECK(tf_tensor_to_f32(tf_safetensors_find(st, "i"), &f, 1, &err) == -1);
    CHECKF(strstr(err.msg, "ints.safetensors") && strstr(err.msg, "'i'") && strstr(err.msg, "I64"), "%s", err.msg);
    tf_safetensors_free(st);
    free(b);
}

static void test_conversions(void)
{
    /* Known values. */
    CHECK(tf_f16_to_f32(0x3c00) == 1.0f);
    CHECK(tf_f16_to_f32(0xc000) == -2.0f);
    CHECK(tf_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(tf_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(tf_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24));
    CHECK(tf_f16_to_f32(0x0400) == ldexpf(1.0f, -14));
    CHECK(tf_f16_to_f32(0x8000) == 0.0f && signbit(tf_f16_to_f32(0x8000)));
    CHECK(isinf(tf_f16_to_f32(0x7c00)) && tf_f16_to_f32(0xfc00) < 0);
    CHECK(isnan(tf_f16_to_f32(0x7e00)));
    CHECK(tf_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(tf_bf16_to_f32(0xc2f7) == -123.5f);
    /* Every 16-bit pattern round-trips through f32. */
    int bad16 = 0, badbf = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = tf_f16_to_f32((uint16_t)h);
        if (!isnan(f) && tf_f32_to_f16(f) != h)
            bad16++;
        float g = tf_bf16_to_f32((uint16_t)h);
        if (!isnan(g) && tf_f32_to_bf16(g) != h)
            badbf++;
    }
    CHECKF(bad16 == 0, "%d f16 patterns do not round-trip", bad16);
    CHECKF(badbf == 0, "%d bf16 patterns do not round-trip", badbf);
    /* Rounding to nearest, ties to even; overflow to infinity. */
    CHECK(tf_f32_to_f16(1.0f + ldexpf(1.0f, -11)) == 0x3c00);     /* tie -> even */
    CHECK(tf_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)) == 0x3c02); /* tie -> even (up) */
    CHECK(tf_f32_to_f16(65520.0f) == 0x7c00);
    CHECK(tf_f32_to_f16(65519.0f) == 0x7bff);
    CHECK(tf_f32_to_f16(ldexpf(1.0f, -25)) == 0x0000);                 /* tie with 0 -> even (0) */
    CHECK(tf_f32_to_f16(ldexpf(1.5f, -25)) == 0x0001);                 /* above half: rounds up */
    CHECK(tf_f32_to_bf16(1.0f + ldexpf(1.0f, -8)) == 0x3f80);          /* tie -> even */
    CHECK(tf_f32_to_bf16(1.0f + ldexpf(1.0f, -8) + ldexpf(1.0f, -20)) == 0x3f81);
}

static void test_roundtrip(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);
    float v[6] = {1.0f, -2.5f, 3.14159f, 1e-3f, 65504.0f, -0.0f};
    int64_t s23[2] = {2, 3}, s6[1] = {6}, s0[2] = {0, 4};
    TfError err = {{0}};
    TfSafetensorsWriter *w = tf_safetensors_writer_new();
    REQUIRE(w);
    CHECK(tf_safetensors_writer_add_f32(w, "a.f32", TF_DTYPE_F32, 2, s23, v, 6, &err) == 0);
    CHECK(tf_safetensors_writer_add_f32(w, "b.f16", TF_DTYPE_F16, 1, s6, v, 6, &err) == 0);
    CHECK(tf_safetensors_writer_add_f32(w, "c.bf16", TF_DTYPE_BF16, 1, s6, v, 6, &err) == 0);
    CHECK(tf_safetensors_writer_add_f32(w, "empty", TF_DTYPE_F32, 2, s0, v, 0, &err) == 0);
    CHECK(tf_safetensors_writer_add_f32(w, "a.f32", TF_DTYPE_F32, 1, s6, v, 6, &err) == -1); /* twice */
    CHECK(tf_safetensors_writer_add_f32(w, "short", TF_DTYPE_F32, 1, s6, v, 5, &err) == -1);
    CHECK(tf_safetensors_writer_set_metadata(w, "format", "pt", &err) == 0);
    CHECK(tf_safetensors_writer_write(w, path, &err) == 0);
    tf_safetensors_writer_free(w);

    TfSafetensors *st = tf_safetensors_open(path, &err);
    REQUIRE(st != NULL);
    CHECK(tf_safetensors_count(st) == 4);
    CHECK(tf_safetensors_metadata(st, "format") && !strcmp(tf_safetensors_metadata(st, "format"), "pt"));
    float out[6];
    CHECK(tf_safetensors_read_f32(st, "a.f32", 2, s23, out, &err) == 0 && !memcmp(out, v, sizeof v));
    CHECK(tf_safetensors_read_f32(st, "b.f16", 1, s6, out, &err) == 0);
    for (int i = 0; i < 6; i++)
        CHECKF(out[i] == tf_f16_to_f32(tf_f32_to_f16(v[i])), "f16 %d: %g", i, out[i]);
    CHECK(out[0] == 1.0f && out[1] == -2.5f && out[4] == 65504.0f);
    CHECK(tf_safetensors_read_f32(st, "c.bf16", 1, s6, out, &err) == 0);
    for (int i = 0; i < 6; i++)
        CHECKF(out[i] == tf_bf16_to_f32(tf_f32_to_bf16(v[i])), "bf16 %d: %g", i, out[i]);
    /* Wrong shape and missing tensor name the file and the tensor. */
    CHECK(tf_safetensors_read_f32(st, "a.f32", 1, s6, out, &err) == -1);
    CHECKF(strstr(err.msg, "rt.safetensors") && strstr(err.msg, "'a.f32'") && strstr(err.msg, "(2,3)"), "%s",
           err.msg);
    CHECK(tf_safetensors_read_f32(st, "nope", 1, s6, out, &err) == -1);
    CHECKF(strstr(err.msg, "rt.safetensors") && strstr(err.msg, "'nope'"), "%s", err.msg);
    tf_safetensors_free(st);
    /* The header is padded to 8 bytes. */
    size_t len;
    char *bytes = tf_read_file(path, 1 << 20, &len, &err);
    REQUIRE(bytes);
    uint64_t h = 0;
    memcpy(&h, bytes, 8);
    CHECK(h % 8 == 0);
    free(bytes);
}

static void write_shard(const char *name, const char *t1, const char *t2)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    float v[4] = {1, 2, 3, 4};
    int64_t s[1] = {4};
    TfSafetensorsWriter *w = tf_safetensors_writer_new();
    tf_safetensors_writer_add_f32(w, t1, TF_DTYPE_F32, 1, s, v, 4, NULL);
    if (t2)
        tf_safetensors_writer_add_f32(w, t2, TF_DTYPE_BF16, 1, s, v, 4, NULL);
    REQUIRE(tf_safetensors_writer_write(w, path, NULL) == 0);
    tf_safetensors_writer_free(w);
}

static void write_text(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    REQUIRE(tf_write_file_atomic(path, text, strlen(text), NULL) == 0);
}

static void test_sharded(void)
{
    char path[512];
    TfError err = {{0}};
    write_shard("m-1.safetensors", "x", "y");
    write_shard("m-2.safetensors", "z", NULL);
    write_text("good.safetensors.index.json",
               "{\"metadata\":{},\"weight_map\":{\"x\":\"m-1.safetensors\",\"y\":\"m-1.safetensors\","
               "\"z\":\"m-2.safetensors\"}}");
    snprintf(path, sizeof path, "%s/good.safetensors.index.json", tmpdir);
    TfSafetensors *st = tf_safetensors_open(path, &err);
    CHECKF(st != NULL, "%s", err.msg);
    if (st) {
        CHECK(tf_safetensors_count(st) == 3);
        const TfTensorInfo *z = tf_safetensors_find(st, "z");
        CHECK(z && strstr(z->file, "m-2.safetensors"));
        float out[4];
        int64_t s[1] = {4};
        CHECK(tf_safetensors_read_f32(st, "y", 1, s, out, &err) == 0 && out[3] == 4.0f);
        size_t n = 0, len;
        while (tf_safetensors_file(st, n, &len, NULL))
            n++;
        CHECK(n == 2);
    }
    tf_safetensors_free(st);

    struct {
        const char *index, *want;
    } bad[] = {
        {"{\"weight_map\":{\"x\":\"m-2.safetensors\",\"z\":\"m-2.safetensors\"}}", "'x'"},
        {"{\"weight_map\":{\"x\":\"../m-1.safetensors\"}}", "../m-1"},
        {"{\"weight_map\":{\"x\":\"missing.safetensors\"}}", "missing.safetensors"},
        {"{\"weight_map\":{\"q\":\"m-1.safetensors\"}}", "'q'"},
        {"{\"nothing\":1}", "weight_map"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text("bad.safetensors.index.json", bad[i].index);
        snprintf(path, sizeof path, "%s/bad.safetensors.index.json", tmpdir);
        st = tf_safetensors_open(path, &err);
        CHECKF(st == NULL, "bad index %zu accepted", i);
        tf_safetensors_free(st);
        CHECKF(strstr(err.msg, bad[i].want) != NULL, "bad index %zu: %s", i, err.msg);
    }
    /* The same tensor in two shards. */
    write_shard("d-1.safetensors", "x", NULL);
    write_shard("d-2.safetensors", "x", NULL);
    write_text("dup.safetensors.index.json",
               "{\"weight_map\":{\"x\":\"d-1.safetensors\",\"y\":\"d-2.safetensors\"}}");
    snprintf(path, sizeof path, "%s/dup.safetensors.index.json", tmpdir);
    st = tf_safetensors_open(path, &err);
    CHECK(st == NULL);
    tf_safetensors_free(st);
    CHECKF(strstr(err.msg, "'x'"), "%s", err.msg);
}

/* Rewrites a VAE folder's weights through `edit` (0 keep, 1 drop, 2 change
 * shape, 3 store a NaN) applied to tensor `victim`. */
int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tf_test_safetensors_XXXXXX");
    REQUIRE(mkdtemp(tmpdir));
    test_conversions();
    test_hostile();
    test_roundtrip();
    test_sharded();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (!test_failures && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_main_end("test_safetensors");
}
