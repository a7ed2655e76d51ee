/* Table-driven command-line options: the table that parses the flags also prints --help,
 * so the help is always true. `--name value` and `--name=value`; booleans are bare flags. */
#ifndef SHARDLORA_LAUNCH_ARGS_H
#define SHARDLORA_LAUNCH_ARGS_H

#include <stdint.h>
#include <stdio.h>

#include "../runtime/err.h"

typedef enum { ARG_STR = 0, ARG_INT, ARG_FLOAT, ARG_BOOL, ARG_U64 } ArgType;

typedef struct {
    const char *name;   /* without leading dashes */
    ArgType type;
    void *dst;          /* const char **, int64_t *, double *, int *, uint64_t * */
    const char *metavar;
    const char *help;   /* the default is printed from *dst */
    int required;
    int seen;           /* set by args_parse */
} ArgSpec;

/* Parses argv[first..argc). Returns 1, or 0 with st naming the flag. "--help"/"-h" sets
 * *help and stops. */
int args_parse(ArgSpec *specs, int nspecs, int argc, char **argv, int first, int *help,
               ErrStatus *st);
void args_print_help(FILE *f, const char *usage, const char *about, const ArgSpec *specs,
                     int nspecs);
const ArgSpec *args_find(const ArgSpec *specs, int nspecs, const char *name);

#endif
