/* libFuzzer harness: a safetensors file (8-byte header length, JSON header, data) through
 * st_open, then every small tensor read whole and as a column slice, converted. */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_common.h"
#include "io/safetensors.h"

/* Reads of at most this many bytes of destination per tensor (the file is small anyway). */
#define FZ_MAX_READ ((int64_t)1 << 20)

static StDtype fz_dst_dtype(StDtype src) {
    return src == ST_I64 || src == ST_I32 ? src : ST_F32;
}

static void fz_read_tensor(StFile *f, const StTensor *t, void *buf) {
    int64_t numel = st_numel(t);
    StDtype dst = fz_dst_dtype(t->dtype);
    if (numel <= 0 || numel * (int64_t)st_dtype_size(dst) > FZ_MAX_READ) return;
    ErrStatus st;
    st_read_all(f, t, dst, buf, &st);
    /* The [rows, cols] view: the last dimension is cols (a scalar is [1, 1]). */
    int64_t cols = t->ndim > 0 ? t->shape[t->ndim - 1] : 1, rows = numel / cols;
    int64_t r0 = rows / 2, c0 = cols / 3;
    st_read_slice(f, t, r0, rows - r0, c0, cols - c0, dst, buf, &st);
    st_read_slice(f, t, 0, rows, 0, cols, ST_BF16, buf, &st); /* refused unless BF16 */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("model.safetensors", data, size);
    StFile f;
    ErrStatus st;
    if (!st_open(&f, path, &st)) return 0;
    void *buf = malloc((size_t)FZ_MAX_READ);
    for (int i = 0; i < f.ntensors; i++) {
        fz_read_tensor(&f, &f.tensors[i], buf);
        if (st_find(&f, f.tensors[i].name) == NULL) abort(); /* every listed name is found */
    }
    free(buf);
    st_close(&f);
    return 0;
}
