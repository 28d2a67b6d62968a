/* cli.c: transfuse shards (in progress in this commit). */
#include "shards.h"

int shards_main(int argc, char **argv)
{
    fprintf(stderr, "transfuse shards: not built yet\n");
    return 2;
}
