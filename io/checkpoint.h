/* Checkpoint format (DESIGN.md section 7, issue 4): named float32 tensors stored as slices in
 * global coordinates, so a checkpoint written at one tp x dp loads at any other. No MPI
 * here: the caller moves shard indexes between ranks as opaque bytes.
 *
 * A checkpoint is a directory ROOT/step-%09lld/ holding
 *   manifest.pb  header of 20 bytes: "SLCKPT01" | u64 LE length L | u32 LE CRC-32C of the
 *                L message bytes; then L bytes of an slckpt.Manifest (io/checkpoint.proto).
 *                Nothing may follow (a longer or shorter file is rejected).
 *   shard files  names chosen by the caller (e.g. "shard-tp0.pb"), each a sequence of
 *                records: varint length prefix + slckpt.Chunk message (protobuf's
 *                writeDelimited framing). A chunk's payload is at most chunk_limit bytes.
 * The manifest lists every tensor's global shape and chunks; a chunk reference gives its
 * file, the byte offset of its LENGTH PREFIX, the length of prefix + message, its slice,
 * and the CRC-32C of the MESSAGE bytes (those after the prefix).
 *
 * Directory protocol (POSIX): writers fill ROOT/step-N.tmp/ (ckpt_dir_begin); when every
 * shard is fsynced and the manifest written, ckpt_dir_commit renames it to step-N, fsyncs
 * ROOT and replaces the symlink ROOT/latest -> "step-N" atomically. An interrupted write
 * leaves only a .tmp directory, which readers ignore, so the previous checkpoint is intact.
 *
 * Typical use (the MPI parts are the caller's):
 *   writer rank:  ckpt_shard_open; ckpt_shard_put per tensor slice; ckpt_shard_close;
 *                 ckpt_shard_index_pack -> send bytes to rank 0; ckpt_shard_free
 *   rank 0:       ckpt_manifest_init; fill m.meta; ckpt_manifest_add_index per shard;
 *                 ckpt_manifest_write(tmpdir); ckpt_dir_commit; ckpt_prune
 *   resume:       ckpt_open_latest (or ckpt_open) ; ckpt_read_slice per local slice;
 *                 ckpt_close
 * All functions return 1 on success and 0 with st set (message names the file and the
 * place) unless documented otherwise. Nothing here is thread-safe on a shared object. */
#ifndef SHARDLORA_IO_CHECKPOINT_H
#define SHARDLORA_IO_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../runtime/err.h"

#define CKPT_FORMAT_VERSION 1
#define CKPT_CHUNK_LIMIT_DEFAULT ((size_t)64 << 20) /* 64 MiB of payload per chunk */
#define CKPT_MANIFEST_NAME "manifest.pb"
#define CKPT_LATEST_NAME "latest"

/* One stored block: the dense row-major [nr, nc] slice [r0, r0+nr) x [c0, c0+nc). */
typedef struct {
    const char *file; /* shard file name in the checkpoint directory */
    uint64_t offset;  /* byte offset of the varint length prefix */
    uint64_t length;  /* prefix + message bytes */
    int64_t r0, nr, c0, nc;
    uint32_t crc32c; /* of the message bytes */
} CkptChunk;

/* A tensor of global shape [rows, cols] and its chunks (1-D tensors: use [1, n] or [n, 1]
 * consistently). */
typedef struct {
    const char *name;
    int64_t rows, cols;
    CkptChunk *chunks;
    size_t nchunks;
    size_t chunks_cap; /* internal */
} CkptTensor;

/* The scalar part of a manifest. Writers fill it (strings may be NULL = ""; they must stay
 * valid until ckpt_manifest_write); readers expose it (strings owned by the reader, never
 * NULL). format_version is set by the writer and checked by the reader. */
typedef struct {
    uint32_t format_version;
    const char *run_config;        /* JSON text */
    const char *model_fingerprint; /* compared by the caller on resume */
    const char *adapter_config;    /* JSON text */
    int64_t step, epoch, data_cursor;
    uint64_t seed;
    const uint64_t *rng_counters; /* caller-defined */
    size_t n_rng_counters;
    const char *optimizer_kind; /* e.g. "adamw" */
    int64_t optimizer_step;
    const char *optimizer_hparams; /* JSON text */
    int64_t lr_schedule_position;
    int32_t tp, dp, pp;     /* layout written at; informational (pp 0 in older files: 1) */
    const char *extra_json; /* anything else, JSON text */
} CkptMeta;

