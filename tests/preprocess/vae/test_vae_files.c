/* test_vae_files.c: the VAE loader's handling of broken checkpoints:
 * missing or misshapen tensors, non-finite weights and broken configs, each
 * failing with a message that names the file and the tensor or field, and
 * identities that follow the weights. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "preprocess.h"
#include "test.h"

static char tmpdir[256];

static void rewrite_vae(const char *src, const char *dst, const char *victim, int edit)
{
    char path[512];
    TfError err = {{0}};
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", src);
    TfSafetensors *st = tf_safetensors_open(path, &err);
    REQUIRE(st);
    REQUIRE(tf_mkdir_p(dst, &err) == 0);
    TfSafetensorsWriter *w = tf_safetensors_writer_new();
    for (size_t i = 0; i < tf_safetensors_count(st); i++) {
        const TfTensorInfo *t = tf_safetensors_at(st, i);
        float *v = malloc((t->numel ? t->numel : 1) * sizeof *v);
        REQUIRE(tf_tensor_to_f32(t, v, t->numel, &err) == 0);
        int64_t shape[8];
        memcpy(shape, t->shape, sizeof shape);
        int ndim = t->ndim, is_victim = !strcmp(t->name, victim);
        if (is_victim && edit == 2) { /* (C,...) -> (C/2, 2, ...) keeps the count */
            shape[0] /= 2;
            shape[ndim] = 1;
            memmove(shape + 2, shape + 1, (size_t)(ndim - 1) * sizeof *shape);
            shape[1] = 2;
            ndim++;
        }
        if (is_victim && edit == 3)
            v[0] = NAN;
        if (!(is_victim && edit == 1))
            REQUIRE(tf_safetensors_writer_add_f32(w, t->name, TF_DTYPE_F32, ndim, shape, v, t->numel, &err) == 0);
        free(v);
    }
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dst);
    REQUIRE(tf_safetensors_writer_write(w, path, &err) == 0);
    tf_safetensors_writer_free(w);
    tf_safetensors_free(st);
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/config.json", src);
    snprintf(b, sizeof b, "%s/config.json", dst);
    size_t len;
    char *cfg = tf_read_file(a, 1 << 20, &len, &err);
    REQUIRE(cfg && tf_write_file_atomic(b, cfg, len, &err) == 0);
    free(cfg);
}

