/* The GEMM backend interface. Frozen weights keep their storage dtype behind this interface
 * (F32, BF16, or quantised INT8 / NF4, runtime/quant.h); anything but F32 is converted to F32
 * in tiles of rows into a scratch buffer owned by the context (no allocation per call).
 * OpenBLAS is the first backend; oneDNN (runtime/bmm.h) runs the frozen base's products in
 * BF16 compute on CPUs with native BF16 (gemm_set_compute).
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
 * (activations rounded to BF16, weights BF16 or dequantised to BF16) with F32 accumulation.
 *
 * BF16 compute, in detail (gemm_set_compute selects it):
 *  - X (xwt) or dY (xw) is rounded to BF16 (nearest even, gemm_f32_to_bf16) into the context's
 *    activation buffer [T, I] or [T, O], which grows to the largest call (MEM_ACTIVATION; the
 *    first step allocates it, later ones reuse it).
 *  - A BF16 weight is used in place for both products (strided oneDNN descriptors: W [O, I]
 *    read as W^T for xwt and as W for xw; no transposed copy). F32 weights are rounded to BF16
 *    and INT8 / NF4 ones dequantised to BF16 (quant_dequant_bf16) in tiles of rows into the
 *    tile scratch, each tile fed to the same matmul.
 *  - oneDNN's matmul primitive (BF16 x BF16 -> F32, beta by a sum post-op) is created once per
 *    shape and cached in the context (runtime/bmm.h); it runs on --threads OpenMP threads.
 *  - Emulation (SHARDLORA_BF16=emulate, any CPU): the same operands, each BF16 value widened
 *    back to F32, multiplied by OpenBLAS's sgemm. The product of two BF16 values is exact in
 *    F32 (8 + 8 significand bits), so this is BF16 matmul with F32 accumulation up to the
 *    order of the sums. Slower than F32 compute: it is for tests and for checking numerics.
 *  - gemm_f32 (adapters, attention, the LoRA factors) always computes in F32.
 * Environment: SHARDLORA_BF16=emulate (BF16 compute emulated, whatever the CPU), =off (F32
 * compute even when BF16 is asked for), unset or "auto": BF16 when asked and native. */
typedef enum { GEMM_COMPUTE_F32 = 0, GEMM_COMPUTE_BF16 = 1 } GemmCompute;

struct BmmCtx;

typedef struct {
    int nthreads;
    GemmCompute compute; /* gemm_set_compute */
    int bf16_emulate;    /* BF16 compute by sgemm on widened BF16 operands (SHARDLORA_BF16) */
    MemCtx *mem;         /* gemm_init's, for the activation buffer */
    float *scratch;      /* [scratch_floats] weight tiles: F32, or BF16 (uint16_t) for oneDNN */
    size_t scratch_floats;
    void *act; /* [act_bytes] BF16 compute: X / dY rounded to BF16 (uint16_t, or F32 when
                  emulated), grows to the largest call */
    size_t act_bytes;
    struct BmmCtx *bmm; /* oneDNN primitives (BF16 compute, native) or NULL */
    int bf16_warned;    /* warned once that oneDNN lacked a shape and emulation ran it */
    char core[64];      /* OpenBLAS core name in use */
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
 * (MEM_ACTIVATION) for tiles of up to max_cols columns. Keeps m for the BF16 compute's
 * activation buffer: m must outlive g. Compute starts as F32. */
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
 * CPU whose BF16 matmul is native (AVX512_BF16 or AMX) and where oneDNN creates one, or when
 * SHARDLORA_BF16=emulate; else F32. why (n bytes) receives one line saying what runs and why,
 * e.g. "bf16 (oneDNN brg:avx512_core_bf16, ISA avx512_core_bf16)", "fp32 (this CPU has no
 * native BF16: oneDNN ISA avx2)" or "bf16 (emulated: SHARDLORA_BF16=emulate, oneDNN ISA
 * avx2)". Call at setup: the native path creates its oneDNN engine here. */
GemmCompute gemm_set_compute(GemmCtx *g, GemmCompute c, char *why, size_t n);
/* 1 if this CPU runs BF16 matmuls natively: oneDNN's ISA is avx512_core_bf16 or
 * avx512_core_amx (plain avx512_core emulates BF16, slower than F32). */
int gemm_bf16_native(void);
/* The instruction set oneDNN dispatches to on this CPU, e.g. "avx512_core_amx", "avx2". */
const char *gemm_isa(void);
/* oneDNN primitives this context created so far (each shape once; cache hits create none). */
int64_t gemm_bf16_primitives(const GemmCtx *g);

/* Y[T, O] = beta * Y + X[T, I] W^T      (W [O, I]; forward of a linear; g->compute) */
void gemm_xwt(GemmCtx *g, float *Y, const float *X, const GemmWeight *W, int64_t T, float beta);
/* dX[T, I] = beta * dX + dY[T, O] W     (input-gradient of a linear; g->compute) */
void gemm_xw(GemmCtx *g, float *dX, const float *dY, const GemmWeight *W, int64_t T, float beta);

/* Plain F32 GEMM: C[M,N] = alpha * op(A) op(B) + beta * C, row-major, with leading dims.
 * Always F32, whatever g->compute. */
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
