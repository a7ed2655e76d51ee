/* Table-driven command-line options: the table that parses the flags also prints --help,
 * so the help is always true. `--name value` and `--name=value`; booleans are bare flags
 * (`--name`, `--no-name`, or `--name=true|false`); an ARG_STRS option may be repeated.
 * An ARG_CONFIG option (`--config FILE`) reads the same options from a file first, so that
 * flags override it: either a JSON object {"lr": 1e-4, "data": ["a.jsonl", "b.jsonl"],
 * "pack": false} or lines `key = value` (`#` comments, optional double quotes, a repeated
 * key or `[a, b]` for a list). Keys are the flag names; '_' may stand for '-'. */
#ifndef SHARDLORA_LAUNCH_ARGS_H
#define SHARDLORA_LAUNCH_ARGS_H

#include <stdint.h>
#include <stdio.h>

#include "../runtime/err.h"

#include <jansson.h>

typedef enum { ARG_STR = 0, ARG_INT, ARG_FLOAT, ARG_BOOL, ARG_U64, ARG_STRS, ARG_CONFIG } ArgType;

/* Where an option's value came from. */
typedef enum { ARG_FROM_DEFAULT = 0, ARG_FROM_CONFIG, ARG_FROM_FLAG } ArgSource;

/* The value of an ARG_STRS option: n strings (repeat the flag to add one). */
typedef struct {
    const char **v;
    int n, cap;
} ArgStrs;

/* The dst of the ARG_CONFIG option: the file read and the strings it owns. */
typedef struct {
    const char *path;
    char **owned;
    int nowned, cap;
} ArgConfig;

typedef struct {
    const char *name; /* without leading dashes */
    ArgType type;
    void *dst; /* const char **, int64_t *, double *, int *, uint64_t *, ArgStrs *,
                  ArgConfig * */
    const char *metavar;
    const char *help; /* the default is printed from *dst */
    int required;
    int seen; /* set by args_parse: the ArgSource of the value (0: default) */
} ArgSpec;

/* Parses argv[first..argc) (after the config file of an ARG_CONFIG option, if one is
 * given). Returns 1, or 0 with st naming the flag, or the file and the key or line.
 * "--help"/"-h" sets *help and stops. */
int args_parse(ArgSpec *specs, int nspecs, int argc, char **argv, int first, int *help,
               ErrStatus *st);
void args_print_help(FILE *f, const char *usage, const char *about, const ArgSpec *specs,
                     int nspecs);
/* The start of a one-process command: args_parse from argv[first], --help printed on stdout,
 * a bad command line as one "shardlora CMD: reason" line on stderr. Returns 1 to go on, or
 * 0 with *rc the exit status to end with (0 after --help, 2 on a bad command line). */
int args_command(ArgSpec *specs, int nspecs, int argc, char **argv, int first, const char *cmd,
                 const char *usage, const char *about, int *rc);
const ArgSpec *args_find(const ArgSpec *specs, int nspecs, const char *name);
/* Releases what args_parse allocated (config strings, ARG_STRS arrays). */
void args_free(ArgSpec *specs, int nspecs);

/* Every option and its resolved value as a JSON object (lists as arrays, unset strings as
 * null), for run.json. */
json_t *args_to_json(const ArgSpec *specs, int nspecs);
/* Prints "  name = value  (flag|config|default)" per option. */
void args_print_resolved(FILE *f, const ArgSpec *specs, int nspecs);

#endif
