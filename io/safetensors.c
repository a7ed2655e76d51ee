/* safetensors reader (strict validation, pread-based slices with dtype conversion), model
 * directory loader (single file or index.json shards) and atomic writer. See safetensors.h. */
#include "safetensors.h"

#include "afile.h"
#include "runtime/str.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensor data are stored little-endian and copied as-is into host arrays. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

/* A header above this is not a model file (real headers are well under 10 MB). */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
/* Staging buffer for converted or batched reads: fits in L2 so conversion runs from cache. */
#define ST_STAGE_BYTES ((size_t)1 << 20)
/* Strided column reads: when a row's column run is short and the gap to the next row's run
 * is small, reading the gap costs less than one syscall per row. Gaps at most a page, so
 * the pages touched on disk are the same either way. */
#define ST_BATCH_MAX_RUN ((uint64_t)16 * 1024)
#define ST_BATCH_MAX_GAP ((uint64_t)4096)
/* Linux transfers at most ~2 GiB per read/write call; stay well below. */
#define ST_IO_MAX ((size_t)1 << 30)

static const char *const st_dtype_names[ST_NDTYPE] = {"F32", "BF16", "F16", "I64", "I32"};
static const size_t st_dtype_sizes[ST_NDTYPE] = {4, 2, 2, 8, 4};

const char *st_dtype_name(StDtype d) {
    return (d >= 0 && d < ST_NDTYPE) ? st_dtype_names[d] : "?";
}

size_t st_dtype_size(StDtype d) {
    return (d >= 0 && d < ST_NDTYPE) ? st_dtype_sizes[d] : 0;
}

int st_dtype_parse(const char *s) {
    for (int i = 0; i < ST_NDTYPE; i++)
        if (strcmp(s, st_dtype_names[i]) == 0) return i;
    return -1;
}

int64_t st_numel(const StTensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* ---- low-level I/O ------------------------------------------------------------------- */

/* Reads exactly len bytes at off, looping over short reads and EINTR. */
static int st_pread_full(int fd, const char *path, void *buf, size_t len, uint64_t off,
                         ErrStatus *st) {
    unsigned char *p = buf;
    size_t done = 0;
    while (done < len) {
        size_t want = len - done < ST_IO_MAX ? len - done : ST_IO_MAX;
        ssize_t got = pread(fd, p + done, want, (off_t)(off + done));
        if (got < 0) {
            if (errno == EINTR) continue;
            return err_status_set(st, "%s: read of %zu bytes at byte %" PRIu64 " failed: %s", path,
                                  len, off + done, strerror(errno));
        }
        if (got == 0)
            return err_status_set(st,
                                  "%s: unexpected end of file at byte %" PRIu64
                                  " (reading %zu bytes at byte %" PRIu64 "; file shrank?)",
                                  path, off + done, len, off);
        done += (size_t)got;
    }
    return 1;
}

/* ---- header parsing ------------------------------------------------------------------ */

/* A JSON integer >= 0 (jansson keeps integers and reals apart, so 3.0 is rejected). */
static int st_json_nonneg(const json_t *v, int64_t *out) {
    if (!json_is_integer(v)) return 0;
    json_int_t x = json_integer_value(v);
    if (x < 0) return 0;
    *out = (int64_t)x;
    return 1;
}

/* Validates one {dtype, shape, data_offsets} entry into t (name already set). */
static int st_parse_entry(StFile *f, StTensor *t, const json_t *e, ErrStatus *st) {
    const char *path = f->path, *name = t->name;
    if (!json_is_object(e))
        return err_status_set(st, "%s: tensor '%s': entry is not a JSON object", path, name);

    const json_t *jd = json_object_get(e, "dtype");
    if (!jd) return err_status_set(st, "%s: tensor '%s': missing 'dtype'", path, name);
    if (!json_is_string(jd))
        return err_status_set(st, "%s: tensor '%s': 'dtype' must be a string", path, name);
    int d = st_dtype_parse(json_string_value(jd));
    if (d < 0)
        return err_status_set(st,
                              "%s: tensor '%s': unknown dtype '%s' (supported: F32, BF16, F16, "
                              "I64, I32)",
                              path, name, json_string_value(jd));
    t->dtype = (StDtype)d;

    const json_t *js = json_object_get(e, "shape");
    if (!js) return err_status_set(st, "%s: tensor '%s': missing 'shape'", path, name);
    if (!json_is_array(js))
        return err_status_set(st, "%s: tensor '%s': 'shape' must be an array of integers", path,
                              name);
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return err_status_set(st, "%s: tensor '%s': shape has %zu dimensions (at most %d)", path,
                              name, nd, ST_MAX_DIMS);
    t->ndim = (int)nd;
    /* numel * dtype size must fit in 64 bits; checked as we go. */
    uint64_t bytes = st_dtype_sizes[d];
    for (size_t i = 0; i < nd; i++) {
        int64_t x;
        if (!st_json_nonneg(json_array_get(js, i), &x))
            return err_status_set(st, "%s: tensor '%s': shape[%zu] must be a non-negative integer",
                                  path, name, i);
        t->shape[i] = x;
        if (x != 0 && bytes > UINT64_MAX / (uint64_t)x)
            return err_status_set(st, "%s: tensor '%s': shape is too large", path, name);
        bytes *= (uint64_t)x;
    }

    const json_t *jo = json_object_get(e, "data_offsets");
    if (!jo) return err_status_set(st, "%s: tensor '%s': missing 'data_offsets'", path, name);
    int64_t b, en;
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !st_json_nonneg(json_array_get(jo, 0), &b) || !st_json_nonneg(json_array_get(jo, 1), &en))
        return err_status_set(st,
                              "%s: tensor '%s': 'data_offsets' must be [begin, end] with two "
                              "non-negative integers",
                              path, name);
    if (b > en)
        return err_status_set(st, "%s: tensor '%s': data_offsets begin %" PRId64 " > end %" PRId64,
                              path, name, b, en);
    uint64_t data_size = f->file_size - f->data_start;
    if ((uint64_t)en > data_size)
        return err_status_set(st,
                              "%s: tensor '%s': data_offsets end %" PRId64
                              " is past the end of the file (data size %" PRIu64 ")",
                              path, name, en, data_size);
    if ((uint64_t)(en - b) != bytes)
        return err_status_set(st,
                              "%s: tensor '%s': data_offsets [%" PRId64 ", %" PRId64
                              "] hold %" PRId64 " bytes but %s shape needs %" PRIu64,
                              path, name, b, en, en - b, st_dtype_names[d], bytes);
    t->begin = f->data_start + (uint64_t)b;
    t->end = f->data_start + (uint64_t)en;
    return 1;
}

