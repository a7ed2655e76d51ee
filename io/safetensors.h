/* safetensors reader and writer (format: 8-byte little-endian header length N, N bytes of
 * JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
 * then the data; offsets are relative to the end of the header).
 * The reader validates strictly: JSON, dtypes, offsets within the file, no overlaps,
 * byte size = product(shape) * dtype size. Data are read with pread: whole tensors, or a
 * row range (contiguous), or a column range (strided, for row-parallel weights), so a rank
 * never reads more than its slice. A model directory is one `model.safetensors` or the
 * shards named by `model.safetensors.index.json`. */
#ifndef SHARDLORA_IO_SAFETENSORS_H
#define SHARDLORA_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/err.h"

typedef enum { ST_F32 = 0, ST_BF16, ST_F16, ST_I64, ST_I32, ST_NDTYPE } StDtype;

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end; /* absolute byte offsets in the file */
} StTensor;

typedef struct {
    char *path;
    int fd;
    uint64_t file_size;
    uint64_t data_start; /* 8 + header length */
    int ntensors;
    StTensor *tensors;   /* sorted by name */
    uint64_t bytes_read; /* data bytes read through this handle (accounting) */
} StFile;

/* A model directory: one or more files plus the name -> file map. */
typedef struct {
    char *dir;
    int nfiles;
    StFile *files;
} StDir;

const char *st_dtype_name(StDtype d);
size_t st_dtype_size(StDtype d);
/* Parse "F32", "BF16", ...; returns -1 if unknown. */
int st_dtype_parse(const char *s);
int64_t st_numel(const StTensor *t);

/* Open and validate. On error: returns 0, st names the file and the place (byte offset or
 * JSON key), and f is left closed. */
int st_open(StFile *f, const char *path, ErrStatus *st);
void st_close(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);

/* Read a slice of a tensor (any ndim; a 1-D [n] is [1, n], a scalar [1, 1]) into
 * dst, converting to dst_dtype (F32 from F32/BF16/F16; BF16 from BF16 (copy); I64/I32
 * exact). Rows [r0, r0+nr) and columns [c0, c0+nc) of the [rows, cols] view in which the
 * last dimension is cols and all leading dimensions are folded into rows. dst is dense
 * [nr, nc]. Returns 0 with st set on I/O error or a bad range. */
int st_read_slice(StFile *f, const StTensor *t, int64_t r0, int64_t nr, int64_t c0, int64_t nc,
                  StDtype dst_dtype, void *dst, ErrStatus *st);
/* Whole tensor, converted. */
int st_read_all(StFile *f, const StTensor *t, StDtype dst_dtype, void *dst, ErrStatus *st);

/* Open a model directory (index.json if present, else model.safetensors). Also checks that
 * every tensor the index names is in the file it names. */
int st_dir_open(StDir *d, const char *dir, ErrStatus *st);
void st_dir_close(StDir *d);
/* Finds a tensor by name across files; *file receives its file. NULL if absent. */
const StTensor *st_dir_find(StDir *d, const char *name, StFile **file);
/* Data bytes read so far through all of the directory's files (the sum of their bytes_read). */
uint64_t st_dir_bytes_read(const StDir *d);

/* Writer: collects (name, dtype, shape, data pointer) entries — data is not copied — and
 * writes the file at once to PATH.tmp, fsyncs, renames to PATH. */
typedef struct {
    const char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
} StWriteEntry;

typedef struct {
    int n, cap;
    StWriteEntry *entries;
    int nmeta;
    char *meta_keys[32], *meta_vals[32];
} StWriter;

void st_writer_init(StWriter *w);
/* name and data must stay valid until st_writer_write. */
void st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                   const void *data);
void st_writer_meta(StWriter *w, const char *key, const char *value); /* copies */
int st_writer_write(StWriter *w, const char *path, ErrStatus *st);
void st_writer_free(StWriter *w);

#endif
