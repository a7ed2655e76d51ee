/* Table-driven command-line options: the table that parses the flags also prints --help,
 * so the help is always true. `--name value` and `--name=value` ('_' may stand for '-', as
 * Hugging Face users type it); booleans are bare flags (`--name`, `--no-name`, or
 * `--name=true|false`); an ARG_STRS option may be repeated.
 * Besides options, a table holds two kinds of rows: ARG_GROUP rows head a --help section
 * (the options after one belong to its group), and ARG_ALIAS rows give an option another
 * name (e.g. Hugging Face's `learning-rate` for `lr`), optionally standing for a fixed value
 * (`use-dora` = `adapter dora`, a bare flag). An alias and its option given together are
 * refused; run.json and the resolved configuration name options by their own names only.
 * An unknown name is answered with the closest known one ("did you mean ...?").
 * An ARG_CONFIG option (`--config FILE`) reads the same options from a file first, so that
 * flags override it: either a JSON object {"lr": 1e-4, "data": ["a.jsonl", "b.jsonl"],
 * "pack": false} or flat YAML / `key = value` lines (see args_read_config in args.c for the
 * YAML subset). Keys are the flag names or their aliases, with '-' or '_'. */
#ifndef SHARDLORA_LAUNCH_ARGS_H
#define SHARDLORA_LAUNCH_ARGS_H

#include <stdint.h>
#include <stdio.h>

#include "../runtime/err.h"

#include <jansson.h>

typedef enum {
    ARG_STR = 0,
    ARG_INT,
    ARG_FLOAT,
    ARG_BOOL,
    ARG_U64,
    ARG_STRS,
    ARG_CONFIG,
    ARG_GROUP, /* not an option: heads the --help section `group` */
    ARG_ALIAS  /* not an option: another name of option `target` */
} ArgType;

/* The --help sections, printed in this order (ARGG_NONE: options before any ARG_GROUP row). */
typedef enum {
    ARGG_NONE = 0,
    ARGG_MODEL,
    ARGG_DATA,
    ARGG_ADAPTER,
    ARGG_OPTIM,
    ARGG_SCHEDULE,
    ARGG_GENERATION,
    ARGG_CHECKPOINTS,
    ARGG_PARALLEL,
    ARGG_LOGGING,
    ARGG_EXPERT,
    ARGG_COUNT
} ArgGroup;

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

/* One row of a table. Options are written positionally (name .. seen); ARG_GROUP and
 * ARG_ALIAS rows with designated initializers, e.g.
 *   {.type = ARG_GROUP, .group = ARGG_DATA},
 *   {.name = "learning-rate", .type = ARG_ALIAS, .target = "lr"},
 *   {.name = "use-dora", .type = ARG_ALIAS, .target = "adapter", .value = "dora"}, */
typedef struct {
    const char *name; /* without leading dashes */
    ArgType type;
    void *dst; /* const char **, int64_t *, double *, int *, uint64_t *, ArgStrs *,
                  ArgConfig * */
    const char *metavar;
    const char *help; /* the default is printed from *dst */
    int required;
    int seen;            /* set by args_parse: the ArgSource of the value (0: default) */
    ArgGroup group;      /* ARG_GROUP rows: the section they head */
    const char *target;  /* ARG_ALIAS rows: the name of the option they stand for */
    const char *value;   /* ARG_ALIAS rows: NULL (takes a value as the option does) or the
                            value it sets (then a flag: true applies it, false nothing) */
    const char *seen_as; /* set by args_parse: the name (own or alias) that gave the value */
} ArgSpec;

/* Parses argv[first..argc) (after the config file of an ARG_CONFIG option, if one is
 * given). Returns 1, or 0 with st naming the flag, or the file and the key or line.
 * "--help"/"-h" sets *help and stops. */
int args_parse(ArgSpec *specs, int nspecs, int argc, char **argv, int first, int *help,
               ErrStatus *st);
/* usage, about, then the options section by section (ARG_GROUP rows; in ArgGroup order),
 * each with its default and its aliases. */
void args_print_help(FILE *f, const char *usage, const char *about, const ArgSpec *specs,
                     int nspecs);
/* The start of a one-process command: args_parse from argv[first], --help printed on stdout,
 * a bad command line as one "shardlora CMD: reason" line on stderr. Returns 1 to go on, or
 * 0 with *rc the exit status to end with (0 after --help, 2 on a bad command line). */
int args_command(ArgSpec *specs, int nspecs, int argc, char **argv, int first, const char *cmd,
                 const char *usage, const char *about, int *rc);
/* The option called `name` (its own name, not an alias); NULL if none. */
const ArgSpec *args_find(const ArgSpec *specs, int nspecs, const char *name);
/* Releases what args_parse allocated (config strings, ARG_STRS arrays). */
void args_free(ArgSpec *specs, int nspecs);

/* The edit distance (insertions, deletions, substitutions, swaps of neighbours) between a
 * and b; for "did you mean". */
int args_distance(const char *a, const char *b);

/* Every option and its resolved value as a JSON object (lists as arrays, unset strings as
 * null), for run.json. */
json_t *args_to_json(const ArgSpec *specs, int nspecs);
/* Prints "  name = value  (flag|config|default)" per option. */
void args_print_resolved(FILE *f, const ArgSpec *specs, int nspecs);

#endif