static int st_cmp_name(const void *a, const void *b) {
    return strcmp(((const StTensor *)a)->name, ((const StTensor *)b)->name);
}

static int st_cmp_begin(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Two tensors may not share bytes (empty tensors occupy none). */
static int st_check_overlaps(const StFile *f, ErrStatus *st) {
    if (f->ntensors < 2) return 1;
    const StTensor **by = malloc(sizeof *by * (size_t)f->ntensors);
    SL_CHECK(by != NULL, "out of memory");
    for (int i = 0; i < f->ntensors; i++)
        by[i] = &f->tensors[i];
    qsort(by, (size_t)f->ntensors, sizeof *by, st_cmp_begin);
    const StTensor *far = NULL; /* the tensor reaching furthest so far */
    int ok = 1;
    for (int i = 0; i < f->ntensors && ok; i++) {
        const StTensor *t = by[i];
        if (t->begin == t->end) continue;
        if (far && t->begin < far->end) {
            ok = err_status_set(st,
                                "%s: tensors '%s' (data_offsets [%" PRIu64 ", %" PRIu64
                                "]) and '%s' (data_offsets [%" PRIu64 ", %" PRIu64 "]) overlap",
                                f->path, far->name, far->begin - f->data_start,
                                far->end - f->data_start, t->name, t->begin - f->data_start,
                                t->end - f->data_start);
        }
        if (!far || t->end > far->end) far = t;
    }
    free(by);
    return ok;
}

static int st_parse_header(StFile *f, const char *buf, size_t len, ErrStatus *st) {
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return err_status_set(
            st, "%s: header JSON error at byte %" PRIu64 " (line %d, column %d): %s", f->path,
            (uint64_t)8 + (uint64_t)(jerr.position < 0 ? 0 : jerr.position), jerr.line, jerr.column,
            jerr.text);
    int ok = 1;
    if (!json_is_object(root)) {
        ok = err_status_set(st, "%s: header (byte 8) is not a JSON object", f->path);
        goto done;
    }
    const json_t *meta = json_object_get(root, "__metadata__");
    if (meta) {
        const char *k;
        const json_t *v;
        if (!json_is_object(meta)) {
            ok = err_status_set(st, "%s: '__metadata__' must be an object of strings", f->path);
            goto done;
        }
        json_object_foreach((json_t *)meta, k, v) {
            if (!json_is_string(v)) {
                ok = err_status_set(st, "%s: '__metadata__'.'%s' must be a string", f->path, k);
                goto done;
            }
        }
    }
    size_t n = json_object_size(root) - (meta ? 1 : 0);
    if (n > (size_t)INT_MAX) {
        ok = err_status_set(st, "%s: too many tensors", f->path);
        goto done;
    }
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    SL_CHECK(f->tensors != NULL, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        StTensor *t = &f->tensors[f->ntensors++];
        t->name = str_dup(key);
        if (!st_parse_entry(f, t, val, st)) {
            ok = 0;
            goto done;
        }
    }
    qsort(f->tensors, (size_t)f->ntensors, sizeof *f->tensors, st_cmp_name);
    ok = st_check_overlaps(f, st);
done:
    json_decref(root);
    return ok;
}

void st_close(StFile *f) {
    if (f->fd >= 0) close(f->fd);
    for (int i = 0; i < f->ntensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    free(f->path);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

int st_open(StFile *f, const char *path, ErrStatus *st) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    err_status_ok(st);
    f->path = str_dup(path);
    char *hdr = NULL;
    int ok = 0;

    struct stat sb;
    f->fd = afile_open_input(path, &sb, st);
    if (f->fd < 0) goto done;
    f->file_size = (uint64_t)sb.st_size;
    if (f->file_size < 8) {
        err_status_set(st, "%s: file is %" PRIu64 " bytes, too short for the 8-byte header length",
                       path, f->file_size);
        goto done;
    }
    unsigned char lenb[8];
    if (!st_pread_full(f->fd, path, lenb, 8, 0, st)) goto done;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | lenb[i];
    if (hlen > ST_MAX_HEADER) {
        err_status_set(st,
                       "%s: header length %" PRIu64 " (bytes 0-7) is absurd (> 100 MB); not a "
                       "safetensors file?",
                       path, hlen);
        goto done;
    }
    if (hlen > f->file_size - 8) {
        err_status_set(st,
                       "%s: header length %" PRIu64 " (bytes 0-7) is past the end of the file "
                       "(file size %" PRIu64 "); truncated?",
                       path, hlen, f->file_size);
        goto done;
    }
    f->data_start = 8 + hlen;
    hdr = malloc(hlen ? hlen : 1);
    SL_CHECK(hdr != NULL, "out of memory");
    if (!st_pread_full(f->fd, path, hdr, hlen, 8, st)) goto done;
    ok = st_parse_header(f, hdr, hlen, st);
done:
    free(hdr);
    if (!ok) st_close(f);
    return ok;
}

const StTensor *st_find(const StFile *f, const char *name) {
    int lo = 0, hi = f->ntensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->tensors[mid].name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ---- slices and conversion ----------------------------------------------------------- */

/* [rows, cols] view: the last dimension is cols, leading dimensions fold into rows;
 * a scalar is [1, 1] and a 1-D [n] is [1, n]. */
static void st_view(const StTensor *t, int64_t *rows, int64_t *cols) {
    *rows = 1;
    *cols = t->ndim > 0 ? t->shape[t->ndim - 1] : 1;
    for (int i = 0; i + 1 < t->ndim; i++)
        *rows *= t->shape[i];
}

static int st_can_convert(StDtype src, StDtype dst) {
    if (src == dst) return 1;
    if (dst == ST_F32) return src == ST_BF16 || src == ST_F16;
    if (dst == ST_I64) return src == ST_I32;
    if (dst == ST_I32) return src == ST_I64;
    return 0;
}

/* IEEE binary16 -> binary32, exact for every input: normals re-bias the exponent,
 * subnormals are mant * 2^-24 (exact in float), inf stays inf, NaN keeps its payload. */
static float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp == 0) {
        float v = (float)mant * 0x1p-24f;
        memcpy(&bits, &v, 4);
        bits |= sign;
    } else {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* BF16 is the top half of an F32. */
static inline float st_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

typedef struct {
    StFile *f;
    const StTensor *t;
    StDtype sd, dd;
    size_t ssz, dsz;
    unsigned char *stage; /* [ST_STAGE_BYTES] or less, allocated on first need */
    size_t stage_cap;
    ErrStatus *st;
} StSliceCtx;

static unsigned char *st_stage(StSliceCtx *c, uint64_t want) {
    if (!c->stage) {
        c->stage_cap = want < ST_STAGE_BYTES ? (size_t)want : ST_STAGE_BYTES;
        if (c->stage_cap < 16) c->stage_cap = 16;
        c->stage = malloc(c->stage_cap);
        SL_CHECK(c->stage != NULL, "out of memory");
    }
    return c->stage;
}

/* n elements of c->sd at src -> c->dd at dst (no aliasing). first = element index of src[0]
 * in the tensor, for the narrowing error message. */
static int st_convert(StSliceCtx *c, void *restrict dst, const void *restrict src, size_t n,
                      uint64_t first) {
    if (c->sd == c->dd) {
        memcpy(dst, src, n * c->ssz);
        return 1;
    }
    if (c->dd == ST_F32) {
        float *d = dst;
        const uint16_t *s = src;
        if (c->sd == ST_BF16)
            for (size_t i = 0; i < n; i++)
                d[i] = st_bf16_to_f32(s[i]);
        else
            for (size_t i = 0; i < n; i++)
                d[i] = st_f16_to_f32(s[i]);
    } else if (c->dd == ST_I64) {
        int64_t *d = dst;
        const int32_t *s = src;
        for (size_t i = 0; i < n; i++)
            d[i] = s[i];
    } else { /* I64 -> I32: exact or an error */
        int32_t *d = dst;
        const int64_t *s = src;
        for (size_t i = 0; i < n; i++) {
            if (s[i] < INT32_MIN || s[i] > INT32_MAX)
                return err_status_set(
                    c->st, "%s: tensor '%s': element %" PRIu64 " = %" PRId64 " does not fit in I32",
                    c->f->path, c->t->name, first + i, s[i]);
            d[i] = (int32_t)s[i];
        }
    }
    return 1;
}

/* n contiguous elements starting at tensor element `elem` -> dst. Same dtype reads straight
 * into dst; otherwise through the staging buffer in chunks. */
static int st_read_run(StSliceCtx *c, uint64_t elem, uint64_t n, unsigned char *dst) {
    uint64_t off = c->t->begin + elem * c->ssz;
    if (c->sd == c->dd) return st_pread_full(c->f->fd, c->f->path, dst, n * c->ssz, off, c->st);
    unsigned char *stage = st_stage(c, n * c->ssz);
    uint64_t chunk = c->stage_cap / c->ssz;
    for (uint64_t done = 0; done < n; done += chunk) {
        uint64_t k = n - done < chunk ? n - done : chunk;
        if (!st_pread_full(c->f->fd, c->f->path, stage, k * c->ssz, off + done * c->ssz, c->st))
            return 0;
        if (!st_convert(c, dst + done * c->dsz, stage, k, elem + done)) return 0;
    }
    return 1;
}

int st_read_slice(StFile *f, const StTensor *t, int64_t r0, int64_t nr, int64_t c0, int64_t nc,
                  StDtype dst_dtype, void *dst, ErrStatus *st) {
    err_status_ok(st);
    int64_t rows, cols;
    st_view(t, &rows, &cols);
    if (r0 < 0 || nr < 0 || c0 < 0 || nc < 0 || r0 > rows || nr > rows - r0 || c0 > cols ||
        nc > cols - c0)
        return err_status_set(st,
                              "%s: tensor '%s' viewed as [%" PRId64 ", %" PRId64
                              "]: slice rows [%" PRId64 ", +%" PRId64 ") cols [%" PRId64
                              ", +%" PRId64 ") is out of range",
                              f->path, t->name, rows, cols, r0, nr, c0, nc);
    if ((int)dst_dtype < 0 || dst_dtype >= ST_NDTYPE || !st_can_convert(t->dtype, dst_dtype))
        return err_status_set(st, "%s: tensor '%s': cannot read %s as %s", f->path, t->name,
                              st_dtype_name(t->dtype), st_dtype_name(dst_dtype));
    if (nr == 0 || nc == 0) return 1;

    StSliceCtx c = {
        f,    t, t->dtype, dst_dtype, st_dtype_sizes[t->dtype], st_dtype_sizes[dst_dtype],
        NULL, 0, st};
    unsigned char *out = dst;
    uint64_t run_b = (uint64_t)nc * c.ssz, stride_b = (uint64_t)cols * c.ssz;
    int ok = 1;
    if (nc == cols) {
        /* Whole rows: the slice is one contiguous range. */
        ok = st_read_run(&c, (uint64_t)r0 * (uint64_t)cols, (uint64_t)nr * (uint64_t)cols, out);
    } else if (run_b < ST_BATCH_MAX_RUN && stride_b - run_b <= ST_BATCH_MAX_GAP) {
        /* Short runs with small gaps: read blocks of rows (gaps included) and pick the runs. */
        unsigned char *stage = st_stage(&c, (uint64_t)(nr - 1) * stride_b + run_b);
        int64_t per = c.stage_cap < run_b ? 1 : (int64_t)((c.stage_cap - run_b) / stride_b) + 1;
        for (int64_t r = 0; r < nr && ok; r += per) {
            int64_t k = nr - r < per ? nr - r : per;
            uint64_t elem = (uint64_t)(r0 + r) * (uint64_t)cols + (uint64_t)c0;
            uint64_t len = (uint64_t)(k - 1) * stride_b + run_b;
            /* stage_cap >= run_b (run_b < 16 KiB), so a block of `per` rows fits. */
            SL_CHECK(len <= c.stage_cap, "staging buffer too small");
            ok = st_pread_full(f->fd, f->path, stage, len, t->begin + elem * c.ssz, st);
            for (int64_t i = 0; i < k && ok; i++)
                ok = st_convert(&c, out + (uint64_t)(r + i) * (uint64_t)nc * c.dsz,
                                stage + (uint64_t)i * stride_b, (size_t)nc,
                                elem + (uint64_t)i * (uint64_t)cols);
        }
    } else {
        /* Wide runs: one pread per row, straight into dst when the dtype matches. */
        for (int64_t r = 0; r < nr && ok; r++)
            ok = st_read_run(&c, (uint64_t)(r0 + r) * (uint64_t)cols + (uint64_t)c0, (uint64_t)nc,
                             out + (uint64_t)r * (uint64_t)nc * c.dsz);
    }
    free(c.stage);
    /* Accounting counts the slice's own bytes (source dtype), not gap bytes a batched read
     * skims over, so it equals what the rank's layout asks for. */
    if (ok) f->bytes_read += (uint64_t)nr * (uint64_t)nc * c.ssz;
    return ok;
}

int st_read_all(StFile *f, const StTensor *t, StDtype dst_dtype, void *dst, ErrStatus *st) {
    int64_t rows, cols;
    st_view(t, &rows, &cols);
    return st_read_slice(f, t, 0, rows, 0, cols, dst_dtype, dst, st);
}

/* ---- model directory ----------------------------------------------------------------- */

void st_dir_close(StDir *d) {
    for (int i = 0; i < d->nfiles; i++)
        st_close(&d->files[i]);
    free(d->files);
    free(d->dir);
    memset(d, 0, sizeof *d);
}

static int st_dir_add(StDir *d, const char *path, ErrStatus *st) {
    d->files = str_xrealloc(d->files, sizeof *d->files * (size_t)(d->nfiles + 1));
    if (!st_open(&d->files[d->nfiles], path, st)) return 0;
    d->nfiles++;
    return 1;
}

/* Index file names are plain relative paths inside the model directory. */
static int st_safe_rel(const char *s) {
    if (!*s || s[0] == '/') return 0;
    for (const char *p = s; *p;) {
        const char *q = strchr(p, '/');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') return 0;
        p += n + (q ? 1 : 0);
    }
    return 1;
}

static int st_dir_open_index(StDir *d, const char *ipath, ErrStatus *st) {
    json_t *root = afile_read_json(ipath, ST_MAX_HEADER, JSON_REJECT_DUPLICATES, st);
    if (!root) return 0;
    int ok = 1;
    const json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    const char *name;
    json_t *v;
    /* Distinct file names in order of first appearance, index parallel to d->files. */
    const char **fnames = NULL;
    if (!wm || !json_is_object(wm)) {
        ok = err_status_set(st, "%s: missing object 'weight_map'", ipath);
        goto done;
    }
    fnames = calloc(json_object_size(wm) + 1, sizeof *fnames);
    SL_CHECK(fnames != NULL, "out of memory");
    json_object_foreach((json_t *)wm, name, v) {
        if (!json_is_string(v) || !st_safe_rel(json_string_value(v))) {
            ok = err_status_set(st, "%s: weight_map.'%s' must be a file name inside the directory",
                                ipath, name);
            goto done;
        }
        const char *fn = json_string_value(v);
        int k = 0;
        while (k < d->nfiles && strcmp(fnames[k], fn) != 0)
            k++;
        if (k < d->nfiles) continue;
        char *p = str_join_path(d->dir, fn);
        ok = st_dir_add(d, p, st);
        free(p);
        if (!ok) goto done;
        fnames[k] = fn;
    }
    json_object_foreach((json_t *)wm, name, v) {
        const char *fn = json_string_value(v);
        int k = 0;
        while (strcmp(fnames[k], fn) != 0)
            k++;
        if (!st_find(&d->files[k], name)) {
            ok = err_status_set(st, "%s: tensor '%s' is mapped to '%s', but %s has no such tensor",
                                ipath, name, fn, d->files[k].path);
            goto done;
        }
    }
    if (d->nfiles == 0) ok = err_status_set(st, "%s: weight_map is empty", ipath);
done:
    free(fnames);
    json_decref(root);
    return ok;
}

/* A name in two shards would make st_dir_find ambiguous. */
static int st_dir_check_unique(const StDir *d, ErrStatus *st) {
    for (int i = 0; i < d->nfiles; i++)
        for (int k = 0; k < d->files[i].ntensors; k++)
            for (int j = i + 1; j < d->nfiles; j++)
                if (st_find(&d->files[j], d->files[i].tensors[k].name))
                    return err_status_set(st, "%s: tensor '%s' is in both %s and %s", d->dir,
                                          d->files[i].tensors[k].name, d->files[i].path,
                                          d->files[j].path);
    return 1;
}

int st_dir_open(StDir *d, const char *dir, ErrStatus *st) {
    memset(d, 0, sizeof *d);
    err_status_ok(st);
    d->dir = str_dup(dir);
    char *ipath = str_join_path(dir, "model.safetensors.index.json");
    char *spath = str_join_path(dir, "model.safetensors");
    struct stat sb;
    int ok;
    if (stat(ipath, &sb) == 0)
        ok = st_dir_open_index(d, ipath, st) && st_dir_check_unique(d, st);
    else if (stat(spath, &sb) == 0)
        ok = st_dir_add(d, spath, st);
    else
        ok = err_status_set(st, "%s: no model.safetensors or model.safetensors.index.json", dir);
    free(ipath);
    free(spath);
    if (!ok) st_dir_close(d);
    return ok;
}

const StTensor *st_dir_find(StDir *d, const char *name, StFile **file) {
    for (int i = 0; i < d->nfiles; i++) {
        const StTensor *t = st_find(&d->files[i], name);
        if (t) {
            if (file) *file = &d->files[i];
            return t;
        }
    }
    if (file) *file = NULL;
    return NULL;
}

uint64_t st_dir_bytes_read(const StDir *d) {
    uint64_t s = 0;
    for (int i = 0; i < d->nfiles; i++)
        s += d->files[i].bytes_read;
    return s;
}

/* ---- writer -------------------------------------------------------------------------- */

void st_writer_init(StWriter *w) {
    memset(w, 0, sizeof *w);
}

void st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                   const void *data) {
    SL_CHECK(dtype >= 0 && dtype < ST_NDTYPE, "bad dtype %d for '%s'", (int)dtype, name);
    SL_CHECK(ndim >= 0 && ndim <= ST_MAX_DIMS, "bad ndim %d for '%s'", ndim, name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        w->entries = str_xrealloc(w->entries, sizeof *w->entries * (size_t)cap);
        w->cap = cap;
    }
    StWriteEntry *e = &w->entries[w->n++];
    memset(e, 0, sizeof *e);
    e->name = name;
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        e->shape[i] = shape[i];
    e->data = data;
}

void st_writer_meta(StWriter *w, const char *key, const char *value) {
    for (int i = 0; i < w->nmeta; i++) {
        if (strcmp(w->meta_keys[i], key) == 0) {
            free(w->meta_vals[i]);
            w->meta_vals[i] = str_dup(value);
            return;
        }
    }
    SL_CHECK(w->nmeta < 32, "too many metadata entries (max 32)");
    w->meta_keys[w->nmeta] = str_dup(key);
    w->meta_vals[w->nmeta] = str_dup(value);
    w->nmeta++;
}

void st_writer_free(StWriter *w) {
    for (int i = 0; i < w->nmeta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_vals[i]);
    }
    free(w->entries);
    memset(w, 0, sizeof *w);
}

/* Byte size of an entry; 0 and an error on negative dims or overflow. */
static int st_entry_bytes(const StWriteEntry *e, const char *path, uint64_t *out, ErrStatus *st) {
    uint64_t b = st_dtype_sizes[e->dtype];
    for (int i = 0; i < e->ndim; i++) {
        if (e->shape[i] < 0)
            return err_status_set(st, "%s: tensor '%s': negative shape[%d] = %" PRId64, path,
                                  e->name, i, e->shape[i]);
        if (e->shape[i] != 0 && b > UINT64_MAX / (uint64_t)e->shape[i])
            return err_status_set(st, "%s: tensor '%s': shape is too large", path, e->name);
        b *= (uint64_t)e->shape[i];
    }
    *out = b;
    return 1;
}

/* Builds the padded header: JSON text with spaces appended so 8 + length is a multiple of 8
 * (the data then start 8-aligned). */
static char *st_build_header(const StWriter *w, const char *path, size_t *hlen, ErrStatus *st) {
    json_t *root = json_object();
    SL_CHECK(root != NULL, "out of memory");
    char *out = NULL;
    if (w->nmeta > 0) {
        json_t *m = json_object();
        for (int i = 0; i < w->nmeta; i++) {
            json_t *s = json_string(w->meta_vals[i]);
            if (!s || json_object_set_new(m, w->meta_keys[i], s) != 0) {
                json_decref(m);
                err_status_set(st, "%s: metadata '%s' is not valid UTF-8", path, w->meta_keys[i]);
                goto done;
            }
        }
        json_object_set_new(root, "__metadata__", m);
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const StWriteEntry *e = &w->entries[i];
        uint64_t bytes = 0;
        if (!st_entry_bytes(e, path, &bytes, st)) goto done;
        if (strcmp(e->name, "__metadata__") == 0 || !e->name[0]) {
            err_status_set(st, "%s: tensor name '%s' is reserved or empty", path, e->name);
            goto done;
        }
        if (json_object_get(root, e->name)) {
            err_status_set(st, "%s: tensor '%s' added twice", path, e->name);
            goto done;
        }
        if (bytes > (uint64_t)INT64_MAX - off) {
            err_status_set(st, "%s: total data size overflows", path);
            goto done;
        }
        json_t *shape = json_array();
        for (int d = 0; d < e->ndim; d++)
            json_array_append_new(shape, json_integer(e->shape[d]));
        json_t *obj = json_pack("{s:s, s:o, s:[I, I]}", "dtype", st_dtype_names[e->dtype], "shape",
                                shape, "data_offsets", (json_int_t)off, (json_int_t)(off + bytes));
        SL_CHECK(obj != NULL, "json_pack failed");
        if (json_object_set_new(root, e->name, obj) != 0) {
            err_status_set(st, "%s: tensor name '%s' is not valid UTF-8", path, e->name);
            goto done;
        }
        off += bytes;
    }
    char *js = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    SL_CHECK(js != NULL, "json_dumps failed");
    size_t n = strlen(js), padded = (n + 7) & ~(size_t)7;
    out = malloc(padded + 1);
    SL_CHECK(out != NULL, "out of memory");
    memcpy(out, js, n);
    memset(out + n, ' ', padded - n);
    out[padded] = 0;
    free(js);
    *hlen = padded;
done:
    json_decref(root);
    return out;
}

int st_writer_write(StWriter *w, const char *path, ErrStatus *st) {
    err_status_ok(st);
    size_t hlen = 0;
    char *hdr = st_build_header(w, path, &hlen, st);
    if (!hdr) return 0;
    AFile f;
    int ok = afile_open(&f, path, st);
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    ok = ok && afile_write(&f, lenb, 8, st) && afile_write(&f, hdr, hlen, st);
    for (int i = 0; ok && i < w->n; i++) {
        uint64_t bytes = 0;
        st_entry_bytes(&w->entries[i], path, &bytes, st); /* validated in st_build_header */
        if (bytes) ok = afile_write(&f, w->entries[i].data, (size_t)bytes, st);
    }
    ok = ok && afile_commit(&f, st);
    free(hdr);
    return ok;
}
