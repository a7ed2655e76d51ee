/* Small string and buffer helpers shared by every floor: checked allocation (out of memory
 * is fatal, as everywhere in shardlora), formatting into new strings, paths, durations. */
#ifndef SHARDLORA_RUNTIME_STR_H
#define SHARDLORA_RUNTIME_STR_H

#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Copies of s (malloc'd; never NULL). str_ndup copies at most n bytes and terminates. */
char *str_dup(const char *s);
char *str_ndup(const char *s, size_t n);
/* printf into a new string (malloc'd; never NULL). */
char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "dir/name" (one '/' between them; malloc'd). */
char *str_join_path(const char *dir, const char *name);
/* realloc that never returns NULL (n == 0 allocates 1 byte). */
void *str_xrealloc(void *p, size_t n);
/* Everything left in f (malloc'd, NUL-terminated, *n its length without the NUL). */
char *str_read_stream(FILE *f, size_t *n);
/* getline(3) with a bound: reads one line of f up to and including '\n' and returns the
 * number of bytes read (-1 at the end of f, or on a read error: check ferror), keeping at
 * most the first `max` of them in *line (grown as needed, NUL-terminated, may hold NULs).
 * *cut = 1 when the line was longer than max (its rest is read and dropped, so file offsets
 * stay right), else 0. A file with no newline cannot make it allocate more than max + 1. */
ssize_t str_getline(char **line, size_t *cap, FILE *f, size_t max, int *cut);
/* The names name_at(0), name_at(1), ... up to the first NULL, joined by sep, into buf [n]
 * (truncated to fit; "" when there are none), e.g. a registry's names for help texts. */
void str_join_names(char *buf, size_t n, const char *sep, const char *(*name_at)(int i));
/* x in the fewest significant digits that read back as the same double ("%.{1..17}g": 0.05,
 * not 0.050000000000000003), for numbers people read and tools parse. */
const char *str_fmt_double(double x, char *buf, size_t n);
/* Rewrites, in place, every number with a fraction or exponent in the JSON text t into its
 * str_fmt_double form (never longer), leaving strings alone. For jansson's output, which
 * prints reals with 17 digits. */
void str_json_shorten(char *t);
/* splitmix64's finaliser (Steele, Lea, Flood 2014): spreads every input bit over the
 * output, for hash tables and fingerprints. */
uint64_t str_mix64(uint64_t x);
/* A duration for people: "1h02m03s", "4m05s", "7.3s" ("?" when not finite or negative). */
const char *str_fmt_duration(double seconds, char *buf, size_t n);

#endif
