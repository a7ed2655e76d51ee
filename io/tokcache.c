/* The token cache (see tokcache.h): the fingerprint, one part built in a single streaming
 * pass over its byte range, the commit, and the memory-mapped, checksummed opening.
 *
 * Part file part-NNNNN.tok, host byte order (little-endian on every supported machine;
 * byte_order catches a foreign one):
 *   [0, 64)      TcHeader
 *   int64        doc offsets [ndocs + 1]  (off[0] = 0, off[ndocs] = ntok)
 *   int32        ids [ntok]
 *   int32        labels [ntok]            (-100 = not counted)
 *   int32        positions [ntok]         only when flags has TC_F_POS
 * The arrays' lengths are known only at the end of the part, so each is streamed into its
 * own unlinked temporary file in tmp_dir and the four are copied behind the header at the
 * end (the copy is at disk speed; tokenising is far slower). Memory stays bounded by the
 * longest line, whatever the size of the part. */
#include "tokcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../runtime/log.h"
#include "../runtime/str.h"
#include "afile.h"
#include "crc32c.h"

/* Bump when the part layout or the ids a line gives change (a tokenizer or chat-template
 * fix): the fingerprint then differs and old caches are rebuilt. */
#define TCACHE_VERSION 2
#define TC_MAGIC "SLTOKP01"
#define TC_F_POS 1u
#define TC_BYTE_ORDER 0x01020304u
#define TC_EDGE (64 * 1024)             /* bytes hashed at each end of a data file */
#define TC_IO (1 << 20)                 /* buffer of each stream */
#define TC_LOG_BAD 5                    /* skipped lines logged one by one */
#define TC_MAX_LINE ((size_t)256 << 20) /* bytes of one JSONL line: far beyond any example */
#define TC_MAX_PARTS (1 << 20)          /* parts of a cache: one per rank that built it */

typedef struct {
    char magic[8];        /* "SLTOKP01" */
    uint32_t crc;         /* CRC-32C of every byte after this field, to the end of the file */
    uint32_t flags;       /* TC_F_POS: positions follow the labels */
    int64_t ndocs, ntok;  /* of this part */
    int64_t counted;      /* labels != -100 after each document's first token */
    int32_t part, nparts; /* this part's index and the cache's part count */
    uint32_t byte_order;  /* TC_BYTE_ORDER, as the writer's machine stores it */
    uint32_t reserved[3]; /* 0 */
} TcHeader;
_Static_assert(sizeof(TcHeader) == 64, "the part header is 64 bytes");
#define TC_CRC_FROM (offsetof(TcHeader, crc) + sizeof(uint32_t))

/* A new DsOptions field changes what a line tokenises to: hash it in tcache_fingerprint,
 * then update this size. */
_Static_assert(sizeof(DsOptions) == 24, "hash every DsOptions field in tcache_fingerprint");

/* ---- small I/O helpers ---- */

