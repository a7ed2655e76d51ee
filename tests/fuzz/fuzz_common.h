/* Shared pieces of the libFuzzer harnesses: the parsers read files, so each harness writes
 * the fuzzed bytes into a private scratch directory (on tmpfs when /dev/shm exists) and
 * hands the library that path. */
#ifndef SHARDLORA_TESTS_FUZZ_COMMON_H
#define SHARDLORA_TESTS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* The process's scratch directory, created on first use and removed at exit. A libFuzzer
 * harness has no context argument, so this is the one static in each harness. */
const char *fz_dir(void);
/* fz_dir()/name in a static buffer (valid until the next call). */
const char *fz_path(const char *name);
/* Writes data[0..n) to fz_dir()/name, replacing it; aborts on an I/O error (that is a
 * fault of the machine, not of the parser). Returns the path. */
const char *fz_write(const char *name, const uint8_t *data, size_t n);
/* The tokenizer.json of the harnesses that need a fixed one: GPT-2-style byte level, a few
 * merges, and the special tokens of every chat format, written to fz_dir() on first use. */
const char *fz_fixed_tokenizer(void);

#endif
