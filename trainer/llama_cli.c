/* llama_cli.c: `transfuse llama init|info`: write a random checkpoint in
 * Hugging Face layout; describe a checkpoint's config, parameters by group
 * and memory (text model, and the LlamaFusion model built on it). */
#include "trainer_internal.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#define TAG "llama"

static void usage_init(FILE *out)
{
    fprintf(out,
            "usage: transfuse llama init --layout tiny|50m|1b|8b --out DIR [--seed S] [options]\n\n"
            "Writes a random-initialised Llama checkpoint in the exact Hugging Face layout:\n"
            "DIR/config.json, DIR/generation_config.json and the weights as model.safetensors,\n"
            "or model-0000k-of-0000n.safetensors + model.safetensors.index.json past --shard-size.\n"
            "Weights N(0, --init-std) from --seed, norms 1. For tests and demos: random weights know nothing.\n\n"
            "  --layout L       tiny (D 64, 2 layers, full Llama-3 vocabulary, tied), 50m (D 384, 4 layers,\n"
            "                   tied, 55.5M), 1b (Llama-3.2-1B), 8b (Llama-3-8B)\n"
            "  --out DIR        folder to create or write into\n"
            "  --seed S         random seed (default 0)\n"
            "  --dtype T        f32, bf16 or f16 (default f32 for tiny and 50m, bf16 otherwise)\n"
            "  --weights        write the weights for 1b and 8b too (default: config only; tiny, 50m always)\n"
            "  --config-only    write no weights, for tiny and 50m as well\n"
            "  --untied         an untied lm_head.weight even where the layout ties it\n"
            "  --shard-size N   shard past N bytes of tensor data (default 5GB; suffixes K M G Ki Mi Gi)\n"
            "  --init-std X     standard deviation of the weights (default 0.02; tests use more, so\n"
            "                   attention and RoPE matter)\n"
            "  --threads N      threads (default and 0: all CPUs)\n");
}

static int init_main(int argc, char **argv)
{
    static const struct option LONG[] = {
        {"layout", required_argument, 0, 'l'}, {"out", required_argument, 0, 'o'},
        {"seed", required_argument, 0, 's'},   {"dtype", required_argument, 0, 'd'},
        {"weights", no_argument, 0, 'w'},      {"config-only", no_argument, 0, 'c'},
        {"untied", no_argument, 0, 'u'},       {"shard-size", required_argument, 0, 'z'},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},
        {"init-std", required_argument, 0, 'S'},
        {0, 0, 0, 0}};
    LlamaInitOptions opt = {.layout = NULL, .weights = -1, .dtype = TF_DTYPE_COUNT};
    const char *out = NULL;
    int threads = 0;
    TfError err = {{0}};
    TfOpts o = {.prog = "transfuse llama init", .argc = argc, .argv = argv, .shortopts = "h", .longopts = LONG};
    int c;
    while ((c = tf_opts_next(&o)) != -1) {
        long v;
        switch (c) {
        case 'l': opt.layout = o.arg; break;
        case 'o': out = o.arg; break;
        case 's':
            if (tf_parse_long("--seed", o.arg, 0, INT64_MAX, &v, &err) != 0)
                goto usage;
            opt.seed = (uint64_t)v;
            break;
        case 'd':
            if (!strcmp(o.arg, "f32")) opt.dtype = TF_DTYPE_F32;
            else if (!strcmp(o.arg, "bf16")) opt.dtype = TF_DTYPE_BF16;
            else if (!strcmp(o.arg, "f16")) opt.dtype = TF_DTYPE_F16;
            else {
                tf_fail(&err, "--dtype: \"%s\" is not f32, bf16 or f16", o.arg);
                goto usage;
            }
            break;
        case 'S': {
            char *end;
            opt.std = strtod(o.arg, &end);
            if (*end || !(opt.std > 0 && opt.std < 100)) {
                tf_fail(&err, "--init-std: \"%s\" is not a positive number", o.arg);
                goto usage;
            }
            break;
        }
        case 'w': opt.weights = 1; break;
        case 'c': opt.weights = 0; break;
        case 'u': opt.untied = 1; break;
        case 'z':
            if (tf_parse_size("--shard-size", o.arg, &opt.shard_bytes, &err) != 0)
                goto usage;
            if (opt.shard_bytes == 0) {
                tf_fail(&err, "--shard-size must be positive");
                goto usage;
            }
            break;
        case 't':
            if (tf_parse_threads("--threads", o.arg, 4096, &threads, &err) != 0)
                goto usage;
            break;
        case 'h': usage_init(stdout); return TF_EXIT_OK;
        default: usage_init(stderr); return TF_EXIT_USAGE;
        }
    }
    if (o.first_operand < argc) {
        tf_fail(&err, "unexpected operand \"%s\"", argv[o.first_operand]);
        goto usage;
    }
    if (!opt.layout || !out) {
        tf_fail(&err, "--layout and --out are required");
        goto usage;
    }
    LlamaConfig probe;
    if (llama_config_layout(opt.layout, &probe, &err) != 0)
        goto usage;
    TfKernels *k = tf_kernels_new(TF_BACKEND_CPU, threads, &err);
    if (!k) {
        fprintf(stderr, "transfuse llama init: %s\n", err.msg);
        return TF_EXIT_FAIL;
    }
    int rc = llama_init_checkpoint(k, &opt, out, &err);
    tf_kernels_free(k);
    if (rc != 0) {
        fprintf(stderr, "transfuse llama init: %s\n", err.msg);
        return TF_EXIT_FAIL;
    }
    tf_log(TF_LOG_INFO, TAG, "wrote %s layout to %s", opt.layout, out);
    return TF_EXIT_OK;