/* pread until n bytes or end of file; returns the bytes read or -1 (errno set). */
static ssize_t tc_pread(int fd, void *buf, size_t n, off_t at) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, at + (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* open + fstat of a regular file (never blocks on a FIFO); -1 with st set. */
static int tc_open_file(const char *path, struct stat *sb, ErrStatus *st) {
    return afile_open_input(path, sb, st);
}

static void tc_part_path(char *out, size_t n, const char *dir, int part, const char *suffix) {
    int w = snprintf(out, n, "%s/part-%05d%s", dir, part, suffix);
    SL_CHECK(w > 0 && (size_t)w < n, "path too long: %s", dir);
}

/* ---- fingerprint: FNV-1a 64 in two lanes with different offset bases, each finished
 * with splitmix64's mixer; 128 bits against accidental matches, not adversaries. ---- */

#define TC_FNV_PRIME 1099511628211ull

typedef struct {
    uint64_t a, b;
} TcHash;

static void tc_hash(TcHash *h, const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t a = h->a, b = h->b;
    for (size_t i = 0; i < n; i++) {
        a = (a ^ p[i]) * TC_FNV_PRIME;
        b = (b ^ p[i]) * TC_FNV_PRIME;
    }
    h->a = a;
    h->b = b;
}

static void tc_hash_u64(TcHash *h, uint64_t v) {
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(v >> (8 * i));
    tc_hash(h, le, 8);
}

/* Length-prefixed, so ("ab", "c") and ("a", "bc") differ. */
static void tc_hash_bytes(TcHash *h, const void *data, size_t n) {
    tc_hash_u64(h, n);
    tc_hash(h, data, n);
}

static int tc_hash_file_edges(TcHash *h, const char *path, unsigned char *buf, ErrStatus *st) {
    struct stat sb;
    int fd = tc_open_file(path, &sb, st);
    if (fd < 0) return 0;
    tc_hash_bytes(h, path, strlen(path));
    tc_hash_u64(h, (uint64_t)sb.st_size);
    tc_hash_u64(h, (uint64_t)sb.st_mtim.tv_sec);
    tc_hash_u64(h, (uint64_t)sb.st_mtim.tv_nsec);
    size_t n = sb.st_size < TC_EDGE ? (size_t)sb.st_size : TC_EDGE;
    off_t at[2] = {0, sb.st_size - (off_t)n};
    for (int k = 0; k < 2; k++) {
        ssize_t got = tc_pread(fd, buf, n, at[k]);
        if (got < 0) {
            int e = errno;
            close(fd);
            return err_status_set(st, "%s: cannot read: %s", path, strerror(e));
        }
        tc_hash_bytes(h, buf, (size_t)got);
    }
    close(fd);
    return 1;
}

static int tc_hash_file_all(TcHash *h, const char *path, unsigned char *buf, ErrStatus *st) {
    struct stat sb;
    int fd = tc_open_file(path, &sb, st);
    if (fd < 0) return 0;
    off_t at = 0;
    for (;;) {
        ssize_t got = tc_pread(fd, buf, TC_IO, at);
        if (got < 0) {
            int e = errno;
            close(fd);
            return err_status_set(st, "%s: cannot read: %s", path, strerror(e));
        }
        tc_hash(h, buf, (size_t)got);
        at += got;
        if (got < TC_IO) break;
    }
    close(fd);
    tc_hash_u64(h, (uint64_t)at);
    return 1;
}

int tcache_fingerprint(const char *const *files, int nfiles, const char *tokenizer_path,
                       const DsOptions *o, char out[TCACHE_FP_LEN + 1], ErrStatus *st) {
    err_status_ok(st);
    out[0] = 0;
    TcHash h = {14695981039346656037ull, 14695981039346656037ull ^ 0x9e3779b97f4a7c15ull};
    unsigned char *buf = malloc(TC_IO);
    SL_CHECK(buf != NULL, "out of memory");
    tc_hash_u64(&h, TCACHE_VERSION);
    tc_hash_u64(&h, (uint64_t)nfiles);
    int ok = 1;
    for (int i = 0; ok && i < nfiles; i++)
        ok = tc_hash_file_edges(&h, files[i], buf, st);
    /* the tokenizer's bytes, not its path: the same file elsewhere gives the same ids */
    tc_hash_u64(&h, tokenizer_path != NULL);
    if (ok && tokenizer_path) ok = tc_hash_file_all(&h, tokenizer_path, buf, st);
    /* the chat template's id: its texts, variables (special tokens, kwargs) and format */
    const char *chat = o->chat ? o->chat->id : "none";
    tc_hash_bytes(&h, chat, strlen(chat));
    tc_hash_u64(&h, (uint64_t)o->train_on_prompt);
    tc_hash_u64(&h, (uint64_t)(int64_t)o->eos_id);
    tc_hash_u64(&h, (uint64_t)o->vocab);
    free(buf);
    if (!ok) return 0;
    snprintf(out, TCACHE_FP_LEN + 1, "%016llx%016llx", (unsigned long long)str_mix64(h.a),
             (unsigned long long)str_mix64(h.b));
    return 1;
}

/* ---- building a part ---- */

enum { TC_OFF, TC_IDS, TC_LABELS, TC_POS, TC_NSTREAMS };
static const char *const tc_stream_name[TC_NSTREAMS] = {"offsets", "ids", "labels", "positions"};

/* One array of the part, in an unlinked temporary file (nothing is left behind by a
 * crash), buffered by stdio. */
typedef struct {
    FILE *f;
    char *buf;
    int64_t bytes;
} TcStream;

typedef struct {
    const char *tmp_dir;
    int part;
    TcStream s[TC_NSTREAMS];
    int has_pos;
    int64_t ndocs, ntok, counted;
} TcPartWriter;

static int tc_stream_open(TcPartWriter *w, int k, ErrStatus *st) {
    char path[PATH_MAX], suffix[32];
    snprintf(suffix, sizeof suffix, ".%s.tmp", tc_stream_name[k]);
    tc_part_path(path, sizeof path, w->tmp_dir, w->part, suffix);
    TcStream *s = &w->s[k];
    s->f = fopen(path, "w+be");
    if (!s->f) return err_status_set(st, "%s: cannot create: %s", path, strerror(errno));
    unlink(path);
    s->buf = malloc(TC_IO);
    SL_CHECK(s->buf != NULL, "out of memory");
    setvbuf(s->f, s->buf, _IOFBF, TC_IO);
    s->bytes = 0;
    return 1;
}

static void tc_writer_close(TcPartWriter *w) {
    for (int k = 0; k < TC_NSTREAMS; k++) {
        if (w->s[k].f) fclose(w->s[k].f);
        free(w->s[k].buf);
        w->s[k].f = NULL;
        w->s[k].buf = NULL;
    }
}

static int tc_put(TcPartWriter *w, int k, const void *data, size_t n, ErrStatus *st) {
    if (n && fwrite(data, 1, n, w->s[k].f) != n)
        return err_status_set(st, "%s: cannot write the token cache's %s: %s", w->tmp_dir,
                              tc_stream_name[k], strerror(errno));
    w->s[k].bytes += (int64_t)n;
    return 1;
}

/* Positions 0..n-1 of a document that has no position_ids. */
static int tc_put_iota(TcPartWriter *w, int64_t n, ErrStatus *st) {
    int32_t chunk[1024];
    for (int64_t at = 0; at < n;) {
        int64_t m = n - at < 1024 ? n - at : 1024;
        for (int64_t i = 0; i < m; i++)
            chunk[i] = (int32_t)(at + i);
        if (!tc_put(w, TC_POS, chunk, (size_t)m * sizeof *chunk, st)) return 0;
        at += m;
    }
    return 1;
}

/* The first document with position_ids: open the positions stream and give every earlier
 * document 0..len-1, reading their lengths back from the offsets stream. */
static int tc_start_positions(TcPartWriter *w, ErrStatus *st) {
    if (!tc_stream_open(w, TC_POS, st)) return 0;
    w->has_pos = 1;
    if (fflush(w->s[TC_OFF].f) != 0)
        return err_status_set(st, "%s: cannot write the token cache: %s", w->tmp_dir,
                              strerror(errno));
    int fd = fileno(w->s[TC_OFF].f);
    int64_t chunk[1024], prev = 0;
    for (int64_t d = 1; d <= w->ndocs;) {
        int64_t m = w->ndocs + 1 - d < 1024 ? w->ndocs + 1 - d : 1024;
        size_t want = (size_t)m * sizeof *chunk;
        if (tc_pread(fd, chunk, want, (off_t)(d * (int64_t)sizeof *chunk)) != (ssize_t)want)
            return err_status_set(st, "%s: cannot read back the token cache's offsets: %s",
                                  w->tmp_dir, strerror(errno));
        for (int64_t i = 0; i < m; i++) {
            if (!tc_put_iota(w, chunk[i] - prev, st)) return 0;
            prev = chunk[i];
        }
        d += m;
    }
    return 1;
}

static int tc_add_doc(TcPartWriter *w, const DsExample *ex, ErrStatus *st) {
    const size_t n = ex->ids.n;
    if (ex->has_pos && !w->has_pos && !tc_start_positions(w, st)) return 0;
    if (!tc_put(w, TC_IDS, ex->ids.ids, n * sizeof(int32_t), st)) return 0;
    if (!tc_put(w, TC_LABELS, ex->labels, n * sizeof(int32_t), st)) return 0;
    if (w->has_pos) {
        int ok = ex->has_pos ? tc_put(w, TC_POS, ex->pos, n * sizeof(int32_t), st)
                             : tc_put_iota(w, (int64_t)n, st);
        if (!ok) return 0;
    }
    w->ndocs++;
    w->ntok += (int64_t)n;
    w->counted += ex->counted;
    return tc_put(w, TC_OFF, &w->ntok, sizeof w->ntok, st);
}

/* Header + the streams, in order, into tmp_dir/part-NNNNN.tok (write, fsync, rename). The
 * CRC runs over the header after its crc field, then over the arrays as they are copied;
 * the header is written again at the end with it. */
static int tc_write_part(TcPartWriter *w, int nparts, ErrStatus *st) {
    TcHeader h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, TC_MAGIC, 8);
    h.flags = w->has_pos ? TC_F_POS : 0;
    h.ndocs = w->ndocs;
    h.ntok = w->ntok;
    h.counted = w->counted;
    h.part = w->part;
    h.nparts = nparts;
    h.byte_order = TC_BYTE_ORDER;
    const int64_t want[TC_NSTREAMS] = {8 * (w->ndocs + 1), 4 * w->ntok, 4 * w->ntok,
                                       w->has_pos ? 4 * w->ntok : 0};
    for (int k = 0; k < TC_NSTREAMS; k++)
        SL_CHECK(w->s[k].bytes == want[k], "token cache %s: %lld bytes, expected %lld",
                 tc_stream_name[k], (long long)w->s[k].bytes, (long long)want[k]);
    char path[PATH_MAX];
    tc_part_path(path, sizeof path, w->tmp_dir, w->part, ".tok");
    AFile af;
    if (!afile_open(&af, path, st)) return 0;
    uint32_t crc = crc32c_update(0, (const char *)&h + TC_CRC_FROM, sizeof h - TC_CRC_FROM);
    if (!afile_write(&af, &h, sizeof h, st)) return 0;
    char *buf = malloc(TC_IO);
    SL_CHECK(buf != NULL, "out of memory");
    int ok = 1;
    for (int k = 0; ok && k < TC_NSTREAMS; k++) {
        if (!w->s[k].f) continue;
        if (fflush(w->s[k].f) != 0) {
            ok = err_status_set(st, "%s: cannot write the token cache's %s: %s", w->tmp_dir,
                                tc_stream_name[k], strerror(errno));
            afile_abort(&af);
            break;
        }
        int fd = fileno(w->s[k].f);
        for (int64_t at = 0; ok && at < w->s[k].bytes;) {
            size_t m = w->s[k].bytes - at < TC_IO ? (size_t)(w->s[k].bytes - at) : TC_IO;
            if (tc_pread(fd, buf, m, (off_t)at) != (ssize_t)m) {
                ok = err_status_set(st, "%s: cannot read back the token cache's %s: %s", w->tmp_dir,
                                    tc_stream_name[k], strerror(errno));
                afile_abort(&af);
                break;
            }
            crc = crc32c_update(crc, buf, m);
            ok = afile_write(&af, buf, m, st); /* aborts the file on error */
            at += (int64_t)m;
        }
    }
    free(buf);
    if (!ok) return 0;
    h.crc = crc;
    if (pwrite(af.fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
        err_status_set(st, "%s: cannot write the header: %s", af.tmp, strerror(errno));
        afile_abort(&af);
        return 0;
    }
    return afile_commit(&af, st);
}

/* floor(p * S / n) without overflowing for any S < 2^63 and n < 2^31. */
static int64_t tc_split(int64_t S, int p, int n) {
    return (S / n) * p + (S % n) * p / n;
}

/* '\n' bytes in [0, end) of fd: the line number of a bad line in a part that starts
 * mid-file is only needed on this (rare) path. */
static int64_t tc_count_newlines(int fd, int64_t end, char *buf) {
    int64_t lines = 0;
    for (int64_t at = 0; at < end;) {
        size_t m = end - at < TC_IO ? (size_t)(end - at) : TC_IO;
        ssize_t got = tc_pread(fd, buf, m, (off_t)at);
        if (got <= 0) return -1;
        for (ssize_t i = 0; i < got; i++)
            lines += buf[i] == '\n';
        at += got;
    }
    return lines;
}

static int tc_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

/* One data file's share of a part. */
typedef struct {
    const char *path;
    FILE *f;
    char *buf;            /* stdio buffer */
    int64_t first;        /* offset of the first line this part reads in the file */
    int64_t nread;        /* lines read since `first`, blank ones included */
    int64_t lines_before; /* newlines before `first`; -1 until needed */
} TcInput;

/* Everything one part's build uses. */
typedef struct {
    Tokenizer *tk;
    const DsOptions *o;
    int skip_bad;
    TcStats *stats;
    TcPartWriter w;
    DsExample ex;
    char *line; /* str_getline's */
    size_t line_cap;
    char *scratch; /* [TC_IO] for counting newlines */
} TcBuild;

/* "FILE:LINE" of the line just read into `where`. */
static int tc_where(TcBuild *b, TcInput *in, char *where, size_t n, ErrStatus *st) {
    if (in->lines_before < 0) {
        in->lines_before = tc_count_newlines(fileno(in->f), in->first, b->scratch);
        if (in->lines_before < 0)
            return err_status_set(st, "%s: cannot read: %s", in->path, strerror(errno));
    }
    snprintf(where, n, "%s:%lld", in->path, (long long)(in->lines_before + in->nread));
    return 1;
}

/* A bad line: fatal, or (skip_bad) counted, the first few logged. */
static int tc_bad_line(TcBuild *b, TcInput *in, const char *reason, ErrStatus *st) {
    TcStats *stats = b->stats;
    char where[PATH_MAX + 32];
    int need_where = !b->skip_bad || stats->bad_lines < TC_LOG_BAD;
    if (need_where && !tc_where(b, in, where, sizeof where, st)) return 0;
    if (!b->skip_bad) return err_status_set(st, "%s: %s", where, reason);
    stats->bad_lines++;
    /* a long reason is cut: first_bad is a summary line */
    if (stats->bad_lines == 1 &&
        snprintf(stats->first_bad, sizeof stats->first_bad, "%s: %s", where, reason) < 0)
        stats->first_bad[0] = 0;
    if (stats->bad_lines <= TC_LOG_BAD) log_warn("%s: %s (skipped)", where, reason);
    return 1;
}

/* Reads the lines of in->path that start in [lo, hi) (offsets in the file) into the part. */
static int tc_read_range(TcBuild *b, TcInput *in, int64_t lo, int64_t hi, ErrStatus *st) {
    int64_t at = lo;
    ssize_t n;
    int cut = 0;
    if (lo > 0) {
        /* lo is a line start only if the byte before it is '\n': otherwise the line that
         * holds lo belongs to the previous part, and this one starts after it */
        if (fseeko(in->f, (off_t)(lo - 1), SEEK_SET) != 0)
            return err_status_set(st, "%s: cannot seek: %s", in->path, strerror(errno));
        n = str_getline(&b->line, &b->line_cap, in->f, TC_MAX_LINE, &cut);
        at = n > 0 ? lo - 1 + n : hi;
    }
    in->first = at;
    in->nread = 0;
    in->lines_before = -1;
    TcStats *stats = b->stats;
    ErrStatus lst;
    while (at < hi && (n = str_getline(&b->line, &b->line_cap, in->f, TC_MAX_LINE, &cut)) > 0) {
        const int64_t start = at;
        at += n;
        in->nread++;
        if (cut) {
            char reason[160];
            snprintf(reason, sizeof reason,
                     "a line of %lld bytes, longer than the %zu MiB one example may have "
                     "(JSONL holds one example per line)",
                     (long long)n, TC_MAX_LINE >> 20);
            stats->lines++;
            if (!tc_bad_line(b, in, reason, st)) return 0;
            continue;
        }
        char *s = b->line;
        size_t len = (size_t)n;
        if (len && s[len - 1] == '\n') len--;
        if (len && s[len - 1] == '\r') len--;
        if (start == 0 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
            s += 3; /* a UTF-8 byte order mark, as some editors write */
            len -= 3;
        }
        if (tc_blank(s, len)) continue;
        stats->lines++;
        if (!ds_encode_line(b->tk, b->o, s, len, &b->ex, &lst)) {
            if (!tc_bad_line(b, in, lst.msg, st)) return 0;
            continue;
        }
        if (!tc_add_doc(&b->w, &b->ex, st)) return 0;
        stats->docs++;
        stats->tokens += (int64_t)b->ex.ids.n;
        stats->counted += b->ex.counted;
        stats->per_format[b->ex.format]++;
    }
    if (ferror(in->f)) return err_status_set(st, "%s: read error: %s", in->path, strerror(errno));
    return 1;
}

int tcache_build_part(const char *tmp_dir, int part, int nparts, const char *const *files,
                      int nfiles, Tokenizer *tk, const DsOptions *o, int skip_bad, TcStats *stats,
                      ErrStatus *st) {
    SL_CHECK(nparts >= 1 && part >= 0 && part < nparts, "part %d of %d", part, nparts);
    err_status_ok(st);
    memset(stats, 0, sizeof *stats);
    int64_t *size = calloc((size_t)nfiles + 1, sizeof *size), total = 0;
    SL_CHECK(size != NULL, "out of memory");
    for (int i = 0; i < nfiles; i++) {
        struct stat sb;
        const int fd = afile_open_input(files[i], &sb, st);
        if (fd < 0) {
            free(size);
            return 0;
        }
        close(fd);
        size[i] = (int64_t)sb.st_size;
        total += size[i];
    }
    const int64_t lo = tc_split(total, part, nparts), hi = tc_split(total, part + 1, nparts);

    TcBuild b;
    memset(&b, 0, sizeof b);
    b.tk = tk;
    b.o = o;
    b.skip_bad = skip_bad;
    b.stats = stats;
    b.w.tmp_dir = tmp_dir;
    b.w.part = part;
    b.scratch = malloc(TC_IO);
    SL_CHECK(b.scratch != NULL, "out of memory");
    int ok = tc_stream_open(&b.w, TC_OFF, st) && tc_stream_open(&b.w, TC_IDS, st) &&
             tc_stream_open(&b.w, TC_LABELS, st) &&
             tc_put(&b.w, TC_OFF, &b.w.ntok, sizeof b.w.ntok, st);
    int64_t base = 0;
    for (int i = 0; ok && i < nfiles; base += size[i], i++) {
        /* this file's share of [lo, hi), in file offsets */
        const int64_t flo = lo - base > 0 ? lo - base : 0;
        const int64_t fhi = hi - base < size[i] ? hi - base : size[i];
        if (flo >= fhi) continue;
        TcInput in = {.path = files[i], .lines_before = -1};
        in.f = afile_fopen_input(files[i], st);
        if (!in.f) {
            ok = 0;
            break;
        }
        in.buf = malloc(TC_IO);
        SL_CHECK(in.buf != NULL, "out of memory");
        setvbuf(in.f, in.buf, _IOFBF, TC_IO);
        ok = tc_read_range(&b, &in, flo, fhi, st);
        fclose(in.f);
        free(in.buf);
    }
    if (ok && stats->bad_lines > TC_LOG_BAD)
        log_warn("token cache part %d: %lld more bad lines skipped", part,
                 (long long)(stats->bad_lines - TC_LOG_BAD));
    if (ok) ok = tc_write_part(&b.w, nparts, st);
    tc_writer_close(&b.w);
    ds_example_free(&b.ex);
    free(b.line);
    free(b.scratch);
    free(size);
    return ok;
}

/* ---- commit ---- */

/* A name a cache directory holds: index.json, part-NNNNN.tok, and their temporaries. */
static int tc_cache_name(const char *name) {
    return strcmp(name, "index.json") == 0 || strcmp(name, "index.json.tmp") == 0 ||
           (strncmp(name, "part-", 5) == 0 &&
            (strstr(name, ".tok") != NULL || strstr(name, ".tmp") != NULL));
}

/* Removes an old cache directory; anything that is not a cache file stays, and then the
 * directory does too (a --cache pointed at the wrong place must not cost the user data). */
static int tc_remove_cache(const char *dir, ErrStatus *st) {
    DIR *d = opendir(dir);
    if (!d) return err_status_set(st, "%s: cannot open: %s", dir, strerror(errno));
    char path[PATH_MAX];
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!tc_cache_name(e->d_name)) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    if (rmdir(dir) != 0)
        return err_status_set(st, "%s: cannot replace the old token cache: %s%s", dir,
                              strerror(errno),
                              errno == ENOTEMPTY ? " (it holds files that are not a cache)" : "");
    return 1;
}

