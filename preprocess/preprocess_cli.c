/* preprocess_cli.c: `transfuse preprocess <subcommand>`, a table of the
 * subcommands that the image, tokenizer and VAE parts contribute. */
#include "image/image_internal.h"

static const TfCommand PREPROCESS_COMMANDS[] = {
    {"crop", "decode images, resize and centre-crop them, write PNGs", image_crop_main},
    {"bench", "images/s of decode + resize + crop over files or folders", image_bench_main},
};
#define N_PREPROCESS_COMMANDS (sizeof PREPROCESS_COMMANDS / sizeof PREPROCESS_COMMANDS[0])

int preprocess_main(int argc, char **argv)
{
    return tf_cli_dispatch("transfuse preprocess", "Turns downloaded bytes into model inputs.",
                           "Run `transfuse preprocess <command> --help` for its options.\n", PREPROCESS_COMMANDS,
                           N_PREPROCESS_COMMANDS, argc, argv);
}