usage:
    fprintf(stderr, "transfuse llama init: %s\n", err.msg);
    return TF_EXIT_USAGE;
}

static void usage_info(FILE *out)
{
    fprintf(out,
            "usage: transfuse llama info DIR [--adapter unet|linear] [--latent C,H,W] [--patch P]\n\n"
            "Prints DIR/config.json's facts, the parameters by group and the memory they take\n"
            "(bf16 and f32), and the LlamaFusion model built on it: the image copy of every layer,\n"
            "the adapters, gradients and AdamW state of the trainable part. Reads no weights.\n");
}

static void print_bytes(const char *what, double n, double bytes_per)
{
    printf("  %-28s %14.0f params  %10.3f GiB\n", what, n, n * bytes_per / (1024.0 * 1024.0 * 1024.0));
}

static int info_main(int argc, char **argv)
{
    static const struct option LONG[] = {{"adapter", required_argument, 0, 'a'},
                                         {"latent", required_argument, 0, 'L'},
                                         {"patch", required_argument, 0, 'p'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    TfError err = {{0}};
    FusionConfig fc;
    fusion_config_default(&fc);
    TfOpts o = {.prog = "transfuse llama info", .argc = argc, .argv = argv, .shortopts = "h", .longopts = LONG};
    int c;
    while ((c = tf_opts_next(&o)) != -1) {
        long v;
        switch (c) {
        case 'a':
            if (fusion_adapter_parse(o.arg, &fc.adapter, &err) != 0)
                goto usage;
            break;
        case 'L':
            if (sscanf(o.arg, "%d,%d,%d", &fc.latent_c, &fc.latent_h, &fc.latent_w) != 3 || fc.latent_c < 1 ||
                fc.latent_h < 1 || fc.latent_w < 1) {
                tf_fail(&err, "--latent: \"%s\" is not C,H,W", o.arg);
                goto usage;
            }
            break;
        case 'p':
            if (tf_parse_long("--patch", o.arg, 1, 64, &v, &err) != 0)
                goto usage;
            fc.patch = (int)v;
            break;
        case 'h': usage_info(stdout); return TF_EXIT_OK;
        default: usage_info(stderr); return TF_EXIT_USAGE;
        }
    }
    if (argc - o.first_operand != 1) {
        tf_fail(&err, "one checkpoint folder expected");
        goto usage;
    }
    const char *dir = argv[o.first_operand];
    LlamaConfig lc;
    if (llama_config_load(dir, &lc, &err) != 0) {
        fprintf(stderr, "transfuse llama info: %s\n", err.msg);
        return TF_EXIT_FAIL;
    }
    size_t n = llama_text_tensors(&lc, NULL, 0);
    LlamaTensorSpec *t = calloc(n, sizeof *t);
    if (!t) {
        fprintf(stderr, "transfuse llama info: out of memory\n");
        return TF_EXIT_FAIL;
    }
    llama_text_tensors(&lc, t, n);
    double g[5] = {0};
    for (size_t i = 0; i < n; i++)
        g[t[i].kind] += (double)t[i].numel;
    free(t);
    double text = g[0] + g[1] + g[2] + g[3] + g[4];
    printf("%s: llama, hidden %d, layers %d, heads %d/%d of %d, FFN %d, vocab %d, rope theta %g", dir, lc.hidden,
           lc.layers, lc.heads, lc.kv_heads, lc.head_dim, lc.intermediate, lc.vocab, lc.rope_theta);
    if (lc.rope_factor > 1)
        printf(" (llama3 factor %g)", lc.rope_factor);
    printf(", %s embeddings, %s\n", lc.tie_word_embeddings ? "tied" : "untied",
           lc.torch_dtype[0] ? lc.torch_dtype : "dtype not stated");
    printf("text model (frozen), bf16 memory:\n");
    print_bytes("embedding", g[LLAMA_T_EMBED], 2);
    print_bytes("attention q/k/v/o", g[LLAMA_T_ATTN], 2);
    print_bytes("mlp gate/up/down", g[LLAMA_T_MLP], 2);
    print_bytes("norms", g[LLAMA_T_NORM], 2);
    if (!lc.tie_word_embeddings)
        print_bytes("lm_head", g[LLAMA_T_HEAD], 2);
    print_bytes("total", text, 2);
    FusionCounts fcn;
    if (fusion_count(&lc, &fc, &fcn, &err) != 0) {
        fprintf(stderr, "transfuse llama info: %s\n", err.msg);
        return TF_EXIT_USAGE;
    }
    printf("LlamaFusion, %s adapter, latent %dx%dx%d, patch %d (%d positions per image), trainable fp32:\n",
           fusion_adapter_name(fc.adapter), fc.latent_c, fc.latent_h, fc.latent_w, fc.patch,
           fusion_config_patches(&fc));
    print_bytes("image layers (copy of text)", (double)fcn.image_layers, 4);
    print_bytes("image adapters + time embed", (double)fcn.adapters, 4);
    print_bytes("BOI/EOI embedding rows", (double)fcn.special, 4);
    print_bytes("trainable total", (double)fcn.trainable, 4);
    printf("  %-28s %25.3f GiB (weights + grads + AdamW m, v)\n", "trainable, with optimizer",
           (double)fcn.trainable * 16.0 / (1024.0 * 1024.0 * 1024.0));
    printf("  %-28s %25.3f GiB (bf16 text + fp32 trainable x4)\n", "model total",
           (text * 2.0 + (double)fcn.trainable * 16.0) / (1024.0 * 1024.0 * 1024.0));
    return TF_EXIT_OK;
usage:
    fprintf(stderr, "transfuse llama info: %s\n", err.msg);
    return TF_EXIT_USAGE;
}

static const TfCommand LLAMA_COMMANDS[] = {
    {"init", "write a random-initialised checkpoint (tiny, 50m, 1b, 8b) in Hugging Face layout", init_main},
    {"info", "a checkpoint's config, parameters by group and memory (text and LlamaFusion)", info_main},
};

int llama_main(int argc, char **argv)
{
    return tf_cli_dispatch("transfuse llama", "Llama checkpoints in Hugging Face layout, for the LlamaFusion trainer.",
                           "Run `transfuse llama <command> --help` for its options.\n", LLAMA_COMMANDS,
                           sizeof LLAMA_COMMANDS / sizeof LLAMA_COMMANDS[0], argc, argv);
}
