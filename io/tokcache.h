/* The token cache: a dataset tokenised once, kept next to the run's output and
 * memory-mapped, so a large dataset does not live in RAM and a restart does not tokenise
 * again. A cache is a directory:
 *   index.json          format version, fingerprint, parts, and counts (lines, bad lines
 *                       skipped, documents, tokens, counted tokens, per-format counts)
 *   part-NNNNN.tok      the documents of one contiguous range of lines: a header
 *                       ("SLTOKP01", counts, flags, CRC-32C of the rest), then int64
 *                       doc offsets [ndocs + 1], int32 ids [ntok], int32 labels [ntok],
 *                       and int32 positions [ntok] when a document had position_ids
 *                       (then every document has them: 0..n-1 where it gave none).
 *                       The exact layout is at the top of tokcache.c.
 * Parts are built independently (one per MPI rank; no MPI here: launch/ runs them and
 * commits), each from the lines that start in its byte range of the concatenated files.
 * A cache is reused only when its fingerprint matches: the data files (path, size,
 * modification time, and their first and last 64 KiB), the tokenizer.json bytes and the
 * DsOptions (the chat template by its id: its texts, variables and format). Stale or damaged caches
 * are rebuilt, never trusted. */
#ifndef SHARDLORA_IO_TOKCACHE_H
#define SHARDLORA_IO_TOKCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/err.h"
#include "dataset.h"

#define TCACHE_FP_LEN 32 /* hex characters of a fingerprint */

/* out: TCACHE_FP_LEN hex characters + NUL. tokenizer_path may be NULL. 0 with st naming
 * the file that cannot be read. */
int tcache_fingerprint(const char *const *files, int nfiles, const char *tokenizer_path,
                       const DsOptions *o, char out[TCACHE_FP_LEN + 1], ErrStatus *st);

typedef struct {
    int64_t lines;     /* non-blank lines read */
    int64_t bad_lines; /* skipped (skip_bad) */
    int64_t docs, tokens, counted;
    int64_t per_format[DS_NFORMATS];
    char first_bad[512]; /* "file:line: reason" of the first skipped line, or "" */
} TcStats;

/* Tokenises part `part` of `nparts` (lines starting in bytes [part*S/nparts,
 * (part+1)*S/nparts) of the concatenation of files, S its total size; every file starts a
 * line) into tmp_dir/part-NNNNN.tok (tmp_dir must exist), streaming: memory is bounded by
 * the longest line, not by the part. "\r\n" ends a line like "\n", the last line needs no
 * newline, blank (whitespace-only) lines are skipped, a UTF-8 BOM at a file's start is
 * dropped. A bad line: 0 and st = "FILE:LINE: reason" (LINE counted from 1 at the start of
 * FILE), unless skip_bad: then it is counted in stats (the first few also logged as
 * warnings) and the part goes on. An unreadable file: 0 with st naming it. stats is this
 * part's alone. */
int tcache_build_part(const char *tmp_dir, int part, int nparts, const char *const *files,
                      int nfiles, Tokenizer *tk, const DsOptions *o, int skip_bad, TcStats *stats,
                      ErrStatus *st);

/* After every part exists in tmp_dir: writes tmp_dir/index.json (stats = the sum over
 * parts), fsyncs, and renames tmp_dir to dir (replacing an old cache: only the files a
 * cache holds are removed, so a dir that holds anything else is refused). One process. */
int tcache_commit(const char *dir, const char *tmp_dir, int nparts, const char *fingerprint,
                  const TcStats *stats, ErrStatus *st);

typedef struct {
    int64_t ndocs, ntok;
    TcStats stats;
    int nparts;
    /* per part: mapping and where its arrays start */
    void **maps;
    size_t *map_len;
    int64_t *doc0;                        /* [nparts + 1] first global document of each part */
    const int64_t **off;                  /* [nparts] doc offsets of the part */
    const int32_t **ids, **labels, **pos; /* pos[p] NULL when the part has no positions */
} TokCache;

typedef struct {
    const int32_t *ids, *labels;
    const int32_t *pos; /* NULL: positions 0..len-1 */
    int64_t len;
} TcDoc;

/* Opens and maps the cache in dir when its fingerprint is `fingerprint` and every part
 * checks out (sizes, CRC, document offsets; the CRC reads every part once, at disk speed).
 * Returns 1; 0 when it cannot be used, with nothing left open and st saying why
 * ("no cache", "made from other data or tokenizer settings", "part-00001.tok: checksum
 * mismatch", ...); the caller then builds it again. */
int tcache_open(TokCache *c, const char *dir, const char *fingerprint, ErrStatus *st);
void tcache_close(TokCache *c);
/* Document d (0 <= d < ndocs). */
void tcache_doc(const TokCache *c, int64_t d, TcDoc *out);

#endif
