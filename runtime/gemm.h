/* The GEMM backend interface. Frozen weights keep their storage dtype behind this interface
 * (F32, BF16, or quantised INT8 / NF4, runtime/quant.h); anything but F32 is converted to F32
 * in tiles of rows into a scratch buffer owned by the context (no allocation per call).
 * OpenBLAS is the first backend.
 *
 * Row-major everywhere. Weights follow PyTorch's Linear layout W [O, I] (out rows). */
#ifndef SHARDLORA_RUNTIME_GEMM_H
#define SHARDLORA_RUNTIME_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "mem.h"

typedef enum { GEMM_F32 = 0, GEMM_BF16 = 1, GEMM_INT8 = 2, GEMM_NF4 = 3 } GemmDtype;

/* A weight matrix W [rows, cols] (row-major, leading dimension ld >= cols) in its dtype.
 * INT8 and NF4 are runtime/quant.h's formats (data = codes, scales = its scales) and dense:
 * ld == cols. */
typedef struct {
    GemmDtype dtype;
    const void *data;
    int64_t rows, cols, ld;
    const float *scales; /* INT8 [rows]; NF4 [rows, cols / 64]; F32 / BF16: NULL */
} GemmWeight;

/* What the frozen base's products (gemm_xwt / gemm_xw) compute in: F32, or BF16 operands
 * (activations rounded to BF16, weights BF16 or dequantised to BF16) with F32 accumulation. */
typedef enum { GEMM_COMPUTE_F32 = 0, GEMM_COMPUTE_BF16 = 1 } GemmCompute;

typedef struct {
    int nthreads;
    GemmCompute compute; /* gemm_set_compute */
    float *scratch;      /* [scratch_floats] tile buffer for BF16 -> F32 */
    size_t scratch_floats;
    char core[64]; /* OpenBLAS core name in use */
} GemmCtx;

/* Call first thing in main(), before anything else touches BLAS: if this CPU has AVX-512
 * but OpenBLAS chose a core without AVX-512 kernels (Debian 0.3.21 falls back to
 * "Prescott" on CPUs it does not know, and some environments force "Haswell"), set
 * OPENBLAS_CORETYPE=SkylakeX and re-exec this program (argv kept) so the library loads
 * with it. SHARDLORA_BLAS_CORE=keep disables this; SHARDLORA_BLAS_CORE=NAME forces NAME.
 * Also re-execs once, with OMP_WAIT_POLICY=PASSIVE, when OMP_WAIT_POLICY is unset (libgomp
 * reads it only at load; spinning OpenMP threads slow the next GEMM down). Pass main's
 * argc/argv unchanged; must run before MPI_Init (the re-exec keeps pid and environment).
 * Returns only when no re-exec is needed (or it failed: then it warns). */
void gemm_ensure_blas_core(int argc, char **argv);

/* nthreads <= 0: use the cores this process may run on. Allocates the BF16 scratch
 * (MEM_ACTIVATION) for tiles of up to max_cols columns. */
void gemm_init(GemmCtx *g, MemCtx *m, int nthreads, int64_t max_cols);
void gemm_free(GemmCtx *g, MemCtx *m);
/* Sets the threads the BLAS uses inside each call and returns the previous count. Callers
 * that run several GEMMs in parallel from their own threads (e.g. attention heads) set 1 for
 * the duration and restore the previous value after. */
int gemm_set_blas_threads(GemmCtx *g, int nthreads);
/* OpenBLAS's build configuration, e.g. "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY
 * Haswell MAX_THREADS=64" (needs no GemmCtx: for `shardlora --version`). */
const char *gemm_blas_config(void);
/* "OpenBLAS 0.3.21 core=SkylakeX threads=2" */
const char *gemm_describe(const GemmCtx *g, char *buf, size_t n);

/* Asks for compute dtype c for gemm_xwt / gemm_xw and returns what will run: BF16 only on a
 * CPU whose BF16 matmul is native (AVX512_BF16 or AMX), else F32. why (n bytes) receives one
 * line saying what runs and why, e.g. "bf16 (oneDNN avx512_core_bf16)" or "fp32 (this CPU has
 * no native BF16: oneDNN ISA avx2)". */
GemmCompute gemm_set_compute(GemmCtx *g, GemmCompute c, char *why, size_t n);
/* 1 if this CPU runs BF16 matmuls natively. */
int gemm_bf16_native(void);
/* The instruction set oneDNN uses on this CPU, e.g. "avx512_core_amx", "avx2". */
const char *gemm_isa(void);

/* Y[T, O] = beta * Y + X[T, I] W^T      (W [O, I]; forward of a linear) */
void gemm_xwt(GemmCtx *g, float *Y, const float *X, const GemmWeight *W, int64_t T, float beta);
/* dX[T, I] = beta * dX + dY[T, O] W     (input-gradient of a linear) */
void gemm_xw(GemmCtx *g, float *dX, const float *dY, const GemmWeight *W, int64_t T, float beta);

/* Plain F32 GEMM: C[M,N] = alpha * op(A) op(B) + beta * C, row-major, with leading dims. */
void gemm_f32(GemmCtx *g, int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc);

/* Rows [r0, r1) of W as F32 (dequantised / widened): dst[(r - r0) * ld + c], ld >= W->cols.
 * Any dtype; the same values every GEMM sees. */
void gemm_weight_rows_f32(const GemmWeight *W, int64_t r0, int64_t r1, float *dst, int64_t ld);
/* The view of rows [r0, r0 + n) of W (no copy). */
GemmWeight gemm_weight_block(const GemmWeight *W, int64_t r0, int64_t n);
/* "F32" | "BF16" | "INT8" | "NF4" */
const char *gemm_dtype_name(GemmDtype d);
/* Bytes W's storage takes (codes + scales). */
size_t gemm_weight_bytes(const GemmWeight *W);

/* BF16 <-> F32 (round to nearest even; NaN preserved). */
float gemm_bf16_to_f32(uint16_t h);
uint16_t gemm_f32_to_bf16(float f);

#endif