/* ---- shard writer: one file, one writer ------------------------------------------------- */

typedef struct {
    char *path; /* dir/fname */
    char *fname;
    int fd;
    uint64_t off; /* bytes written so far */
    size_t chunk_limit;
    CkptTensor *tensors; /* the chunk records written, per tensor, in first-put order */
    size_t ntensors, tensors_cap;
    int32_t *slots; /* name hash table (internal) */
    size_t nslots;
    uint8_t *stage; /* write staging buffer (internal) */
    int failed;     /* a write failed: the file is unusable, only ckpt_shard_free remains */
} CkptShard;

/* Creates dir/fname (truncating). chunk_limit: max payload bytes per chunk (0 = default;
 * at least 4). */
int ckpt_shard_open(CkptShard *s, const char *dir, const char *fname, size_t chunk_limit,
                    ErrStatus *st);
/* Appends the dense [nr, nc] block `data` as the slice [r0, r0+nr) x [c0, c0+nc) of tensor
 * `tensor` of global shape [grows, gcols]; split into chunks of at most chunk_limit bytes by
 * rows, and by columns inside a row that alone exceeds it. nr == 0 or nc == 0 writes
 * nothing. The same tensor may be put several times (different slices, same shape). */
int ckpt_shard_put(CkptShard *s, const char *tensor, int64_t grows, int64_t gcols, int64_t r0,
                   int64_t nr, int64_t c0, int64_t nc, const float *data, ErrStatus *st);
/* After a failed put the shard refuses further puts and close; the directory is a .tmp
 * one, so the caller abandons the checkpoint (the previous one is untouched). */
/* fsync the file and its directory, close it. The chunk records stay for the index. */
int ckpt_shard_close(CkptShard *s, ErrStatus *st);
/* Releases everything; an open file is closed without fsync (abandoned write). */
void ckpt_shard_free(CkptShard *s);

/* The shard's chunk records as bytes (a ShardIndex message) for sending to the manifest
 * writer. *buf is malloc'd; the caller frees it. Call after ckpt_shard_close. */
void ckpt_shard_index_pack(const CkptShard *s, uint8_t **buf, size_t *len);

/* ---- manifest writer -------------------------------------------------------------------- */

typedef struct {
    CkptMeta meta; /* filled by the caller */
    CkptTensor *tensors;
    size_t ntensors, tensors_cap;
    int32_t *slots; /* internal */
    size_t nslots;
    char **files; /* interned file names */
    size_t nfiles;
} CkptManifestBuilder;

void ckpt_manifest_init(CkptManifestBuilder *m);
void ckpt_manifest_free(CkptManifestBuilder *m);
/* Merges one shard's index (from ckpt_shard_index_pack, possibly from another rank). The
 * same tensor may get chunks from several shards; its global shape must agree. Validates
 * everything (slices inside shapes, file names) since the bytes crossed a network. */
int ckpt_manifest_add_index(CkptManifestBuilder *m, const uint8_t *buf, size_t len, ErrStatus *st);
/* Same, straight from a local shard (pack + add). */
int ckpt_manifest_add_shard(CkptManifestBuilder *m, const CkptShard *s, ErrStatus *st);
/* Checks every tensor is fully covered by its chunks, then writes dir/manifest.pb durably
 * (afile: tmp, fsync, rename, fsync dir). Tensors are sorted by name and chunks by slice,
 * so the same content gives the same bytes whatever order the indexes arrived in. */
int ckpt_manifest_write(CkptManifestBuilder *m, const char *dir, ErrStatus *st);

/* ---- reader ----------------------------------------------------------------------------- */

typedef struct {
    char *dir;
    CkptMeta meta;
    CkptTensor *tensors; /* sorted by name */
    size_t ntensors;
    /* internal */
    void *pb;               /* the unpacked Manifest; meta and names point into it */
    CkptChunk *chunk_store; /* all chunks, tensors[i].chunks point here */
    struct CkptFile *files;
    size_t nfiles;
    uint8_t *buf; /* scratch for one chunk record, at most the largest chunk */
    size_t buf_cap;
} CkptReader;

