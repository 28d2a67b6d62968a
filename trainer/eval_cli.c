/* eval_cli.c: `transfuse eval text`: the text path's mean next-token loss
 * per stdin line, from the Llama checkpoint alone or with a trained
 * checkpoint's image weights loaded (which must not change it). */
#include "trainer_internal.h"

#include "preprocess.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void usage_text(FILE *out)
{
    fprintf(out,
            "usage: transfuse eval text --llama DIR --tokenizer FILE [--checkpoint DIR] [--threads N] < lines\n\n"
            "For every line of stdin (UTF-8, without its newline), tokenizes it with BOS in front and\n"
            "prints the mean next-token cross-entropy of the model's text path, one `%%.9g` per line\n"
            "(`nan` for a line of fewer than two tokens). With --checkpoint, the trained LlamaFusion\n"
            "model is loaded (DIR/" FUSION_CHECKPOINT_WEIGHTS "): its text path is frozen, so the\n"
            "numbers equal those without it to the bit.\n\n"
            "  --llama DIR        Hugging Face Llama checkpoint (config.json + safetensors)\n"
            "  --tokenizer FILE   tokenizer.json or tokenizer.model\n"
            "  --checkpoint DIR   a trainer checkpoint folder\n"
            "  --max-tokens N     cut longer lines to N tokens (default 4096)\n"
            "  --threads N        threads (default and 0: all CPUs)\n");
}

static int text_main(int argc, char **argv)
{
    static const struct option LONG[] = {{"llama", required_argument, 0, 'l'},
                                         {"tokenizer", required_argument, 0, 'k'},
                                         {"checkpoint", required_argument, 0, 'c'},
                                         {"max-tokens", required_argument, 0, 'm'},
                                         {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *llama = NULL, *tokpath = NULL, *ckpt = NULL;
    int threads = 0;
    long max_tokens = 4096;
    TfError err = {{0}};
    TfOpts o = {.prog = "transfuse eval text", .argc = argc, .argv = argv, .shortopts = "h", .longopts = LONG};
    int c;
    while ((c = tf_opts_next(&o)) != -1) {
        switch (c) {
        case 'l': llama = o.arg; break;
        case 'k': tokpath = o.arg; break;
        case 'c': ckpt = o.arg; break;
        case 'm':
            if (tf_parse_long("--max-tokens", o.arg, 2, 1 << 20, &max_tokens, &err))
                goto usage;
            break;
        case 't':
            if (tf_parse_threads("--threads", o.arg, 4096, &threads, &err))
                goto usage;
            break;
        case 'h': usage_text(stdout); return TF_EXIT_OK;
        default: usage_text(stderr); return TF_EXIT_USAGE;
        }
    }
    if (o.first_operand < argc) {
        tf_fail(&err, "unexpected operand \"%s\"", argv[o.first_operand]);
        goto usage;
    }
    if (!llama || !tokpath) {
        tf_fail(&err, "--llama and --tokenizer are required");
        goto usage;
    }

    int rc = TF_EXIT_FAIL;
    TfKernels *k = NULL;
    FusionModel *m = NULL;
    Tokenizer *tok = NULL;
    TokenizerSession *ts = NULL;
    TokenIds ids = {0};
    char *line = NULL;
    size_t cap = 0;
    char wpath[4096] = "";
    FusionConfig fc;
    fusion_config_default(&fc);
    if (ckpt) {
        if (tf_path_join(wpath, sizeof wpath, ckpt, FUSION_CHECKPOINT_WEIGHTS) != 0) {
            tf_fail(&err, "%s: path too long", ckpt);
            goto out;
        }
        if (fusion_config_read(wpath, &fc, &err))
            goto out;
    }
    if (!(tok = tokenizer_load(tokpath, &err)) || !(ts = tokenizer_session_new(tok, &err)) ||
        !(k = tf_kernels_new(TF_BACKEND_CPU, threads, &err)) || !(m = fusion_model_new(k, llama, &fc, &err)))
        goto out;
    if (ckpt && fusion_load_trainable(m, wpath, &err))
        goto out;
    if (fc.train_text)
        tf_log(TF_LOG_WARN, "eval", "%s trained the text path (train_text): its losses are not the checkpoint's", ckpt);
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        if (len > 0 && line[len - 1] == '\n')
            len--;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        ids.len = 0;
        if (tokenizer_encode(ts, line, (size_t)len, TOKENIZER_ADD_BOS, &ids, &err))
            goto out;
        int n = ids.len > (size_t)max_tokens ? (int)max_tokens : (int)ids.len;
        if (n < 2) {
            printf("nan\n");
            continue;
        }
        double loss;
        if (fusion_text_loss(m, ids.ids, n, &loss, &err))
            goto out;
        printf("%.9g\n", loss);
    }
    if (fflush(stdout) != 0) {
        tf_fail(&err, "stdout: write failed");
        goto out;
    }
    rc = TF_EXIT_OK;
out:
    if (rc != TF_EXIT_OK)
        fprintf(stderr, "transfuse eval text: %s\n", err.msg);
    free(line);
    token_ids_deinit(&ids);
    fusion_model_free(m);
    tf_kernels_free(k);
    tokenizer_session_free(ts);
    tokenizer_free(tok);
    return rc;
usage:
    fprintf(stderr, "transfuse eval text: %s\n", err.msg);
    return TF_EXIT_USAGE;
}

static const TfCommand EVAL_COMMANDS[] = {
    {"text", "per-line mean next-token loss of the text path (stdin lines)", text_main},
};

int eval_main(int argc, char **argv)
{
    return tf_cli_dispatch("transfuse eval", "Evaluates a LlamaFusion model.",
                           "Run `transfuse eval <command> --help` for its options.\n", EVAL_COMMANDS,
                           sizeof EVAL_COMMANDS / sizeof EVAL_COMMANDS[0], argc, argv);
}
