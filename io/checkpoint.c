/* Checkpoint shard writer, manifest writer, resharding reader and directory protocol (see
 * checkpoint.h for the file layout). Chunk data are streamed to disk and read back with
 * pread one chunk at a time, so memory use is bounded by the chunk limit, not the model. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "checkpoint.h"
#include "afile.h"
#include "crc32c.h"
#include "io/checkpoint.pb-c.h"
#include "runtime/str.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_MAGIC "SLCKPT01"
#define CKPT_HEADER_BYTES 20                  /* magic 8 + length 8 + crc 4 */
#define CKPT_MAX_MANIFEST ((uint64_t)1 << 30) /* sanity bound before allocating */
#define CKPT_MAX_RECORD ((uint64_t)1 << 30)   /* one chunk record; protobuf's limit is 2 GiB */
#define CKPT_MAX_DIM ((int64_t)1 << 40)
#define CKPT_MAX_NAME 4096
#define CKPT_MAX_FILE_NAME 255
#define CKPT_MAX_CELLS ((uint64_t)1 << 28) /* coverage grid bound (bytes) */
#define CKPT_STAGE_BYTES ((size_t)1 << 20) /* write staging, per shard */

struct CkptFile {
    const char *name;
    int fd;
    uint64_t size;
};

/* ---- small helpers ---------------------------------------------------------------------- */

static const char *ckpt_str(const char *s) {
    return s ? s : "";
}

/* Shard file names are joined to the checkpoint directory, so they must not escape it. */
static int ckpt_fname_ok(const char *f) {
    size_t n = strlen(f);
    return n > 0 && n <= CKPT_MAX_FILE_NAME && !strchr(f, '/') && strcmp(f, ".") != 0 &&
           strcmp(f, "..") != 0;
}

static int ckpt_shape_ok(int64_t rows, int64_t cols) {
    return rows >= 1 && cols >= 1 && rows <= CKPT_MAX_DIM && cols <= CKPT_MAX_DIM &&
           rows <= INT64_MAX / 4 / cols;
}

static int ckpt_write_full(int fd, const uint8_t *p, size_t len) {
    while (len > 0) {
        ssize_t put = write(fd, p, len);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) {
            if (put == 0) errno = EIO;
            return 0;
        }
        p += put;
        len -= (size_t)put;
    }
    return 1;
}

/* Returns bytes read (short only at end of file) or -1. */
static ssize_t ckpt_pread_full(int fd, uint8_t *p, size_t len, uint64_t off) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, p + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static size_t ckpt_varint_put(uint8_t *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Parses a varint of at most 10 bytes from p[0..len). Returns its size or 0 if malformed. */
static size_t ckpt_varint_get(const uint8_t *p, size_t len, uint64_t *v) {
    uint64_t x = 0;
    for (size_t i = 0; i < len && i < 10; i++) {
        x |= (uint64_t)(p[i] & 0x7F) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = x;
            return i + 1;
        }
    }
    return 0;
}

static void ckpt_put_le(uint8_t *p, uint64_t v, int nbytes) {
    for (int i = 0; i < nbytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t ckpt_get_le(const uint8_t *p, int nbytes) {
    uint64_t v = 0;
    for (int i = 0; i < nbytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int ckpt_fsync_dir_path(const char *dir, ErrStatus *st) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return err_status_set(st, "%s: cannot open directory: %s", dir, strerror(errno));
    int ok = 1;
    /* Some filesystems cannot fsync a directory; that is not a failure of ours. */
    if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP)
        ok = err_status_set(st, "%s: fsync failed: %s", dir, strerror(errno));
    close(fd);
    return ok;
}

/* ---- tensor tables: name -> index, open addressing (shard and manifest builder) --------- */

static uint64_t ckpt_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static void ckpt_slots_rebuild(int32_t **slots, size_t *nslots, const CkptTensor *t, size_t n) {
    size_t cap = 64;
    while (cap < 2 * (n + 1))
        cap *= 2;
    int32_t *s = str_xrealloc(*slots, cap * sizeof *s);
    for (size_t i = 0; i < cap; i++)
        s[i] = -1;
    for (size_t i = 0; i < n; i++) {
        size_t k = ckpt_hash(t[i].name) & (cap - 1);
        while (s[k] >= 0)
            k = (k + 1) & (cap - 1);
        s[k] = (int32_t)i;
    }
    *slots = s;
    *nslots = cap;
}

/* The tensor called name, created (with the given shape) if absent; NULL with st set if it
 * exists with another shape. */
static CkptTensor *ckpt_table_get(CkptTensor **tensors, size_t *n, size_t *cap, int32_t **slots,
                                  size_t *nslots, const char *name, int64_t rows, int64_t cols,
                                  const char *where, ErrStatus *st) {
    if (*nslots == 0 || 2 * (*n + 1) > *nslots) ckpt_slots_rebuild(slots, nslots, *tensors, *n);
    size_t k = ckpt_hash(name) & (*nslots - 1);
    while ((*slots)[k] >= 0) {
        CkptTensor *t = &(*tensors)[(*slots)[k]];
        if (strcmp(t->name, name) == 0) {
            if (t->rows != rows || t->cols != cols) {
                err_status_set(st,
                               "%s: tensor %s: global shape [%" PRId64 ", %" PRId64
                               "] disagrees with [%" PRId64 ", %" PRId64 "] seen before",
                               where, name, rows, cols, t->rows, t->cols);
                return NULL;
            }
            return t;
        }
        k = (k + 1) & (*nslots - 1);
    }
    SL_CHECK(*n < INT32_MAX, "too many tensors");
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 16;
        *tensors = str_xrealloc(*tensors, *cap * sizeof **tensors);
    }
    CkptTensor *t = &(*tensors)[*n];
    memset(t, 0, sizeof *t);
    t->name = str_dup(name);
    t->rows = rows;
    t->cols = cols;
    (*slots)[k] = (int32_t)(*n)++;
    return t;
}

static void ckpt_table_free(CkptTensor *tensors, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free((char *)tensors[i].name);
        free(tensors[i].chunks);
    }
    free(tensors);
}

static void ckpt_chunk_push(CkptTensor *t, const CkptChunk *c) {
    if (t->nchunks == t->chunks_cap) {
        t->chunks_cap = t->chunks_cap ? 2 * t->chunks_cap : 4;
        t->chunks = str_xrealloc(t->chunks, t->chunks_cap * sizeof *t->chunks);
    }
    t->chunks[t->nchunks++] = *c;
}

/* A chunk reference is plausible for tensor t: slice inside the shape, a record length
 * that can hold the payload and stays far below protobuf's limit. */
static int ckpt_chunk_check(const char *where, const CkptTensor *t, const CkptChunk *c,
                            ErrStatus *st) {
    if (!ckpt_fname_ok(c->file))
        return err_status_set(st, "%s: tensor %s: bad shard file name \"%s\"", where, t->name,
                              c->file);
    if (c->nr < 1 || c->nc < 1 || c->r0 < 0 || c->c0 < 0 || c->r0 > t->rows - c->nr ||
        c->c0 > t->cols - c->nc)
        return err_status_set(st,
                              "%s: tensor %s [%" PRId64 ", %" PRId64 "]: chunk in %s at byte "
                              "offset %" PRIu64 " has slice rows [%" PRId64 ", %" PRId64
                              ") cols [%" PRId64 ", %" PRId64 ") outside the tensor",
                              where, t->name, t->rows, t->cols, c->file, c->offset, c->r0,
                              c->r0 + c->nr, c->c0, c->c0 + c->nc);
    if (c->length < 2 || c->length > CKPT_MAX_RECORD || c->offset > UINT64_MAX - c->length ||
        (uint64_t)c->nr * (uint64_t)c->nc * 4 >= c->length)
        return err_status_set(st,
                              "%s: tensor %s: chunk in %s at byte offset %" PRIu64
                              " has implausible length %" PRIu64 " for %" PRId64 " x %" PRId64
                              " floats",
                              where, t->name, c->file, c->offset, c->length, c->nr, c->nc);
    return 1;
}