/* Reads and verifies dir/manifest.pb: header, CRC, format version, shapes, every chunk
 * inside its tensor, every tensor fully covered, every shard file present and long enough
 * for its chunks. Chunk CRCs are checked on read (ckpt_read_slice, ckpt_verify). On failure
 * r needs no ckpt_close. */
int ckpt_open(CkptReader *r, const char *dir, ErrStatus *st);
void ckpt_close(CkptReader *r);
/* The tensor named `name`, or NULL. */
const CkptTensor *ckpt_find(const CkptReader *r, const char *name);
/* Fills dst, dense row-major [nr, nc], with the slice [r0, r0+nr) x [c0, c0+nc) of tensor
 * `tensor`, from whichever chunks overlap it (each chunk read at most once, duplicates of
 * replicated slices skipped), verifying each chunk's CRC. Fails, before reading anything,
 * if an element of the region is in no chunk. */
int ckpt_read_slice(CkptReader *r, const char *tensor, int64_t r0, int64_t nr, int64_t c0,
                    int64_t nc, float *dst, ErrStatus *st);
/* Reads every chunk and checks its framing, CRC and header. Reports the number of bad
 * chunks and the first one (file, byte offset, tensor). */
int ckpt_verify(CkptReader *r, ErrStatus *st);
/* Human-readable dump of the manifest (for `shardlora inspect`). */
void ckpt_print(const CkptReader *r, FILE *f);

/* ---- directory protocol ----------------------------------------------------------------- */

/* Creates root (and parents) if needed and an empty root/step-%09lld.tmp/, removing a stale
 * one. The path goes to tmpdir_out (n bytes). */
int ckpt_dir_begin(const char *root, int64_t step, char *tmpdir_out, size_t n, ErrStatus *st);
/* fsync step-N.tmp; rename it to step-N (an existing step-N, e.g. a corrupt one being
 * rewritten, is moved aside first and removed after); fsync root; point root/latest at
 * "step-N" (symlink latest.tmp, rename over latest); fsync root. */
int ckpt_dir_commit(const char *root, int64_t step, ErrStatus *st);
/* Committed checkpoints (directories named exactly step-<digits>) under root. Returns how
 * many there are (0 if root does not exist, -1 if it cannot be read); the newest
 * min(count, max) of them go to steps[], ascending. */
int ckpt_list(const char *root, int64_t *steps, int max);
/* Step that root/latest points at, or -1 if there is no valid latest link. */
int64_t ckpt_latest_step(const char *root);
/* Removes the oldest committed checkpoints beyond the newest `keep` (keep <= 0 keeps all),
 * never the one latest points at; also removes leftover .tmp directories of steps at or
 * below latest's (abandoned writes). A checkpoint is renamed to step-N.del before its files
 * are removed, so a half-removed one is never taken for a committed one. */
int ckpt_prune(const char *root, int keep, ErrStatus *st);

/* Removes every step-N.tmp / .del / .old directory under root: leftovers of a write or
 * removal that a crash interrupted. Only for a run starting on root, when no write of its
 * own can be in progress. Each removed name goes to note(ctx, name) (note may be NULL).
 * Returns how many were removed, or -1 with st set (what could not be removed). */
int ckpt_remove_leftovers(const char *root, void (*note)(void *ctx, const char *name), void *ctx,
                          ErrStatus *st);

/* Called once per skipped checkpoint with a message saying which and why. */
typedef void (*CkptWarnFn)(void *ctx, const char *msg);

/* Opens the newest usable checkpoint under root: the one `latest` points at first, then
 * the other committed ones from newest to oldest. A candidate is usable when ckpt_open
 * succeeds and, if verify_all, ckpt_verify too (every chunk's CRC; do this before loading
 * so a bad checkpoint can still be skipped). Each skipped candidate is reported to warn
 * (may be NULL). used_dir (n bytes) gets the resolved directory (root/step-N, never the
 * link) so every rank can open the same one.
 * Returns 1 if one was opened; 0 if root has no checkpoint at all (st ok: a fresh start);
 * -1 if there are checkpoints but none is usable (st says how many were tried). */
int ckpt_open_latest(const char *root, int verify_all, CkptReader *r, char *used_dir, size_t n,
                     CkptWarnFn warn, void *warn_ctx, ErrStatus *st);

#endif