int tcache_commit(const char *dir, const char *tmp_dir, int nparts, const char *fingerprint,
                  const TcStats *stats, ErrStatus *st) {
    err_status_ok(st);
    char path[PATH_MAX];
    for (int p = 0; p < nparts; p++) {
        struct stat sb;
        tc_part_path(path, sizeof path, tmp_dir, p, ".tok");
        if (stat(path, &sb) != 0)
            return err_status_set(st, "%s: missing (was every part built?)", path);
    }
    json_t *idx = json_object(), *fmt = json_object();
    json_object_set_new(idx, "version", json_integer(TCACHE_VERSION));
    json_object_set_new(idx, "fingerprint", json_string(fingerprint));
    json_object_set_new(idx, "nparts", json_integer(nparts));
    json_object_set_new(idx, "lines", json_integer(stats->lines));
    json_object_set_new(idx, "bad_lines", json_integer(stats->bad_lines));
    json_object_set_new(idx, "docs", json_integer(stats->docs));
    json_object_set_new(idx, "tokens", json_integer(stats->tokens));
    json_object_set_new(idx, "counted", json_integer(stats->counted));
    for (int f = 0; f < DS_NFORMATS; f++)
        json_object_set_new(fmt, ds_format_name((DsFormat)f), json_integer(stats->per_format[f]));
    json_object_set_new(idx, "per_format", fmt);
    json_object_set_new(idx, "first_bad", json_string(stats->first_bad));
    snprintf(path, sizeof path, "%s/index.json", tmp_dir);
    int ok = afile_write_json(path, idx, JSON_INDENT(2) | JSON_PRESERVE_ORDER, st);
    json_decref(idx);
    if (!ok) return 0;
    /* afile_write_json fsynced the file and tmp_dir; now swap the directories */
    struct stat sb;
    if (stat(dir, &sb) == 0 && !tc_remove_cache(dir, st)) return 0;
    if (rename(tmp_dir, dir) != 0)
        return err_status_set(st, "%s: cannot rename %s into place: %s", dir, tmp_dir,
                              strerror(errno));
    snprintf(path, sizeof path, "%s", dir);
    for (size_t n = strlen(path); n > 1 && path[n - 1] == '/'; n--)
        path[n - 1] = 0;
    return afile_fsync_dir(path, st);
}

