/* transfuse: the one binary. A thin dispatcher: each library contributes
 * its subcommands as TfCommand entries, listed here. This is also the one
 * place that installs signal handlers (see "stopping" in core.h). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "ingest.h"
#include "ops.h"
#include "preprocess.h"
#include "shards.h"
#include "trainer.h"

/* `transfuse shards`: the shards library's commands plus ops' contact
 * sheet, which draws images and so cannot live in shards/. */
static int shards_command(int argc, char **argv)
{
    static const TfCommand extra[] = {
        {"preview", "a contact sheet (PNG) of crops with captions and keys", preview_main},
    };
    return shards_dispatch(argc, argv, extra, sizeof extra / sizeof extra[0]);
}

static const TfCommand COMMANDS[] = {
    {"ingest", "manifests to records: run (from the web), fetch, plan; or local files to latents", ingest_dispatch},
    {"shards", "datasets and topics: ls, stat, verify, cat, import, publish, archive, preview", shards_command},
    {"preprocess", "decode, resize and centre-crop images (crop, bench)", preprocess_main},
    {"tokenize", "Llama-3 BPE: text lines to token ids, or ids to text", tokenize_main},
    {"vae", "VAE checkpoints: init, encode images to latents, decode", vae_main},
    {"broker", "an embedded Kafka broker (librdkafka's mock cluster) for one machine", broker_main},
    {"plot", "loss, learning-rate and throughput curves from trainer and ingest logs (PNG)", plot_main},
    {"top", "a live view of a deployment: ingest, encode, trainer ranks, Kafka lag", top_main},
    {"llama", "Llama checkpoints in Hugging Face layout: init (random, tiny/1b/8b), info", llama_main},
    {"eval", "LlamaFusion evaluation: text (per-line loss of the frozen text path)", eval_main},
    {"train", "train LlamaFusion on a dataset or topic: checkpoints, resume, JSON log", train_main},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static const char FOOTER[] =
    "options:\n"
    "  -h, --help     this help\n"
    "  --version      print the version\n\n"
    "exit status:\n"
    "  0 done (per-item failures are counted in the stats)\n"
    "  1 done, but a check failed or a failure limit was passed\n"
    "  2 bad command line or configuration: nothing was done\n"
    "  3 could not run (missing input, I/O or broker error)\n"
    "  130 stopped by Ctrl-C or SIGTERM: finished work is kept, nothing half-written is visible\n\n"
    "environment:\n"
    "  TRANSFUSE_LOG=debug|info|warn|error|quiet   log level on stderr (default info)\n";

/* SIGINT/SIGTERM: a command that honours the stop flag gets one graceful
 * stop; a second signal, or any signal to a command that does not watch
 * the flag, ends the process the default way at once. Only
 * async-signal-safe calls here. */
static void on_stop_signal(int sig)
{
    static volatile sig_atomic_t seen;
    if (tf_cli_stop_watched() && !seen) {
        seen = 1;
        atomic_store(tf_cli_stop_flag(), 1);
        static const char msg[] = "\ntransfuse: stopping (finishing what is safe to finish; again to quit now)\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        return;
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_stop_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: blocking calls return EINTR and loops see the flag */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version"))) {
        printf("transfuse %s\n", TF_VERSION_STRING);
        return TF_EXIT_OK;
    }
    install_stop_handlers();
    char about[160];
    snprintf(about, sizeof about,
             "transfuse %s: image-caption data pipeline (ingest, preprocess, shards, Kafka)", TF_VERSION_STRING);
    return tf_cli_dispatch("transfuse", about, FOOTER, COMMANDS, N_COMMANDS, argc, argv);
}
