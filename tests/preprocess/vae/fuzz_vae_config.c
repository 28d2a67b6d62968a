/* fuzz_vae_config.c: libFuzzer target for a VAE's config.json. Each input
 * is written as the config.json of a folder whose weights are a tiny VAE's
 * (written once, bf16), and loaded with vae_load (encoder and decoder):
 * whatever the config says, the load succeeds or fails with a message, and
 * it never allocates what the config claims before the tensors confirm it
 * (libFuzzer's -malloc_limit_mb, 2048 MB in these runs, turns such an
 * allocation into a crash). A config that loads is also checked against
 * the tiny layout it must then describe. Seeds in fuzz_config_seeds/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "preprocess.h"

static char dir[128];

static void remove_dir(void)
{
    char path[160];
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    unlink(path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "/tmp/tf_fuzz_vae_config_%d", (int)getpid());
    VaeConfig cfg;
    TfError err = {{0}};
    if (vae_config_layout("tiny", &cfg, &err) || vae_init_write(&cfg, 1, TF_DTYPE_BF16, dir, &err)) {
        fprintf(stderr, "fuzz_vae_config: %s\n", err.msg);
        abort();
    }
    atexit(remove_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[160];
    snprintf(path, sizeof path, "%s/config.json", dir);
    TfError err = {{0}};
    if (tf_write_file_atomic(path, data, size, &err))
        abort();
    Vae *vae = vae_load(dir, VAE_LOAD_ENCODER | VAE_LOAD_DECODER, &err);
    if (!vae && !err.msg[0])
        abort(); /* a failure must say why */
    if (vae) {
        /* The weights are the tiny layout's, so a config that loaded must
         * describe exactly that architecture. */
        const VaeConfig *c = vae_config(vae);
        if (c->nblocks != 4 || c->block_out_channels[0] != 16 || c->block_out_channels[3] != 64 ||
            c->layers_per_block != 1 || c->latent_channels != 4 || strlen(vae_identity(vae)) != 64)
            abort();
        vae_free(vae);
    }
    return 0;
}