/* ---- opening ---- */

void tcache_close(TokCache *c) {
    for (int p = 0; p < c->nparts; p++)
        if (c->maps && c->maps[p]) munmap(c->maps[p], c->map_len[p]);
    free(c->maps);
    free(c->map_len);
    free(c->doc0);
    free(c->off);
    free(c->ids);
    free(c->labels);
    free(c->pos);
    memset(c, 0, sizeof *c);
}

static int tc_open_part(TokCache *c, const char *dir, int p, ErrStatus *st) {
    char path[PATH_MAX];
    tc_part_path(path, sizeof path, dir, p, ".tok");
    struct stat sb;
    int fd = tc_open_file(path, &sb, st);
    if (fd < 0) return 0;
    const int64_t size = (int64_t)sb.st_size;
    if (size < (int64_t)sizeof(TcHeader) + 8) {
        close(fd);
        return err_status_set(st, "%s: truncated (%lld bytes)", path, (long long)size);
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return err_status_set(st, "%s: cannot map: %s", path, strerror(errno));
    c->maps[p] = map;
    c->map_len[p] = (size_t)size;
    TcHeader h;
    memcpy(&h, map, sizeof h);
    if (memcmp(h.magic, TC_MAGIC, 8) != 0)
        return err_status_set(st, "%s: not a token cache part (bad magic)", path);
    if (h.byte_order != TC_BYTE_ORDER)
        return err_status_set(st, "%s: written on a machine of another byte order", path);
    if (h.part != p || h.nparts != c->nparts)
        return err_status_set(st, "%s: is part %d of %d, expected part %d of %d", path, h.part,
                              h.nparts, p, c->nparts);
    const int npos = (h.flags & TC_F_POS) ? 1 : 0;
    if ((h.flags & ~TC_F_POS) != 0 || h.ndocs < 0 || h.ntok < 0 || h.ndocs > size / 8 ||
        h.ntok > size / 4)
        return err_status_set(st, "%s: damaged header", path);
    const int64_t want = (int64_t)sizeof h + 8 * (h.ndocs + 1) + 4 * h.ntok * (2 + npos);
    if (size != want)
        return err_status_set(st, "%s: %lld bytes, its header says %lld (truncated?)", path,
                              (long long)size, (long long)want);
    /* This reads the whole part once at every start (disk speed: a minute for ~100 GB).
     * Worth it: a damaged cache would otherwise train on garbage without a word. */
    madvise(map, (size_t)size, MADV_SEQUENTIAL);
    uint32_t crc = crc32c((const char *)map + TC_CRC_FROM, (size_t)size - TC_CRC_FROM);
    madvise(map, (size_t)size, MADV_NORMAL);
    if (crc != h.crc) return err_status_set(st, "%s: checksum mismatch (damaged)", path);
    const int64_t *off = (const int64_t *)((const char *)map + sizeof h);
    if (off[0] != 0 || off[h.ndocs] != h.ntok)
        return err_status_set(st, "%s: document offsets do not add up", path);
    for (int64_t d = 0; d < h.ndocs; d++)
        if (off[d + 1] < off[d])
            return err_status_set(st, "%s: document offsets out of order", path);
    c->off[p] = off;
    c->ids[p] = (const int32_t *)(off + h.ndocs + 1);
    c->labels[p] = c->ids[p] + h.ntok;
    c->pos[p] = npos ? c->labels[p] + h.ntok : NULL;
    c->doc0[p + 1] = c->doc0[p] + h.ndocs;
    c->ntok += h.ntok;
    return 1;
}

/* An integer member of index.json, or -1 (every count is non-negative). */
/* index.json is a few hundred bytes; anything near this is not one */
#define TC_MAX_INDEX ((size_t)1 << 20)

static int64_t tc_json_int(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (int64_t)json_integer_value(v) : -1;
}

static int tc_read_index(TokCache *c, const char *dir, const char *fingerprint, ErrStatus *st) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/index.json", dir);
    struct stat sb;
    if (stat(path, &sb) != 0) return err_status_set(st, "%s: no cache", dir);
    json_t *idx = afile_read_json(path, TC_MAX_INDEX, JSON_REJECT_DUPLICATES, st);
    if (!idx) return 0;
    int ok = 0;
    const char *fp = json_string_value(json_object_get(idx, "fingerprint"));
    int64_t version = tc_json_int(idx, "version"), nparts = tc_json_int(idx, "nparts");
    TcStats *s = &c->stats;
    s->lines = tc_json_int(idx, "lines");
    s->bad_lines = tc_json_int(idx, "bad_lines");
    s->docs = tc_json_int(idx, "docs");
    s->tokens = tc_json_int(idx, "tokens");
    s->counted = tc_json_int(idx, "counted");
    int bad = s->lines < 0 || s->bad_lines < 0 || s->docs < 0 || s->tokens < 0 || s->counted < 0;
    json_t *fmt = json_object_get(idx, "per_format");
    for (int f = 0; f < DS_NFORMATS; f++) {
        s->per_format[f] = tc_json_int(fmt, ds_format_name((DsFormat)f));
        bad |= s->per_format[f] < 0;
    }
    const char *first_bad = json_string_value(json_object_get(idx, "first_bad"));
    snprintf(s->first_bad, sizeof s->first_bad, "%s", first_bad ? first_bad : "");
    if (version != TCACHE_VERSION)
        err_status_set(st, "%s: cache format version %lld, this build reads %d", path,
                       (long long)version, TCACHE_VERSION);
    else if (!fp || strcmp(fp, fingerprint) != 0)
        err_status_set(st, "%s: made from other data or tokenizer settings", dir);
    else if (nparts < 1 || nparts > TC_MAX_PARTS || bad)
        err_status_set(st, "%s: damaged (a count is missing or negative)", path);
    else
        ok = 1;
    c->nparts = ok ? (int)nparts : 0;
    json_decref(idx);
    return ok;
}