/* ---- coverage ----------------------------------------------------------------------------- */

static int ckpt_cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static size_t ckpt_uniq(int64_t *v, size_t n) {
    qsort(v, n, sizeof *v, ckpt_cmp_i64);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || v[m - 1] != v[i]) v[m++] = v[i];
    return m;
}

static size_t ckpt_bound_index(const int64_t *v, size_t n, int64_t x) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Is every element of [r0, r0+nr) x [c0, c0+nc) in some chunk of t? The region is cut at
 * every chunk edge inside it (coordinate compression), so the grid is at most
 * (2k+1)^2 cells for k overlapping chunks, whatever the tensor's size. If need != NULL,
 * need[i] is set for the chunks that contribute an element no earlier chunk had, so a
 * reader reads each element once and skips duplicates of replicated slices.
 * Returns 1 if covered; 0 with (*mr, *mc) = the first element (row-major) in no chunk;
 * -1 if the layout is too fragmented to check. */
static int ckpt_cover(const CkptTensor *t, int64_t r0, int64_t nr, int64_t c0, int64_t nc,
                      uint8_t *need, int64_t *mr, int64_t *mc) {
    size_t k = t->nchunks;
    int64_t *rb = malloc((2 * k + 2) * sizeof *rb);
    int64_t *cb = malloc((2 * k + 2) * sizeof *cb);
    SL_CHECK(rb && cb, "out of memory");
    size_t nrb = 0, ncb = 0;
    rb[nrb++] = r0;
    rb[nrb++] = r0 + nr;
    cb[ncb++] = c0;
    cb[ncb++] = c0 + nc;
    for (size_t i = 0; i < k; i++) {
        const CkptChunk *c = &t->chunks[i];
        if (need) need[i] = 0;
        int64_t a = c->r0 > r0 ? c->r0 : r0, b = c->r0 + c->nr < r0 + nr ? c->r0 + c->nr : r0 + nr;
        int64_t x = c->c0 > c0 ? c->c0 : c0, y = c->c0 + c->nc < c0 + nc ? c->c0 + c->nc : c0 + nc;
        if (a >= b || x >= y) continue;
        rb[nrb++] = a;
        rb[nrb++] = b;
        cb[ncb++] = x;
        cb[ncb++] = y;
    }
    nrb = ckpt_uniq(rb, nrb);
    ncb = ckpt_uniq(cb, ncb);
    size_t gr = nrb - 1, gc = ncb - 1;
    if ((uint64_t)gr * gc > CKPT_MAX_CELLS) {
        free(rb);
        free(cb);
        return -1;
    }
    uint8_t *cell = calloc(gr * gc, 1);
    SL_CHECK(cell != NULL, "out of memory");
    for (size_t i = 0; i < k; i++) {
        const CkptChunk *c = &t->chunks[i];
        int64_t a = c->r0 > r0 ? c->r0 : r0, b = c->r0 + c->nr < r0 + nr ? c->r0 + c->nr : r0 + nr;
        int64_t x = c->c0 > c0 ? c->c0 : c0, y = c->c0 + c->nc < c0 + nc ? c->c0 + c->nc : c0 + nc;
        if (a >= b || x >= y) continue;
        size_t i0 = ckpt_bound_index(rb, nrb, a), i1 = ckpt_bound_index(rb, nrb, b);
        size_t j0 = ckpt_bound_index(cb, ncb, x), j1 = ckpt_bound_index(cb, ncb, y);
        int adds = 0;
        for (size_t ii = i0; ii < i1; ii++)
            for (size_t jj = j0; jj < j1; jj++)
                if (!cell[ii * gc + jj]) {
                    cell[ii * gc + jj] = 1;
                    adds = 1;
                }
        if (need && adds) need[i] = 1;
    }
    int covered = 1;
    for (size_t ii = 0; ii < gr && covered; ii++)
        for (size_t jj = 0; jj < gc; jj++)
            if (!cell[ii * gc + jj]) {
                *mr = rb[ii];
                *mc = cb[jj];
                covered = 0;
                break;
            }
    free(cell);
    free(rb);
    free(cb);
    return covered;
}

/* Every element of t is in some chunk. */
static int ckpt_check_whole(const char *where, const CkptTensor *t, ErrStatus *st) {
    int64_t mr = 0, mc = 0;
    int cov = ckpt_cover(t, 0, t->rows, 0, t->cols, NULL, &mr, &mc);
    if (cov < 0)
        return err_status_set(st, "%s: tensor %s: %zu chunks are too fragmented to check", where,
                              t->name, t->nchunks);
    if (cov == 0)
        return err_status_set(st,
                              "%s: tensor %s [%" PRId64 ", %" PRId64 "]: element (%" PRId64
                              ", %" PRId64 ") is in no chunk (%zu chunks; a shard missing?)",
                              where, t->name, t->rows, t->cols, mr, mc, t->nchunks);
    return 1;
}

/* ---- shard writer ----------------------------------------------------------------------- */

/* protobuf-c packs into this "buffer": bytes go to the file through a staging area and the
 * CRC is computed on the way, so a chunk is never held in memory a second time. */
typedef struct {
    ProtobufCBuffer base;
    CkptShard *s;
    uint8_t *stage;
    size_t nstage;
    uint32_t crc;
    uint64_t written;
    int err; /* errno of the first failed write */
} CkptSink;

static void ckpt_sink_flush(CkptSink *k) {
    if (k->nstage && !k->err && !ckpt_write_full(k->s->fd, k->stage, k->nstage)) k->err = errno;
    k->nstage = 0;
}

static void ckpt_sink_append(ProtobufCBuffer *b, size_t len, const uint8_t *data) {
    CkptSink *k = (CkptSink *)b;
    k->crc = crc32c_update(k->crc, data, len);
    k->written += len;
    if (k->nstage + len > CKPT_STAGE_BYTES) ckpt_sink_flush(k);
    if (len >= CKPT_STAGE_BYTES) {
        if (!k->err && !ckpt_write_full(k->s->fd, data, len)) k->err = errno;
        return;
    }
    memcpy(k->stage + k->nstage, data, len);
    k->nstage += len;
}