static void test_vae_files(void)
{
    char good[512], bad[512];
    TfError err = {{0}};
    VaeConfig cfg;
    REQUIRE(vae_config_layout("tiny", &cfg, &err) == 0);
    snprintf(good, sizeof good, "%s/vae", tmpdir);
    REQUIRE(vae_init_write(&cfg, 1, TF_DTYPE_F32, good, &err) == 0);
    Vae *v1 = vae_load(good, VAE_LOAD_ENCODER | VAE_LOAD_DECODER, &err);
    REQUIRE(v1);
    Vae *v2 = vae_load(good, VAE_LOAD_ENCODER, &err);
    REQUIRE(v2);
    CHECK(strlen(vae_identity(v1)) == 64 && !strcmp(vae_identity(v1), vae_identity(v2)));
    CHECK(vae_config(v1)->latent_channels == 4 && vae_downsample_factor(vae_config(v1)) == 8);
    char id1[65];
    strcpy(id1, vae_identity(v1));
    vae_free(v1);
    vae_free(v2);
    /* Another seed: another identity. */
    snprintf(bad, sizeof bad, "%s/vae_seed2", tmpdir);
    REQUIRE(vae_init_write(&cfg, 2, TF_DTYPE_F32, bad, &err) == 0);
    v1 = vae_load(bad, VAE_LOAD_ENCODER, &err);
    REQUIRE(v1);
    CHECK(strcmp(id1, vae_identity(v1)) != 0);
    vae_free(v1);

    struct {
        const char *tensor;
        int edit;
        const char *want;
    } cases[] = {
        {"encoder.mid_block.attentions.0.to_q.weight", 1, "'encoder.mid_block.attentions.0.to_q.weight'"},
        {"encoder.down_blocks.1.resnets.0.conv_shortcut.weight", 1, "conv_shortcut.weight"},
        {"decoder.up_blocks.0.upsamplers.0.conv.weight", 2, "'decoder.up_blocks.0.upsamplers.0.conv.weight'"},
        {"quant_conv.bias", 2, "'quant_conv.bias'"},
        {"encoder.conv_in.weight", 3, "non-finite"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(bad, sizeof bad, "%s/vae_bad%zu", tmpdir, i);
        rewrite_vae(good, bad, cases[i].tensor, cases[i].edit);
        Vae *v = vae_load(bad, VAE_LOAD_ENCODER | VAE_LOAD_DECODER, &err);
        CHECKF(v == NULL, "case %zu loaded", i);
        vae_free(v);
        CHECKF(strstr(err.msg, "diffusion_pytorch_model.safetensors") && strstr(err.msg, cases[i].want),
               "case %zu: %s", i, err.msg);
    }
    /* Decoder-only damage does not stop an encoder-only load. */
    snprintf(bad, sizeof bad, "%s/vae_bad2", tmpdir);
    Vae *v = vae_load(bad, VAE_LOAD_ENCODER, &err);
    CHECKF(v != NULL, "%s", err.msg);
    vae_free(v);

    /* A broken config names config.json and the field. */
    snprintf(bad, sizeof bad, "%s/vae_cfg", tmpdir);
    rewrite_vae(good, bad, "", 0);
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", bad);
    const char *cfgs[][2] = {
        {"{\"block_out_channels\":[16,30],\"norm_num_groups\":8}", "norm_num_groups"},
        {"{\"block_out_channels\":[]}", "block_out_channels"},
        {"{\"_class_name\":\"VQModel\",\"block_out_channels\":[16]}", "AutoencoderKL"},
        {"{\"block_out_channels\":[16],\"latent_channels\":\"4\"}", "latent_channels"},
        {"{\"block_out_channels\":[16],\"down_block_types\":[\"AttnDownEncoderBlock2D\"]}", "down_block_types"},
        {"not json", "config.json"},
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        REQUIRE(tf_write_file_atomic(path, cfgs[i][0], strlen(cfgs[i][0]), &err) == 0);
        v = vae_load(bad, VAE_LOAD_ENCODER, &err);
        CHECKF(v == NULL, "config %zu accepted", i);
        vae_free(v);
        CHECKF(strstr(err.msg, "config.json") && strstr(err.msg, cfgs[i][1]), "config %zu: %s", i, err.msg);
    }
    /* A config that asks for far more parameters than the file holds
     * (about 10^11 here) is refused by the first tensor that does not fit,
     * before anything is allocated for them. */
    static const char huge[] =
        "{\"block_out_channels\":[8192,8192,8192,8192,8192,8192,8192,8192],\"layers_per_block\":8,"
        "\"norm_num_groups\":32,\"latent_channels\":1024}";
    REQUIRE(tf_write_file_atomic(path, huge, strlen(huge), &err) == 0);
    v = vae_load(bad, VAE_LOAD_ENCODER | VAE_LOAD_DECODER, &err);
    CHECK(v == NULL);
    vae_free(v);
    CHECKF(strstr(err.msg, "'encoder.conv_in.weight'") && strstr(err.msg, "shape") && !strstr(err.msg, "memory"),
           "huge config: %s", err.msg);

    /* No weights at all. */
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", bad);
    unlink(path);
    v = vae_load(bad, VAE_LOAD_ENCODER, &err);
    CHECK(v == NULL);
    vae_free(v);
}


int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tf_test_vae_files_XXXXXX");
    REQUIRE(mkdtemp(tmpdir));
    test_vae_files();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (!test_failures && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_main_end("test_vae_files");
}
