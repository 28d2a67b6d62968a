/* preprocess_cli.c: `transfuse preprocess <subcommand>`, a table of the
 * subcommands that the image, tokenizer and VAE parts contribute. */
#include <stdio.h>
#include <string.h>

#include "image/image_internal.h"

static const TfCommand PREPROCESS_COMMANDS[] = {
    {"crop", "decode images, resize and centre-crop them, write PNGs", image_crop_main},
    {"bench", "images/s of decode + resize + crop over files or folders", image_bench_main},
};
#define N_PREPROCESS_COMMANDS (sizeof PREPROCESS_COMMANDS / sizeof PREPROCESS_COMMANDS[0])

static void preprocess_usage(FILE *out)
{
    fprintf(out, "usage: transfuse preprocess <command> [options]\n\n"
                 "Turns downloaded bytes into model inputs.\n\ncommands:\n");
    for (size_t i = 0; i < N_PREPROCESS_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", PREPROCESS_COMMANDS[i].name, PREPROCESS_COMMANDS[i].summary);
    fprintf(out, "\nRun `transfuse preprocess <command> --help` for its options.\n");
}

int preprocess_main(int argc, char **argv)
{
    if (argc < 2) {
        preprocess_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        preprocess_usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < N_PREPROCESS_COMMANDS; i++)
        if (!strcmp(argv[1], PREPROCESS_COMMANDS[i].name))
            return PREPROCESS_COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "transfuse preprocess: unknown command '%s' (see transfuse preprocess --help)\n", argv[1]);
    return 2;
}