int ckpt_shard_open(CkptShard *s, const char *dir, const char *fname, size_t chunk_limit,
                    ErrStatus *st) {
    err_status_ok(st);
    memset(s, 0, sizeof *s);
    s->fd = -1;
    if (!ckpt_fname_ok(fname))
        return err_status_set(st, "%s: bad shard file name \"%s\" (must be a plain name)", dir,
                              fname);
    if (chunk_limit == 0) chunk_limit = CKPT_CHUNK_LIMIT_DEFAULT;
    if (chunk_limit < 4 || chunk_limit > CKPT_MAX_RECORD / 2)
        return err_status_set(st, "%s/%s: chunk limit %zu bytes is outside [4, %" PRIu64 "]", dir,
                              fname, chunk_limit, CKPT_MAX_RECORD / 2);
    s->path = str_join_path(dir, fname);
    s->fname = str_dup(fname);
    s->chunk_limit = chunk_limit;
    s->stage = malloc(CKPT_STAGE_BYTES);
    SL_CHECK(s->stage != NULL, "out of memory");
    s->fd = open(s->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (s->fd < 0) {
        err_status_set(st, "%s: cannot create: %s", s->path, strerror(errno));
        ckpt_shard_free(s);
        return 0;
    }
    return 1;
}

/* One record: varint(len) + Chunk message, data being `nr * nc` contiguous floats. */
static int ckpt_shard_write_chunk(CkptShard *s, CkptTensor *t, int64_t r0, int64_t nr, int64_t c0,
                                  int64_t nc, const float *data, ErrStatus *st) {
    Slckpt__Chunk msg = SLCKPT__CHUNK__INIT;
    msg.tensor = (char *)t->name;
    msg.r0 = r0;
    msg.nr = nr;
    msg.c0 = c0;
    msg.nc = nc;
    msg.n_data = (size_t)(nr * nc);
    msg.data = (float *)data; /* only read by the packer */
    size_t mlen = slckpt__chunk__get_packed_size(&msg);
    CkptSink k = {.base = {ckpt_sink_append}, .s = s, .stage = s->stage};
    uint8_t pre[10];
    size_t plen = ckpt_varint_put(pre, mlen);
    memcpy(k.stage, pre, plen);
    k.nstage = plen;
    k.crc = 0;
    slckpt__chunk__pack_to_buffer(&msg, &k.base);
    ckpt_sink_flush(&k);
    SL_CHECK(k.written == mlen, "protobuf-c packed %" PRIu64 " bytes, predicted %zu", k.written,
             mlen);
    if (k.err) {
        s->failed = 1;
        return err_status_set(st, "%s: write failed at byte %" PRIu64 " (tensor %s): %s", s->path,
                              s->off, t->name, strerror(k.err));
    }
    CkptChunk c = {.file = s->fname,
                   .offset = s->off,
                   .length = plen + mlen,
                   .r0 = r0,
                   .nr = nr,
                   .c0 = c0,
                   .nc = nc,
                   .crc32c = k.crc};
    ckpt_chunk_push(t, &c);
    s->off += plen + mlen;
    return 1;
}

int ckpt_shard_put(CkptShard *s, const char *tensor, int64_t grows, int64_t gcols, int64_t r0,
                   int64_t nr, int64_t c0, int64_t nc, const float *data, ErrStatus *st) {
    err_status_ok(st);
    if (s->fd < 0) return err_status_set(st, "%s: shard is not open", ckpt_str(s->path));
    if (s->failed) return err_status_set(st, "%s: an earlier write failed", s->path);
    if (!tensor || !*tensor || strlen(tensor) > CKPT_MAX_NAME)
        return err_status_set(st, "%s: bad tensor name", s->path);
    if (!ckpt_shape_ok(grows, gcols))
        return err_status_set(st, "%s: tensor %s: bad global shape [%" PRId64 ", %" PRId64 "]",
                              s->path, tensor, grows, gcols);
    if (r0 < 0 || nr < 0 || c0 < 0 || nc < 0 || r0 > grows - nr || c0 > gcols - nc)
        return err_status_set(st,
                              "%s: tensor %s [%" PRId64 ", %" PRId64 "]: slice rows [%" PRId64
                              ", %" PRId64 ") cols [%" PRId64 ", %" PRId64
                              ") is outside the tensor",
                              s->path, tensor, grows, gcols, r0, r0 + nr, c0, c0 + nc);
    if (nr == 0 || nc == 0) return 1;
    CkptTensor *t = ckpt_table_get(&s->tensors, &s->ntensors, &s->tensors_cap, &s->slots,
                                   &s->nslots, tensor, grows, gcols, s->path, st);
    if (!t) return 0;
    int64_t row_bytes = nc * 4;
    int64_t limit = (int64_t)s->chunk_limit;
    int ok = 1;
    if (row_bytes <= limit) {
        /* Whole rows: a chunk is a contiguous run of rows of the dense block. */
        int64_t per = limit / row_bytes;
        for (int64_t i = 0; i < nr && ok; i += per) {
            int64_t m = nr - i < per ? nr - i : per;
            ok = ckpt_shard_write_chunk(s, t, r0 + i, m, c0, nc, data + i * nc, st);
        }
    } else {
        /* A single row is over the limit: split each row by columns. */
        int64_t per = limit / 4;
        for (int64_t i = 0; i < nr && ok; i++)
            for (int64_t j = 0; j < nc && ok; j += per) {
                int64_t m = nc - j < per ? nc - j : per;
                ok = ckpt_shard_write_chunk(s, t, r0 + i, 1, c0 + j, m, data + i * nc + j, st);
            }
    }
    return ok;
}

int ckpt_shard_close(CkptShard *s, ErrStatus *st) {
    err_status_ok(st);
    if (s->fd < 0) return err_status_set(st, "%s: shard is not open", ckpt_str(s->path));
    if (s->failed) return err_status_set(st, "%s: an earlier write failed", s->path);
    int ok = 1;
    if (fsync(s->fd) != 0)
        ok = err_status_set(st, "%s: fsync failed: %s", s->path, strerror(errno));
    if (close(s->fd) != 0 && ok)
        ok = err_status_set(st, "%s: close failed: %s", s->path, strerror(errno));
    s->fd = -1;
    /* The directory entry must be durable too: the shard may be the only file this rank
     * creates in the directory (on a shared filesystem, rank 0's fsync does not cover it). */
    if (ok) ok = afile_fsync_dir(s->path, st);
    return ok;
}

void ckpt_shard_free(CkptShard *s) {
    if (s->fd >= 0) close(s->fd);
    ckpt_table_free(s->tensors, s->ntensors);
    free(s->slots);
    free(s->path);
    free(s->fname);
    free(s->stage);
    memset(s, 0, sizeof *s);
    s->fd = -1;
}

/* ---- shard index -------------------------------------------------------------------------- */

/* The protobuf view of a list of tensors and their chunk records (pointers into the
 * records; nothing is copied). The shard index and the manifest both carry it. */
typedef struct {
    Slckpt__TensorEntry *te, **tp;
    Slckpt__ChunkRef *cr, **cp;
} CkptPbTensors;

/* tensors[i] for i < n, in that order; file_override: the file name every chunk reports
 * (the shard index names its file once), or NULL for each chunk's own. */
static void ckpt_pb_tensors(CkptPbTensors *pb, const CkptTensor *const *tensors, size_t n,
                            const char *file_override) {
    size_t nch = 0;
    for (size_t i = 0; i < n; i++)
        nch += tensors[i]->nchunks;
    pb->te = calloc(n + 1, sizeof *pb->te);
    pb->tp = calloc(n + 1, sizeof *pb->tp);
    pb->cr = calloc(nch + 1, sizeof *pb->cr);
    pb->cp = calloc(nch + 1, sizeof *pb->cp);
    SL_CHECK(pb->te && pb->tp && pb->cr && pb->cp, "out of memory");
    size_t q = 0;
    for (size_t i = 0; i < n; i++) {
        const CkptTensor *t = tensors[i];
        Slckpt__TensorEntry *e = &pb->te[i];
        slckpt__tensor_entry__init(e);
        e->name = (char *)t->name;
        e->rows = t->rows;
        e->cols = t->cols;
        e->n_chunks = t->nchunks;
        e->chunks = pb->cp + q;
        for (size_t j = 0; j < t->nchunks; j++, q++) {
            const CkptChunk *c = &t->chunks[j];
            Slckpt__ChunkRef *r = &pb->cr[q];
            slckpt__chunk_ref__init(r);
            r->file = (char *)(file_override ? file_override : c->file);
            r->offset = c->offset;
            r->length = c->length;
            r->r0 = c->r0;
            r->nr = c->nr;
            r->c0 = c->c0;
            r->nc = c->nc;
            r->crc32c = c->crc32c;
            pb->cp[q] = r;
        }
        pb->tp[i] = e;
    }
}

static void ckpt_pb_tensors_free(CkptPbTensors *pb) {
    free(pb->te);
    free(pb->tp);
    free(pb->cr);
    free(pb->cp);
}

void ckpt_shard_index_pack(const CkptShard *s, uint8_t **buf, size_t *len) {
    const CkptTensor **list = malloc((s->ntensors + 1) * sizeof *list);
    SL_CHECK(list != NULL, "out of memory");
    for (size_t i = 0; i < s->ntensors; i++)
        list[i] = &s->tensors[i];
    CkptPbTensors pb;
    ckpt_pb_tensors(&pb, list, s->ntensors, "");
    Slckpt__ShardIndex idx = SLCKPT__SHARD_INDEX__INIT;
    idx.file = s->fname ? s->fname : (char *)"";
    idx.n_tensors = s->ntensors;
    idx.tensors = pb.tp;
    *len = slckpt__shard_index__get_packed_size(&idx);
    *buf = malloc(*len ? *len : 1);
    SL_CHECK(*buf != NULL, "out of memory");
    slckpt__shard_index__pack(&idx, *buf);
    ckpt_pb_tensors_free(&pb);
    free(list);
}

/* ---- manifest builder --------------------------------------------------------------------- */

void ckpt_manifest_init(CkptManifestBuilder *m) {
    memset(m, 0, sizeof *m);
}

void ckpt_manifest_free(CkptManifestBuilder *m) {
    ckpt_table_free(m->tensors, m->ntensors);
    free(m->slots);
    for (size_t i = 0; i < m->nfiles; i++)
        free(m->files[i]);
    free(m->files);
    memset(m, 0, sizeof *m);
}

static const char *ckpt_builder_file(CkptManifestBuilder *m, const char *name) {
    for (size_t i = 0; i < m->nfiles; i++)
        if (strcmp(m->files[i], name) == 0) return m->files[i];
    m->files = str_xrealloc(m->files, (m->nfiles + 1) * sizeof *m->files);
    m->files[m->nfiles] = str_dup(name);
    return m->files[m->nfiles++];
}

int ckpt_manifest_add_index(CkptManifestBuilder *m, const uint8_t *buf, size_t len, ErrStatus *st) {
    err_status_ok(st);
    Slckpt__ShardIndex *idx = slckpt__shard_index__unpack(NULL, len, buf);
    if (!idx)
        return err_status_set(st, "shard index (%zu bytes): cannot parse ShardIndex message", len);
    char where[CKPT_MAX_FILE_NAME + 64];
    snprintf(where, sizeof where, "shard index of %s", idx->file);
    int ok = 1;
    if (!ckpt_fname_ok(idx->file))
        ok = err_status_set(st, "shard index: bad shard file name \"%s\"", idx->file);
    for (size_t i = 0; ok && i < idx->n_tensors; i++) {
        const Slckpt__TensorEntry *e = idx->tensors[i];
        if (!e->name[0] || strlen(e->name) > CKPT_MAX_NAME || !ckpt_shape_ok(e->rows, e->cols)) {
            ok = err_status_set(st, "%s: tensor %zu (\"%.64s\"): bad name or shape", where, i,
                                e->name);
            break;
        }
        CkptTensor *t = ckpt_table_get(&m->tensors, &m->ntensors, &m->tensors_cap, &m->slots,
                                       &m->nslots, e->name, e->rows, e->cols, where, st);
        if (!t) {
            ok = 0;
            break;
        }
        for (size_t j = 0; ok && j < e->n_chunks; j++) {
            const Slckpt__ChunkRef *r = e->chunks[j];
            CkptChunk c = {.file = r->file[0] ? r->file : idx->file,
                           .offset = r->offset,
                           .length = r->length,
                           .r0 = r->r0,
                           .nr = r->nr,
                           .c0 = r->c0,
                           .nc = r->nc,
                           .crc32c = r->crc32c};
            if (!ckpt_chunk_check(where, t, &c, st)) {
                ok = 0;
                break;
            }
            c.file = ckpt_builder_file(m, c.file);
            ckpt_chunk_push(t, &c);
        }
    }
    slckpt__shard_index__free_unpacked(idx, NULL);
    return ok;
}

int ckpt_manifest_add_shard(CkptManifestBuilder *m, const CkptShard *s, ErrStatus *st) {
    uint8_t *buf;
    size_t len;
    ckpt_shard_index_pack(s, &buf, &len);
    int ok = ckpt_manifest_add_index(m, buf, len, st);
    free(buf);
    return ok;
}

static int ckpt_cmp_chunk(const void *a, const void *b) {
    const CkptChunk *x = a, *y = b;
    if (x->r0 != y->r0) return x->r0 < y->r0 ? -1 : 1;
    if (x->c0 != y->c0) return x->c0 < y->c0 ? -1 : 1;
    int f = strcmp(x->file, y->file);
    if (f) return f;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

static int ckpt_cmp_tensor_ptr(const void *a, const void *b) {
    return strcmp((*(const CkptTensor *const *)a)->name, (*(const CkptTensor *const *)b)->name);
}

int ckpt_manifest_write(CkptManifestBuilder *m, const char *dir, ErrStatus *st) {
    err_status_ok(st);
    char *path = str_join_path(dir, CKPT_MANIFEST_NAME);
    /* Refuse to write a manifest that could not be loaded (e.g. a TP rank's index lost). */
    for (size_t i = 0; i < m->ntensors; i++)
        if (!ckpt_check_whole(path, &m->tensors[i], st)) {
            free(path);
            return 0;
        }
    /* A deterministic order: the same checkpoint content gives the same manifest bytes. */
    const CkptTensor **order = malloc((m->ntensors + 1) * sizeof *order);
    SL_CHECK(order != NULL, "out of memory");
    for (size_t i = 0; i < m->ntensors; i++) {
        order[i] = &m->tensors[i];
        qsort(m->tensors[i].chunks, m->tensors[i].nchunks, sizeof(CkptChunk), ckpt_cmp_chunk);
    }
    qsort(order, m->ntensors, sizeof *order, ckpt_cmp_tensor_ptr);

    CkptPbTensors pb;
    ckpt_pb_tensors(&pb, order, m->ntensors, NULL);
    const CkptMeta *mt = &m->meta;
    Slckpt__Optimizer opt = SLCKPT__OPTIMIZER__INIT;
    opt.kind = (char *)ckpt_str(mt->optimizer_kind);
    opt.step = mt->optimizer_step;
    opt.hparams_json = (char *)ckpt_str(mt->optimizer_hparams);
    Slckpt__Manifest man = SLCKPT__MANIFEST__INIT;
    man.format_version = CKPT_FORMAT_VERSION;
    man.run_config = (char *)ckpt_str(mt->run_config);
    man.model_fingerprint = (char *)ckpt_str(mt->model_fingerprint);
    man.adapter_config = (char *)ckpt_str(mt->adapter_config);
    man.step = mt->step;
    man.epoch = mt->epoch;
    man.data_cursor = mt->data_cursor;
    man.seed = mt->seed;
    man.n_rng_counters = mt->rng_counters ? mt->n_rng_counters : 0;
    man.rng_counters = (uint64_t *)mt->rng_counters;
    man.optimizer = &opt;
    man.lr_schedule_position = mt->lr_schedule_position;
    man.tp = mt->tp;
    man.dp = mt->dp;
    man.pp = mt->pp;
    man.extra_json = (char *)ckpt_str(mt->extra_json);
    man.n_tensors = m->ntensors;
    man.tensors = pb.tp;

    size_t mlen = slckpt__manifest__get_packed_size(&man);
    uint8_t *out = malloc(CKPT_HEADER_BYTES + mlen);
    SL_CHECK(out != NULL, "out of memory");
    slckpt__manifest__pack(&man, out + CKPT_HEADER_BYTES);
    memcpy(out, CKPT_MAGIC, 8);
    ckpt_put_le(out + 8, mlen, 8);
    ckpt_put_le(out + 16, crc32c(out + CKPT_HEADER_BYTES, mlen), 4);
    int ok = afile_write_all(path, out, CKPT_HEADER_BYTES + mlen, st);
    free(out);
    ckpt_pb_tensors_free(&pb);
    free(order);
    free(path);
    return ok;
}

/* ---- reader ------------------------------------------------------------------------------- */

static int ckpt_cmp_tensor(const void *a, const void *b) {
    return strcmp(((const CkptTensor *)a)->name, ((const CkptTensor *)b)->name);
}

void ckpt_close(CkptReader *r) {
    for (size_t i = 0; i < r->nfiles; i++)
        if (r->files[i].fd >= 0) close(r->files[i].fd);
    free(r->files);
    free(r->tensors);
    free(r->chunk_store);
    free(r->buf);
    if (r->pb) slckpt__manifest__free_unpacked(r->pb, NULL);
    free(r->dir);
    memset(r, 0, sizeof *r);
}

/* Reads dir/manifest.pb and checks the header and CRC; returns the unpacked message. */
static Slckpt__Manifest *ckpt_read_manifest(const char *dir, ErrStatus *st) {
    char *path = str_join_path(dir, CKPT_MANIFEST_NAME);
    Slckpt__Manifest *man = NULL;
    uint8_t *buf = NULL;
    struct stat sb;
    int fd = afile_open_input(path, &sb, st);
    if (fd < 0) goto done;
    uint64_t size = (uint64_t)sb.st_size;
    if (size < CKPT_HEADER_BYTES) {
        err_status_set(st, "%s: truncated: %" PRIu64 " bytes, the header alone is %d", path, size,
                       CKPT_HEADER_BYTES);
        goto done;
    }
    if (size > CKPT_MAX_MANIFEST + CKPT_HEADER_BYTES) {
        err_status_set(st, "%s: %" PRIu64 " bytes is too large for a manifest", path, size);
        goto done;
    }
    buf = malloc(size);
    SL_CHECK(buf != NULL, "out of memory");
    ssize_t got = ckpt_pread_full(fd, buf, size, 0);
    if (got < 0 || (uint64_t)got != size) {
        err_status_set(st, "%s: read failed: %s", path, got < 0 ? strerror(errno) : "short read");
        goto done;
    }
    if (memcmp(buf, CKPT_MAGIC, 8) != 0) {
        err_status_set(st, "%s: byte 0: not a shardlora checkpoint manifest (magic is not %s)",
                       path, CKPT_MAGIC);
        goto done;
    }
    uint64_t mlen = ckpt_get_le(buf + 8, 8);
    uint32_t want = (uint32_t)ckpt_get_le(buf + 16, 4);
    if (mlen != size - CKPT_HEADER_BYTES) {
        err_status_set(st,
                       "%s: byte 8: header says %" PRIu64
                       " message bytes but the file holds %" PRIu64 " (truncated or appended to)",
                       path, mlen, size - CKPT_HEADER_BYTES);
        goto done;
    }
    uint32_t have = crc32c(buf + CKPT_HEADER_BYTES, mlen);
    if (have != want) {
        err_status_set(st,
                       "%s: CRC-32C mismatch over bytes [%d, %" PRIu64 "): stored 0x%08x, "
                       "computed 0x%08x",
                       path, CKPT_HEADER_BYTES, size, want, have);
        goto done;
    }
    man = slckpt__manifest__unpack(NULL, mlen, buf + CKPT_HEADER_BYTES);
    if (!man)
        err_status_set(st, "%s: byte %d: cannot parse the Manifest message", path,
                       CKPT_HEADER_BYTES);
done:
    if (fd >= 0) close(fd);
    free(buf);
    free(path);
    return man;
}

static struct CkptFile *ckpt_reader_file(CkptReader *r, const char *name) {
    for (size_t i = 0; i < r->nfiles; i++)
        if (r->files[i].name == name || strcmp(r->files[i].name, name) == 0) return &r->files[i];
    return NULL;
}

/* Counters a CRC cannot vouch for (a buggy or hostile writer computes a valid CRC too):
 * a checkpoint always holds the adapter, and its steps are counts a real run reaches.
 * 2^53: a double (the schedule's arithmetic) still counts every step exactly below it. */
static int ckpt_check_counts(const char *mpath, const Slckpt__Manifest *man, ErrStatus *st) {
    const int64_t most = (int64_t)1 << 53;
    if (man->n_tensors == 0)
        return err_status_set(st, "%s: damaged: the manifest lists no tensors", mpath);
    if (man->step < 0 || man->step > most)
        return err_status_set(st, "%s: damaged: step %" PRId64 " is not in [0, 2^53]", mpath,
                              man->step);
    if (man->epoch < 0 || man->data_cursor < 0)
        return err_status_set(
            st, "%s: damaged: negative epoch (%" PRId64 ") or data cursor (%" PRId64 ")", mpath,
            man->epoch, man->data_cursor);
    /* the optimizer counts updates from 1 (the next one to do), one per step */
    const int64_t ostep = man->optimizer ? man->optimizer->step : 0;
    if (ostep < 0 || ostep > man->step + 1)
        return err_status_set(
            st, "%s: damaged: optimizer step %" PRId64 " is not in [0, step + 1 = %" PRId64 "]",
            mpath, ostep, man->step + 1);
    return 1;
}

int ckpt_open(CkptReader *r, const char *dir, ErrStatus *st) {
    err_status_ok(st);
    memset(r, 0, sizeof *r);
    Slckpt__Manifest *man = ckpt_read_manifest(dir, st);
    if (!man) return 0;
    r->dir = str_dup(dir);
    r->pb = man;
    char *mpath = str_join_path(dir, CKPT_MANIFEST_NAME);
    if (man->format_version != CKPT_FORMAT_VERSION) {
        err_status_set(st, "%s: format version %u, this build reads version %d%s", mpath,
                       man->format_version, CKPT_FORMAT_VERSION,
                       man->format_version > CKPT_FORMAT_VERSION ? " (written by a newer shardlora)"
                                                                 : "");
        goto fail;
    }
    if (!ckpt_check_counts(mpath, man, st)) goto fail;
    CkptMeta *mt = &r->meta;
    mt->format_version = man->format_version;
    mt->run_config = man->run_config;
    mt->model_fingerprint = man->model_fingerprint;
    mt->adapter_config = man->adapter_config;
    mt->step = man->step;
    mt->epoch = man->epoch;
    mt->data_cursor = man->data_cursor;
    mt->seed = man->seed;
    mt->rng_counters = man->rng_counters;
    mt->n_rng_counters = man->n_rng_counters;
    mt->optimizer_kind = man->optimizer ? man->optimizer->kind : "";
    mt->optimizer_step = man->optimizer ? man->optimizer->step : 0;
    mt->optimizer_hparams = man->optimizer ? man->optimizer->hparams_json : "";
    mt->lr_schedule_position = man->lr_schedule_position;
    mt->tp = man->tp;
    mt->dp = man->dp;
    mt->pp = man->pp;
    mt->extra_json = man->extra_json;

    size_t nch = 0;
    for (size_t i = 0; i < man->n_tensors; i++)
        nch += man->tensors[i]->n_chunks;
    r->ntensors = man->n_tensors;
    r->tensors = calloc(r->ntensors + 1, sizeof *r->tensors);
    r->chunk_store = calloc(nch + 1, sizeof *r->chunk_store);
    SL_CHECK(r->tensors && r->chunk_store, "out of memory");
    size_t q = 0;
    uint64_t maxlen = 0;
    for (size_t i = 0; i < man->n_tensors; i++) {
        const Slckpt__TensorEntry *e = man->tensors[i];
        CkptTensor *t = &r->tensors[i];
        t->name = e->name;
        t->rows = e->rows;
        t->cols = e->cols;
        t->chunks = r->chunk_store + q;
        t->nchunks = e->n_chunks;
        if (!e->name[0] || !ckpt_shape_ok(e->rows, e->cols)) {
            err_status_set(
                st, "%s: tensor %zu (\"%.64s\"): bad name or shape [%" PRId64 ", %" PRId64 "]",
                mpath, i, e->name, e->rows, e->cols);
            goto fail;
        }
        for (size_t j = 0; j < e->n_chunks; j++, q++) {
            const Slckpt__ChunkRef *c = e->chunks[j];
            CkptChunk *k = &r->chunk_store[q];
            *k = (CkptChunk){.file = c->file,
                             .offset = c->offset,
                             .length = c->length,
                             .r0 = c->r0,
                             .nr = c->nr,
                             .c0 = c->c0,
                             .nc = c->nc,
                             .crc32c = c->crc32c};
            if (!ckpt_chunk_check(mpath, t, k, st)) goto fail;
            struct CkptFile *f = ckpt_reader_file(r, k->file);
            if (!f) {
                r->files = str_xrealloc(r->files, (r->nfiles + 1) * sizeof *r->files);
                f = &r->files[r->nfiles++];
                f->name = k->file;
                f->size = 0;
                char *fp = str_join_path(dir, k->file);
                struct stat sb;
                ErrStatus why;
                f->fd = afile_open_input(fp, &sb, &why);
                if (f->fd < 0) {
                    err_status_set(st,
                                   "missing or unreadable shard file: %s (tensor %s, chunk at byte "
                                   "offset %" PRIu64 ")",
                                   why.msg, t->name, k->offset);
                    free(fp);
                    goto fail;
                }
                free(fp);
                f->size = (uint64_t)sb.st_size;
            }
            if (k->offset + k->length > f->size) {
                err_status_set(st,
                               "%s/%s: too short: tensor %s's chunk at byte offset %" PRIu64
                               " ends at %" PRIu64 ", the file has %" PRIu64 " bytes",
                               dir, k->file, t->name, k->offset, k->offset + k->length, f->size);
                goto fail;
            }
            if (k->length > maxlen) maxlen = k->length;
        }
        if (!ckpt_check_whole(mpath, t, st)) goto fail;
    }
    qsort(r->tensors, r->ntensors, sizeof *r->tensors, ckpt_cmp_tensor);
    for (size_t i = 1; i < r->ntensors; i++)
        if (strcmp(r->tensors[i - 1].name, r->tensors[i].name) == 0) {
            err_status_set(st, "%s: tensor %s is listed twice", mpath, r->tensors[i].name);
            goto fail;
        }
    r->buf_cap = (size_t)maxlen;
    free(mpath);
    return 1;
fail:
    free(mpath);
    ckpt_close(r);
    return 0;
}

const CkptTensor *ckpt_find(const CkptReader *r, const char *name) {
    size_t lo = 0, hi = r->ntensors;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(r->tensors[mid].name, name);
        if (c == 0) return &r->tensors[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Reads one chunk record, checks framing, CRC and that its header matches the manifest.
 * Returns the unpacked Chunk (free with slckpt__chunk__free_unpacked) or NULL with st set. */
static Slckpt__Chunk *ckpt_read_chunk(CkptReader *r, const CkptTensor *t, const CkptChunk *c,
                                      ErrStatus *st) {
    struct CkptFile *f = ckpt_reader_file(r, c->file);
    SL_CHECK(f != NULL, "chunk file %s not opened", c->file);
    if (!r->buf) {
        r->buf = malloc(r->buf_cap ? r->buf_cap : 1);
        SL_CHECK(r->buf != NULL, "out of memory (%zu bytes)", r->buf_cap);
    }
    char what[CKPT_MAX_NAME + 160];
    snprintf(what, sizeof what,
             "chunk at byte offset %" PRIu64 " (tensor %s, rows [%" PRId64 ", %" PRId64
             ") cols [%" PRId64 ", %" PRId64 "))",
             c->offset, t->name, c->r0, c->r0 + c->nr, c->c0, c->c0 + c->nc);
    ssize_t got = ckpt_pread_full(f->fd, r->buf, (size_t)c->length, c->offset);
    if (got < 0 || (uint64_t)got != c->length) {
        err_status_set(st, "%s/%s: %s: %s", r->dir, c->file, what,
                       got < 0 ? strerror(errno) : "unexpected end of file");
        return NULL;
    }
    uint64_t mlen = 0;
    size_t plen = ckpt_varint_get(r->buf, (size_t)c->length, &mlen);
    if (plen == 0 || mlen != c->length - plen) {
        err_status_set(st, "%s/%s: %s: bad length prefix (record is %" PRIu64 " bytes)", r->dir,
                       c->file, what, c->length);
        return NULL;
    }
    uint32_t have = crc32c(r->buf + plen, (size_t)mlen);
    if (have != c->crc32c) {
        err_status_set(st, "%s/%s: %s: CRC-32C mismatch: stored 0x%08x, computed 0x%08x", r->dir,
                       c->file, what, c->crc32c, have);
        return NULL;
    }
    Slckpt__Chunk *k = slckpt__chunk__unpack(NULL, (size_t)mlen, r->buf + plen);
    if (!k) {
        err_status_set(st, "%s/%s: %s: cannot parse the Chunk message", r->dir, c->file, what);
        return NULL;
    }
    if (strcmp(k->tensor, t->name) != 0 || k->r0 != c->r0 || k->nr != c->nr || k->c0 != c->c0 ||
        k->nc != c->nc || k->n_data != (size_t)(c->nr * c->nc)) {
        err_status_set(st,
                       "%s/%s: %s: the chunk holds tensor %.64s rows [%" PRId64 ", +%" PRId64
                       ") cols [%" PRId64 ", +%" PRId64 ") with %zu values, not what the manifest "
                       "says",
                       r->dir, c->file, what, k->tensor, k->r0, k->nr, k->c0, k->nc, k->n_data);
        slckpt__chunk__free_unpacked(k, NULL);
        return NULL;
    }
    return k;
}

int ckpt_read_slice(CkptReader *r, const char *tensor, int64_t r0, int64_t nr, int64_t c0,
                    int64_t nc, float *dst, ErrStatus *st) {
    err_status_ok(st);
    const CkptTensor *t = ckpt_find(r, tensor);
    if (!t) return err_status_set(st, "%s: no tensor %s in the checkpoint", r->dir, tensor);
    if (r0 < 0 || nr < 0 || c0 < 0 || nc < 0 || r0 > t->rows - nr || c0 > t->cols - nc)
        return err_status_set(st,
                              "%s: tensor %s [%" PRId64 ", %" PRId64 "]: requested rows [%" PRId64
                              ", %" PRId64 ") cols [%" PRId64 ", %" PRId64 ") are outside it",
                              r->dir, tensor, t->rows, t->cols, r0, r0 + nr, c0, c0 + nc);
    if (nr == 0 || nc == 0) return 1;
    uint8_t *need = calloc(t->nchunks + 1, 1);
    SL_CHECK(need != NULL, "out of memory");
    int64_t mr = 0, mc = 0;
    int cov = ckpt_cover(t, r0, nr, c0, nc, need, &mr, &mc);
    if (cov <= 0) {
        free(need);
        if (cov < 0)
            return err_status_set(st, "%s: tensor %s: %zu chunks are too fragmented", r->dir,
                                  tensor, t->nchunks);
        return err_status_set(st,
                              "%s: tensor %s: element (%" PRId64 ", %" PRId64
                              ") of the requested rows [%" PRId64 ", %" PRId64 ") cols [%" PRId64
                              ", %" PRId64 ") is in no chunk",
                              r->dir, tensor, mr, mc, r0, r0 + nr, c0, c0 + nc);
    }
    int ok = 1;
    for (size_t i = 0; i < t->nchunks && ok; i++) {
        if (!need[i]) continue;
        const CkptChunk *c = &t->chunks[i];
        Slckpt__Chunk *k = ckpt_read_chunk(r, t, c, st);
        if (!k) {
            ok = 0;
            break;
        }
        int64_t a = c->r0 > r0 ? c->r0 : r0, b = c->r0 + c->nr < r0 + nr ? c->r0 + c->nr : r0 + nr;
        int64_t x = c->c0 > c0 ? c->c0 : c0, y = c->c0 + c->nc < c0 + nc ? c->c0 + c->nc : c0 + nc;
        for (int64_t row = a; row < b; row++)
            memcpy(dst + (row - r0) * nc + (x - c0), k->data + (row - c->r0) * c->nc + (x - c->c0),
                   (size_t)(y - x) * sizeof(float));
        slckpt__chunk__free_unpacked(k, NULL);
    }
    free(need);
    return ok;
}

int ckpt_verify(CkptReader *r, ErrStatus *st) {
    err_status_ok(st);
    ErrStatus first, one;
    err_status_ok(&first);
    size_t bad = 0, total = 0;
    for (size_t i = 0; i < r->ntensors; i++)
        for (size_t j = 0; j < r->tensors[i].nchunks; j++, total++) {
            Slckpt__Chunk *k = ckpt_read_chunk(r, &r->tensors[i], &r->tensors[i].chunks[j], &one);
            if (k) {
                slckpt__chunk__free_unpacked(k, NULL);
                continue;
            }
            if (bad++ == 0) first = one;
        }
    if (bad) return err_status_set(st, "%zu of %zu chunks bad; first: %s", bad, total, first.msg);
    return 1;
}

void ckpt_print(const CkptReader *r, FILE *f) {
    const CkptMeta *m = &r->meta;
    fprintf(f, "checkpoint %s\n", r->dir);
    fprintf(f, "  format_version        %u\n", m->format_version);
    fprintf(f, "  step                  %" PRId64 "\n", m->step);
    fprintf(f, "  epoch                 %" PRId64 "\n", m->epoch);
    fprintf(f, "  data_cursor           %" PRId64 "\n", m->data_cursor);
    fprintf(f, "  seed                  %" PRIu64 "\n", m->seed);
    fprintf(f, "  rng_counters          [");
    for (size_t i = 0; i < m->n_rng_counters; i++)
        fprintf(f, "%s%" PRIu64, i ? ", " : "", m->rng_counters[i]);
    fprintf(f, "]\n");
    fprintf(f, "  optimizer             %s step %" PRId64 " %s\n", m->optimizer_kind,
            m->optimizer_step, m->optimizer_hparams);
    fprintf(f, "  lr_schedule_position  %" PRId64 "\n", m->lr_schedule_position);
    fprintf(f, "  written at            tp=%d pp=%d dp=%d\n", m->tp, m->pp > 0 ? m->pp : 1, m->dp);
    fprintf(f, "  model_fingerprint     %s\n", m->model_fingerprint);
    fprintf(f, "  adapter_config        %s\n", m->adapter_config);
    fprintf(f, "  run_config            %s\n", m->run_config);
    fprintf(f, "  extra                 %s\n", m->extra_json);
    size_t nch = 0;
    uint64_t payload = 0;
    for (size_t i = 0; i < r->ntensors; i++) {
        nch += r->tensors[i].nchunks;
        for (size_t j = 0; j < r->tensors[i].nchunks; j++)
            payload +=
                (uint64_t)r->tensors[i].chunks[j].nr * (uint64_t)r->tensors[i].chunks[j].nc * 4;
    }
    fprintf(f, "  files                 %zu:", r->nfiles);
    for (size_t i = 0; i < r->nfiles; i++)
        fprintf(f, " %s (%" PRIu64 " bytes)", r->files[i].name, r->files[i].size);
    fprintf(f, "\n  tensors               %zu, %zu chunks, %" PRIu64 " payload bytes\n",
            r->ntensors, nch, payload);
    for (size_t i = 0; i < r->ntensors; i++) {
        const CkptTensor *t = &r->tensors[i];
        fprintf(f, "  %s [%" PRId64 ", %" PRId64 "] %zu chunks\n", t->name, t->rows, t->cols,
                t->nchunks);
        for (size_t j = 0; j < t->nchunks; j++) {
            const CkptChunk *c = &t->chunks[j];
            fprintf(f,
                    "    rows [%" PRId64 ", %" PRId64 ") cols [%" PRId64 ", %" PRId64
                    ")  %s @%" PRIu64 " +%" PRIu64 "  crc32c %08x\n",
                    c->r0, c->r0 + c->nr, c->c0, c->c0 + c->nc, c->file, c->offset, c->length,
                    c->crc32c);
        }
    }
}

/* ---- directory protocol ------------------------------------------------------------------ */

static int ckpt_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* rm -rf path (no symlinks followed). A missing path is fine. */
static int ckpt_rm_rf(const char *path, ErrStatus *st) {
    struct stat sb;
    if (lstat(path, &sb) != 0 && errno == ENOENT) return 1;
    if (nftw(path, ckpt_rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return err_status_set(st, "%s: cannot remove: %s", path, strerror(errno));
    return 1;
}

static int ckpt_mkdir_p(const char *dir, ErrStatus *st) {
    char *p = str_dup(dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            err_status_set(st, "%s: cannot create directory: %s", p, strerror(errno));
            free(p);
            return 0;
        }
        *s = '/';
    }
    int ok = 1;
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        ok = err_status_set(st, "%s: cannot create directory: %s", p, strerror(errno));
    free(p);
    return ok;
}

/* "step-<digits>" followed by `suffix` exactly (e.g. "" or ".tmp"); the step or -1. */
static int64_t ckpt_parse_step(const char *name, const char *suffix) {
    if (strncmp(name, "step-", 5) != 0) return -1;
    const char *p = name + 5;
    int64_t v = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (v > (INT64_MAX - 9) / 10) return -1;
        v = v * 10 + (*p - '0');
    }
    if (digits == 0 || strcmp(p, suffix) != 0) return -1;
    return v;
}

static void ckpt_step_path(char *out, size_t n, const char *root, int64_t step,
                           const char *suffix) {
    snprintf(out, n, "%s/step-%09lld%s", root, (long long)step, suffix);
}

int ckpt_dir_begin(const char *root, int64_t step, char *tmpdir_out, size_t n, ErrStatus *st) {
    err_status_ok(st);
    if (step < 0) return err_status_set(st, "%s: negative step %" PRId64, root, step);
    if (!ckpt_mkdir_p(root, st)) return 0;
    char path[PATH_MAX];
    ckpt_step_path(path, sizeof path, root, step, ".tmp");
    if (strlen(path) + 1 > n) return err_status_set(st, "%s: path too long for the buffer", path);
    /* A leftover from an interrupted write of this step: never committed, safe to drop. */
    if (!ckpt_rm_rf(path, st)) return 0;
    if (mkdir(path, 0755) != 0)
        return err_status_set(st, "%s: cannot create directory: %s", path, strerror(errno));
    snprintf(tmpdir_out, n, "%s", path);
    return 1;
}

int ckpt_dir_commit(const char *root, int64_t step, ErrStatus *st) {
    err_status_ok(st);
    char tmp[PATH_MAX], fin[PATH_MAX], old[PATH_MAX], link_tmp[PATH_MAX], link[PATH_MAX];
    char target[64];
    ckpt_step_path(tmp, sizeof tmp, root, step, ".tmp");
    ckpt_step_path(fin, sizeof fin, root, step, "");
    ckpt_step_path(old, sizeof old, root, step, ".old");
    snprintf(link, sizeof link, "%s/%s", root, CKPT_LATEST_NAME);
    snprintf(link_tmp, sizeof link_tmp, "%s/%s.tmp", root, CKPT_LATEST_NAME);
    snprintf(target, sizeof target, "step-%09lld", (long long)step);
    if (!ckpt_fsync_dir_path(tmp, st)) return 0;
    struct stat sb;
    int replacing = lstat(fin, &sb) == 0;
    if (replacing) {
        /* Rewriting a step that exists (e.g. it was corrupt and training redid it): move it
         * aside rather than delete it first, so a crash here loses nothing committed. */
        if (!ckpt_rm_rf(old, st)) return 0;
        if (rename(fin, old) != 0)
            return err_status_set(st, "%s: cannot move aside to %s: %s", fin, old, strerror(errno));
    }
    if (rename(tmp, fin) != 0)
        return err_status_set(st, "%s: cannot rename to %s: %s", tmp, fin, strerror(errno));
    if (!ckpt_fsync_dir_path(root, st)) return 0;
    if (unlink(link_tmp) != 0 && errno != ENOENT)
        return err_status_set(st, "%s: cannot remove stale link: %s", link_tmp, strerror(errno));
    if (symlink(target, link_tmp) != 0)
        return err_status_set(st, "%s: cannot create symlink: %s", link_tmp, strerror(errno));
    if (rename(link_tmp, link) != 0)
        return err_status_set(st, "%s: cannot rename over %s: %s", link_tmp, link, strerror(errno));
    if (!ckpt_fsync_dir_path(root, st)) return 0;
    if (replacing && !ckpt_rm_rf(old, st)) return 0;
    return 1;
}

/* All committed steps under root, ascending, in a malloc'd array. -1 if unreadable. */
static int ckpt_list_all(const char *root, int64_t **out) {
    *out = NULL;
    DIR *d = opendir(root);
    if (!d) return errno == ENOENT ? 0 : -1;
    int n = 0, cap = 0;
    int64_t *v = NULL;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t s = ckpt_parse_step(e->d_name, "");
        if (s < 0) continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(sb.st_mode))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            v = str_xrealloc(v, (size_t)cap * sizeof *v);
        }
        v[n++] = s;
    }
    closedir(d);
    if (n) qsort(v, (size_t)n, sizeof *v, ckpt_cmp_i64);
    *out = v;
    return n;
}

int ckpt_list(const char *root, int64_t *steps, int max) {
    int64_t *v;
    int n = ckpt_list_all(root, &v);
    if (n > 0 && max > 0) {
        int m = n < max ? n : max;
        memcpy(steps, v + (n - m), (size_t)m * sizeof *steps);
    }
    free(v);
    return n;
}

int64_t ckpt_latest_step(const char *root) {
    char link[PATH_MAX], target[256];
    snprintf(link, sizeof link, "%s/%s", root, CKPT_LATEST_NAME);
    ssize_t len = readlink(link, target, sizeof target - 1);
    if (len <= 0) return -1;
    target[len] = 0;
    return ckpt_parse_step(target, "");
}

int ckpt_remove_leftovers(const char *root, void (*note)(void *ctx, const char *name), void *ctx,
                          ErrStatus *st) {
    err_status_ok(st);
    DIR *d = opendir(root);
    if (!d && errno == ENOENT) return 0;
    if (!d) {
        err_status_set(st, "%s: cannot list: %s", root, strerror(errno));
        return -1;
    }
    static const char *const suffixes[] = {".tmp", ".del", ".old"};
    char path[PATH_MAX];
    int removed = 0, ok = 1;
    struct dirent *e;
    while (ok && (e = readdir(d)) != NULL)
        for (size_t k = 0; k < sizeof suffixes / sizeof suffixes[0]; k++) {
            if (ckpt_parse_step(e->d_name, suffixes[k]) < 0) continue;
            snprintf(path, sizeof path, "%s/%s", root, e->d_name);
            ok = ckpt_rm_rf(path, st);
            if (ok) {
                removed++;
                if (note) note(ctx, path);
            }
            break;
        }
    closedir(d);
    return ok ? removed : -1;
}

int ckpt_prune(const char *root, int keep, ErrStatus *st) {
    err_status_ok(st);
    int64_t *v;
    int n = ckpt_list_all(root, &v);
    if (n < 0) return err_status_set(st, "%s: cannot list: %s", root, strerror(errno));
    int64_t latest = ckpt_latest_step(root);
    char path[PATH_MAX], del[PATH_MAX];
    int ok = 1;
    /* Keep the newest `keep` at or below latest's step. Those above it are from a timeline
     * that was abandoned (training resumed from an older one) and are never loaded. */
    int kept = 0;
    for (int i = n - 1; i >= 0 && ok; i--) {
        int stale = latest >= 0 && v[i] > latest;
        if (v[i] == latest || (!stale && (keep <= 0 || kept < keep))) {
            kept++;
            continue;
        }
        ckpt_step_path(path, sizeof path, root, v[i], "");
        ckpt_step_path(del, sizeof del, root, v[i], ".del");
        /* Renamed first: a half-removed directory must not look committed. */
        ok = ckpt_rm_rf(del, st);
        if (ok && rename(path, del) != 0)
            ok = err_status_set(st, "%s: cannot rename to %s: %s", path, del, strerror(errno));
        if (ok) ok = ckpt_rm_rf(del, st);
    }
    free(v);
    if (!ok) return 0;
    /* Leftovers of interrupted writes or removals. Only .tmp dirs of steps at or below
     * latest: a newer one may be a write in progress. */
    DIR *d = opendir(root);
    if (!d) return 1;
    struct dirent *e;
    while (ok && (e = readdir(d)) != NULL) {
        int64_t s;
        if ((s = ckpt_parse_step(e->d_name, ".del")) >= 0 ||
            (s = ckpt_parse_step(e->d_name, ".old")) >= 0 ||
            ((s = ckpt_parse_step(e->d_name, ".tmp")) >= 0 && latest >= 0 && s <= latest)) {
            snprintf(path, sizeof path, "%s/%s", root, e->d_name);
            ok = ckpt_rm_rf(path, st);
        }
    }
    closedir(d);
    return ok;
}

/* ---- open the newest usable checkpoint ---------------------------------------------------- */

static void ckpt_warn(CkptWarnFn warn, void *ctx, const char *fmt, const char *dir,
                      const char *why) {
    if (!warn) return;
    char msg[2 * sizeof(((ErrStatus *)0)->msg) + PATH_MAX];
    snprintf(msg, sizeof msg, fmt, dir, why);
    warn(ctx, msg);
}

int ckpt_open_latest(const char *root, int verify_all, CkptReader *r, char *used_dir, size_t n,
                     CkptWarnFn warn, void *warn_ctx, ErrStatus *st) {
    err_status_ok(st);
    memset(r, 0, sizeof *r);
    int64_t *v;
    int count = ckpt_list_all(root, &v);
    if (count < 0) {
        err_status_set(st, "%s: cannot list: %s", root, strerror(errno));
        return -1;
    }
    int64_t latest = ckpt_latest_step(root);
    int have_latest = 0;
    for (int i = 0; i < count; i++)
        have_latest |= v[i] == latest;
    char path[PATH_MAX];
    if (latest >= 0 && !have_latest) {
        ckpt_step_path(path, sizeof path, root, latest, "");
        ckpt_warn(warn, warn_ctx, "checkpoint %s skipped: %s", path,
                  "`latest` points at it but it does not exist");
    }
    if (count == 0) {
        free(v);
        if (latest < 0) return 0;
        err_status_set(st, "%s: `latest` points at a missing checkpoint and there is no other",
                       root);
        return -1;
    }
    /* Candidates: latest, then older ones newest first. Newer than latest are abandoned. */
    int64_t *cand = malloc((size_t)count * sizeof *cand);
    SL_CHECK(cand != NULL, "out of memory");
    int nc = 0;
    if (have_latest) cand[nc++] = latest;
    for (int i = count - 1; i >= 0; i--)
        if (!have_latest || v[i] < latest) cand[nc++] = v[i];
    free(v);
    ErrStatus why;
    int tried = 0;
    for (int i = 0; i < nc; i++) {
        ckpt_step_path(path, sizeof path, root, cand[i], "");
        tried++;
        if (!ckpt_open(r, path, &why)) {
            ckpt_warn(warn, warn_ctx, "checkpoint %s skipped: %s", path, why.msg);
            continue;
        }
        if (r->meta.step != cand[i]) {
            char m[96];
            snprintf(m, sizeof m, "its manifest says step %" PRId64, r->meta.step);
            ckpt_warn(warn, warn_ctx, "checkpoint %s skipped: %s", path, m);
            ckpt_close(r);
            continue;
        }
        if (verify_all && !ckpt_verify(r, &why)) {
            ckpt_warn(warn, warn_ctx, "checkpoint %s skipped: %s", path, why.msg);
            ckpt_close(r);
            continue;
        }
        if (strlen(path) + 1 > n) {
            ckpt_close(r);
            free(cand);
            err_status_set(st, "%s: path too long for the buffer", path);
            return -1;
        }
        snprintf(used_dir, n, "%s", path);
        free(cand);
        return 1;
    }
    free(cand);
    err_status_set(st, "%s: none of the %d checkpoints tried is usable (see the messages above)",
                   root, tried);
    return -1;
}
