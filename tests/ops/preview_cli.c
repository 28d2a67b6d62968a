/* preview_cli: preview_main as a program of its own (argv[0] is the
 * subcommand name, as the dispatcher passes it), for test_preview until
 * `transfuse shards preview` is composed into the binary's shards table. */
#include "ops.h"

int main(int argc, char **argv)
{
    return preview_main(argc, argv);
}
