/* Durable, atomic file writes: data go to PATH.tmp, which is fsynced, renamed over PATH,
 * and the directory fsynced, so PATH is always either the old file or the complete new
 * one. On any error PATH is untouched and no .tmp file is left. Used by the writers of
 * whole output files (safetensors, config.json, adapter_config.json, tokenizer.json, the
 * checkpoint manifest, the token cache's files). Not by: checkpoint shards (their step
 * directory is renamed instead), merge's weight files (several ranks fill OUT/NAME.tmp),
 * metrics.jsonl (appended line by line). */
#ifndef SHARDLORA_IO_AFILE_H
#define SHARDLORA_IO_AFILE_H

#include <stddef.h>

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

#endif
