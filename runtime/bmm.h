/* BF16 matmul through oneDNN ("bmm"): C[M, N] = beta * C + A[M, K] op(B) with BF16 operands and
 * F32 accumulation and output, one matmul primitive per shape, created on first use and
 * cached. The backend of gemm.c's BF16 compute (GEMM_COMPUTE_BF16); gemm.h is the interface
 * the rest of the program uses.
 *
 * Layouts are strided views, so a weight W [O, I] stored row-major (leading dimension ld) is
 * used in place for both products of a linear: Y = X W^T is trans_b = 1 (B = W, ldb = ld) and
 * dX = dY W is trans_b = 0. oneDNN here is Debian's OpenMP build: a call uses
 * omp_get_max_threads() threads (gemm_init sets it to --threads), and the thread count is part
 * of the cache key because oneDNN blocks the work for it when it creates a primitive.
 *
 * BMM_F32 operands run the same descriptors through oneDNN's F32 matmul: the unit test uses it
 * to check the layouts, beta and the cache on CPUs that have no BF16 matmul (oneDNN 2.6 has
 * none below AVX-512). */
#ifndef SHARDLORA_RUNTIME_BMM_H
#define SHARDLORA_RUNTIME_BMM_H

#include <stddef.h>
#include <stdint.h>

typedef enum { BMM_BF16 = 0, BMM_F32 = 1 } BmmType;

/* One product: C[M, N] = beta * C + A[M, K] op(B), all row-major with leading dimensions.
 * trans_b = 0: B [K, N]; trans_b = 1: B is stored [N, K] and op(B) = B^T. beta == 0: C is
 * not read (may hold NaN); otherwise a sum post-op with scale beta. */
typedef struct {
    BmmType type; /* of A and B (uint16_t BF16 or float); C is always F32 */
    int trans_b;
    int64_t M, N, K;
    int64_t lda, ldb, ldc;
    float beta;
} BmmShape;

typedef struct BmmCtx BmmCtx;

/* A CPU engine and stream and an empty cache; NULL when oneDNN cannot make them (err, n bytes,
 * says why). */
BmmCtx *bmm_create(char *err, size_t n);
/* Destroys the cached primitives, the stream and the engine. NULL is a no-op. */
void bmm_destroy(BmmCtx *b);

/* 1 when oneDNN has a primitive for s (created now, or found in the cache), else 0 (oneDNN
 * has no implementation for this type / layout on this CPU; bmm_last_status says why).
 * Contract (SL_CHECK): sizes >= 1, leading dimensions cover the rows. */
int bmm_ready(BmmCtx *b, const BmmShape *s);
/* Runs the product for s, which must be ready (bmm_ready returned 1); waits for it. */
void bmm_run(BmmCtx *b, const BmmShape *s, const void *A, const void *B, float *C);

/* Primitives created so far (a cache hit creates none) and the cache's live entries. */
int64_t bmm_created(const BmmCtx *b);
int bmm_cached(const BmmCtx *b);
/* oneDNN's name of the implementation of the last primitive created, e.g.
 * "brg:avx512_core_bf16"; "" before the first. */
const char *bmm_impl(const BmmCtx *b);
/* oneDNN's status of the last failed creation, e.g. "unimplemented"; "" when none failed. */
const char *bmm_last_status(const BmmCtx *b);

/* The highest instruction set oneDNN dispatches to on this CPU: "avx2", "avx512_core",
 * "avx512_core_bf16", "avx512_core_amx", ... (no context: a property of the CPU and of
 * DNNL_MAX_CPU_ISA). */
const char *bmm_isa(void);
/* 1 when that ISA has BF16 dot products (avx512_core_bf16, or AMX, which includes them).
 * Plain avx512_core does not: oneDNN emulates BF16 there, slower than F32. */
int bmm_isa_bf16(void);

#endif