int tcache_open(TokCache *c, const char *dir, const char *fingerprint, ErrStatus *st) {
    memset(c, 0, sizeof *c);
    err_status_ok(st);
    if (!tc_read_index(c, dir, fingerprint, st)) {
        tcache_close(c);
        return 0;
    }
    const size_t n = (size_t)c->nparts;
    c->maps = calloc(n, sizeof *c->maps);
    c->map_len = calloc(n, sizeof *c->map_len);
    c->doc0 = calloc(n + 1, sizeof *c->doc0);
    c->off = calloc(n, sizeof *c->off);
    c->ids = calloc(n, sizeof *c->ids);
    c->labels = calloc(n, sizeof *c->labels);
    c->pos = calloc(n, sizeof *c->pos);
    SL_CHECK(c->maps && c->map_len && c->doc0 && c->off && c->ids && c->labels && c->pos,
             "out of memory");
    for (int p = 0; p < c->nparts; p++)
        if (!tc_open_part(c, dir, p, st)) {
            tcache_close(c);
            return 0;
        }
    c->ndocs = c->doc0[c->nparts];
    if (c->ndocs != c->stats.docs || c->ntok != c->stats.tokens) {
        err_status_set(st,
                       "%s: the parts hold %lld documents and %lld tokens, index.json "
                       "says %lld and %lld",
                       dir, (long long)c->ndocs, (long long)c->ntok, (long long)c->stats.docs,
                       (long long)c->stats.tokens);
        tcache_close(c);
        return 0;
    }
    return 1;
}

void tcache_doc(const TokCache *c, int64_t d, TcDoc *out) {
    SL_CHECK(d >= 0 && d < c->ndocs, "document %lld of %lld", (long long)d, (long long)c->ndocs);
    /* the last part p with doc0[p] <= d (empty parts share their doc0 with the next) */
    int lo = 0, hi = c->nparts;
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (c->doc0[mid] <= d)
            lo = mid;
        else
            hi = mid;
    }
    const int64_t k = d - c->doc0[lo], start = c->off[lo][k];
    out->len = c->off[lo][k + 1] - start;
    out->ids = c->ids[lo] + start;
    out->labels = c->labels[lo] + start;
    out->pos = c->pos[lo] ? c->pos[lo] + start : NULL;
}
