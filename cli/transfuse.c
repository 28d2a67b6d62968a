/* transfuse: the one binary. A thin dispatcher: each library contributes
 * its subcommands as TfCommand entries, listed here. */
#include <stdio.h>
#include <string.h>

#include "core.h"
#include "ingest.h"
#include "preprocess.h"
#include "ops.h"
#include "shards.h"

static const TfCommand COMMANDS[] = {
    {"ingest", "images and captions to a dataset of records (crop, tokens, VAE latents)", ingest_main},
    {"shards", "inspect, verify, print and import shard datasets", shards_main},
    {"preprocess", "decode, resize and crop images; tokenize captions; VAE latents", preprocess_main},
    {"broker", "run an embedded Kafka broker (librdkafka mock cluster) for one machine", broker_main},
    {"tokenize", "Llama-3 BPE: text lines to token ids, or ids to text", tokenize_main},
    {"vae", "VAE checkpoints: init, encode images to latents, decode", vae_main},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void usage(FILE *out)
{
    fprintf(out,
            "transfuse %s: image-caption data pipeline and LlamaFusion trainer\n\n"
            "usage: transfuse <command> [options]\n"
            "       transfuse <command> --help\n\n"
            "commands:\n",
            TF_VERSION_STRING);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-12s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(out,
            "\noptions:\n"
            "  -h, --help     this help\n"
            "  --version      print the version\n\n"
            "environment:\n"
            "  TRANSFUSE_LOG=debug|info|warn|error|quiet   log level on stderr (default info)\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("transfuse %s\n", TF_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], COMMANDS[i].name))
            return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "transfuse: unknown command '%s' (see transfuse --help)\n", argv[1]);
    return 2;
}
