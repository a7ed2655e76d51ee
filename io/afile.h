/* Durable, atomic file writes, and (below) the one safe way to open an input file.
 * Writes: data go to PATH.tmp, which is fsynced, renamed over PATH,
 * and the directory fsynced, so PATH is always either the old file or the complete new
 * one. On any error PATH is untouched and no .tmp file is left. Used by the writers of
 * whole output files (safetensors, config.json, adapter_config.json, tokenizer.json, the
 * checkpoint manifest, the token cache's files). Not by: checkpoint shards (their step
 * directory is renamed instead), merge's weight files (several ranks fill OUT/NAME.tmp),
 * metrics.jsonl (appended line by line). */
#ifndef SHARDLORA_IO_AFILE_H
#define SHARDLORA_IO_AFILE_H

#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>

#include <jansson.h>

#include "../runtime/err.h"

typedef struct {
    int fd;
    char *path;
    char *tmp;
} AFile;

/* Creates PATH.tmp. Returns 0 with st set if it cannot. */
int afile_open(AFile *f, const char *path, ErrStatus *st);
/* Appends len bytes (retries short writes and EINTR). On error, aborts the file. */
int afile_write(AFile *f, const void *data, size_t len, ErrStatus *st);
/* fsync, close, rename into place, fsync the directory. On error, aborts the file. */
int afile_commit(AFile *f, ErrStatus *st);
/* Closes and removes PATH.tmp (safe to call twice). */
void afile_abort(AFile *f);

/* Appends one record (a line of a log file) of len bytes at the end of the file open at fd
 * (not through a stdio buffer); if the writes fail part-way (a full disk), the file is cut
 * back to where the record began, so it never ends in a torn record. 0 with st =
 * "PATH: cannot write: reason" on failure. */
int afile_append_record(int fd, const char *path, const void *data, size_t len, ErrStatus *st);

/* One call for a whole buffer. */
int afile_write_all(const char *path, const void *data, size_t len, ErrStatus *st);
/* Sets st to "PATH: JSON error at byte B (line L, column C): what" from jansson's error;
 * returns 0 (so a reader can `return afile_json_error(...)`). */
int afile_json_error(ErrStatus *st, const char *path, const json_error_t *e);
/* A JSON document (json_dumps flags), durably. Does not take the reference. */
int afile_write_json(const char *path, const json_t *doc, size_t flags, ErrStatus *st);
/* Removes the files directly inside dir, then dir (no subdirectories expected: the
 * temporary directories of the token cache and checkpoints are flat). A missing dir is
 * fine. Returns 0 with st naming what could not be removed. */
/* mkdir -p DIR (mode 0777 before the umask); 0 with errno set on failure. */
int afile_mkdirs(const char *dir);
int afile_rmdir_flat(const char *dir, ErrStatus *st);
/* fsync the directory that holds path (a rename is durable only after this). */
int afile_fsync_dir(const char *path, ErrStatus *st);

/* ---- reading what a user names -------------------------------------------------------
 * Every input file (model, configs, tokenizer, data, checkpoints, adapters, --config,
 * prompts) is opened through these, so a FIFO, directory or device never blocks or
 * half-reads: open() uses O_NONBLOCK (a FIFO with no writer would otherwise wait forever),
 * the descriptor is fstat'ed and anything but a regular file is refused, then O_NONBLOCK
 * is cleared. */

/* Opens PATH read-only. Returns the descriptor (O_CLOEXEC) with *sb filled, or -1 with st
 * set to "PATH: cannot open: why" (errno kept from open(), so ENOENT can be told apart) or
 * "PATH: not a regular file (a FIFO)". */
int afile_open_input(const char *path, struct stat *sb, ErrStatus *st);
/* The same as a stdio stream (for line readers); NULL with st set. */
FILE *afile_fopen_input(const char *path, ErrStatus *st);
/* The whole of PATH, NUL-terminated (malloc'd, *len without the NUL), or NULL with st set.
 * A file larger than max bytes is refused before anything is read; a file that changes
 * size while being read is refused too. */
char *afile_read_input(const char *path, size_t max, size_t *len, ErrStatus *st);
/* afile_read_input + json_loadb with jansson's flags (pass JSON_REJECT_DUPLICATES unless the
 * file's producer reads the last duplicate, as Python's json does). NULL with st set. */
json_t *afile_read_json(const char *path, size_t max, size_t flags, ErrStatus *st);

#endif
