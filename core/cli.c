/* cli.c: what every subcommand shares: the dispatcher, the option parser
 * (getopt_long with one set of rules), number, size and thread parsing, and
 * the process's stop flag that the binary's signal handler sets. */
#include "core.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- dispatcher ---- */

static void dispatch_usage(FILE *out, const char *prog, const char *about, const char *footer,
                           const TfCommand *cmds, size_t n)
{
    fprintf(out, "usage: %s <command> [options]\n       %s <command> --help\n\n", prog, prog);
    if (about)
        fprintf(out, "%s\n\n", about);
    fprintf(out, "commands:\n");
    for (size_t i = 0; i < n; i++)
        fprintf(out, "  %-12s %s\n", cmds[i].name, cmds[i].summary);
    if (footer)
        fprintf(out, "\n%s", footer);
}

int tf_cli_dispatch(const char *prog, const char *about, const char *footer, const TfCommand *cmds, size_t n,
                    int argc, char **argv)
{
    if (argc < 2) {
        dispatch_usage(stderr, prog, about, footer, cmds, n);
        return TF_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "-h") || !strcmp(name, "--help") || !strcmp(name, "help")) {
        dispatch_usage(stdout, prog, about, footer, cmds, n);
        return TF_EXIT_OK;
    }
    for (size_t i = 0; i < n; i++)
        if (!strcmp(name, cmds[i].name))
            return cmds[i].run(argc - 1, argv + 1);
    fprintf(stderr, "%s: unknown command '%s' (see %s --help)\n", prog, name, prog);
    return TF_EXIT_USAGE;
}

int tf_cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            return 0;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            return 1;
    }
    return 0;
}

/* ---- option parser ---- */

int tf_opts_next(TfOpts *o)
{
    if (!o->started) {
        optind = 0; /* GNU: full re-initialisation for this argv */
        opterr = 0;
        o->started = 1;
    }
    /* A leading ':' makes a missing argument ':' rather than '?'. */
    char shortopts[128];
    snprintf(shortopts, sizeof shortopts, ":%s", o->shortopts ? o->shortopts : "");
    int c = getopt_long(o->argc, o->argv, shortopts, o->longopts, NULL);
    o->arg = optarg;
    if (c == -1) {
        o->first_operand = optind;
        return -1;
    }
    if (c == '?' || c == ':') {
        /* optind has moved past the offending word (or its missing value). */
        const char *word = optind > 0 && optind <= o->argc ? o->argv[optind - 1] : "?";
        if (c == ':')
            fprintf(stderr, "%s: option '%s' needs a value (see --help)\n", o->prog, word);
        else if (optopt && !(word[0] == '-' && word[1] == '-'))
            fprintf(stderr, "%s: unknown option '-%c' (see --help)\n", o->prog, optopt);
        else
            fprintf(stderr, "%s: unknown option '%s' (see --help)\n", o->prog, word);
        return '?';
    }
    return c;
}

/* ---- numbers ---- */

int tf_parse_long(const char *flag, const char *text, long min, long max, long *out, TfError *err)
{
    if (!text || !*text)
        return tf_fail(err, "%s needs a number", flag);
    errno = 0;
    char *end;
    long v = strtol(text, &end, 10);
    if (errno || *end || end == text)
        return tf_fail(err, "%s: '%s' is not a whole number", flag, text);
    if (v < min || v > max)
        return tf_fail(err, "%s: %ld is out of range [%ld, %ld]", flag, v, min, max);
    *out = v;
    return 0;
}

int tf_parse_size(const char *flag, const char *text, uint64_t *out, TfError *err)
{
    if (!text || !*text)
        return tf_fail(err, "%s needs a size", flag);
    errno = 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || !isdigit((unsigned char)text[0]))
        return tf_fail(err, "%s: '%s' is not a size (e.g. 100M or 256Mi)", flag, text);
    int power = 0;
    switch (toupper((unsigned char)*end)) {
    case 0: break;
    case 'K': power = 1; end++; break;
    case 'M': power = 2; end++; break;
    case 'G': power = 3; end++; break;
    case 'T': power = 4; end++; break;
    case 'B': break;
    default: return tf_fail(err, "%s: '%s' has an unknown suffix (K, M, G, T or Ki, Mi, Gi, Ti)", flag, text);
    }
    uint64_t base = 1000;
    if (power && *end == 'i') {
        base = 1024;
        end++;
    }
    if (*end == 'B')
        end++;
    if (*end)
        return tf_fail(err, "%s: '%s' is not a size (e.g. 100M or 256Mi)", flag, text);
    uint64_t r = v;
    for (int i = 0; i < power; i++) {
        if (r > UINT64_MAX / base)
            return tf_fail(err, "%s: '%s' is too large", flag, text);
        r *= base;
    }
    *out = r;
    return 0;
}

int tf_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 4096 ? 4096 : (int)n;
}

int tf_parse_threads(const char *flag, const char *text, int max, int *out, TfError *err)
{
    long v;
    if (tf_parse_long(flag, text, 0, max, &v, err))
        return -1;
    *out = v == 0 ? tf_cpu_count() : (int)v;
    if (*out > max)
        *out = max;
    return 0;
}

/* ---- stopping ---- */

static TfStopFlag stop_flag;
static atomic_int stop_watched;

TfStopFlag *tf_cli_stop_flag(void)
{
    atomic_store(&stop_watched, 1);
    return &stop_flag;
}

int tf_cli_stop_watched(void)
{
    return atomic_load(&stop_watched);
}
