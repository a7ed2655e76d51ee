/* GEMM backend over OpenBLAS (see gemm.h): core selection by re-exec, thread setup, plain
 * F32 GEMM and the linear-layer products for F32 and BF16 weights (BF16 converted to F32
 * in row tiles into a scratch buffer owned by the context); BF16 compute through oneDNN
 * (runtime/bmm.h) or emulated by sgemm. */
#include "gemm.h"

#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "bmm.h"
#include "err.h"
#include "log.h"
#include "quant.h"

/* Rows of W converted per BF16 tile (the tile is GEMM_TILE_ROWS x cols floats): 2 MiB for a
 * 1024-wide weight (this machine's L2 per core), 5.5 MiB for a 2816-wide one (L3 is 32 MiB).
 * The tile is written once and read by sgemm right after, from cache. A sweep at T = 512
 * on this machine (2 threads, SkylakeX core, best of 25 calls, the four weight shapes of
 * bench_gemm.c) gave BF16 xwt / xw as a fraction of the same product with F32 weights:
 * 64 rows 73-94%, 128 85-99%, 256 94-100%, 512 96-100%, 1024 96-100%. Small tiles lose
 * because every tile is a separate sgemm (packing and thread hand-off per call, and for
 * xw a pass over all of dX); 512 is where it stops improving. */
#define GEMM_TILE_ROWS 512
/* Tiles with at least this many elements are converted by all OpenMP threads: on this
 * 2-core machine one thread is as fast, but with many cores per rank a serial conversion
 * would take longer than the sgemm of the tile. */
#define GEMM_CONVERT_PAR_MIN 65536

/* ---- core selection --------------------------------------------------------------------- */

/* OpenBLAS cores (DYNAMIC_ARCH names) whose SGEMM kernels use AVX-512. */
static int gemm_core_is_avx512(const char *name) {
    static const char *const cores[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
    for (size_t i = 0; i < sizeof cores / sizeof cores[0]; i++)
        if (strcasecmp(name, cores[i]) == 0) return 1;
    return 0;
}

static void gemm_copy_name(char *dst, size_t n, const char *src) {
    snprintf(dst, n, "%s", src ? src : "unknown");
}

/* How it works: a DYNAMIC_ARCH OpenBLAS picks its kernels once, in its load-time
 * constructor, from OPENBLAS_CORETYPE or cpuid; libgomp likewise reads OMP_WAIT_POLICY
 * once, when it is loaded. Neither can be changed from main(), so we set the environment
 * and execv("/proc/self/exe", argv): same pid, same arguments, same environment plus our
 * changes, so it is invisible to mpirun/srun as long as it happens before MPI_Init
 * (callers guarantee that: grid_init is called after this). SHARDLORA_BLAS_REEXEC (the
 * core we came from) marks the second run and stops any loop.
 *
 * Reasons to re-exec:
 *  - the CPU has AVX-512 but OpenBLAS runs a core without AVX-512 kernels (Debian's 0.3.21
 *    falls back to Prescott on CPUs it does not know; this environment sets Haswell):
 *    measured here (bench_gemm, 2048^3) 130 / 268 GFLOP/s at 1 / 2 threads with Haswell,
 *    248 / 492 with SkylakeX;
 *    SHARDLORA_BLAS_CORE=NAME forces a core, SHARDLORA_BLAS_CORE=keep keeps whatever
 *    OpenBLAS chose and never re-execs;
 *  - OMP_WAIT_POLICY is unset: libgomp's default lets idle OpenMP threads spin for
 *    milliseconds after every parallel region (~7 ms measured here), taking the core
 *    away from OpenBLAS's own threads in the GEMM that follows. PASSIVE makes them sleep.
 *    Exporting OMP_WAIT_POLICY (any value) avoids this re-exec. */
void gemm_ensure_blas_core(int argc, char **argv) {
    (void)argc;
    char current[64];
    gemm_copy_name(current, sizeof current, openblas_get_corename());

    const char *want = getenv("SHARDLORA_BLAS_CORE");
    int keep = want && strcasecmp(want, "keep") == 0;
    int omp_unset = getenv("OMP_WAIT_POLICY") == NULL;
    /* For child processes (and for this one when it re-execs). */
    if (omp_unset) setenv("OMP_WAIT_POLICY", "PASSIVE", 1);

    const char *target = NULL;
    if (want && *want && !keep)
        target = want;
    else if (!keep && __builtin_cpu_supports("avx512f") && !gemm_core_is_avx512(current))
        target = "SkylakeX";
    int change_core = target && strcasecmp(target, current) != 0;

    if (getenv("SHARDLORA_BLAS_REEXEC")) {
        /* Second run: never loop. OpenBLAS silently falls back when it does not know the
         * name (0.3.21 has no SapphireRapids and takes Cooperlake), so say so. */
        if (change_core)
            log_warn("OpenBLAS runs core %s, not %s (OPENBLAS_CORETYPE=%s); not re-executing "
                     "again since SHARDLORA_BLAS_REEXEC is set. This OpenBLAS may not know "
                     "that core",
                     current, target,
                     getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)");
        return;
    }
    if (keep) {
        if (omp_unset)
            log_debug("SHARDLORA_BLAS_CORE=keep: no re-exec, so OMP_WAIT_POLICY stays at "
                      "libgomp's default (spinning) in this process; export "
                      "OMP_WAIT_POLICY=PASSIVE to avoid that");
        return;
    }
    if (!change_core && !omp_unset) return;
    if (!argv || !argv[0]) {
        log_warn("gemm_ensure_blas_core needs main's argv to re-exec; continuing with OpenBLAS "
                 "core %s",
                 current);
        return;
    }

    char *old_coretype = getenv("OPENBLAS_CORETYPE");
    char saved[64] = "";
    if (old_coretype) gemm_copy_name(saved, sizeof saved, old_coretype);
    if (change_core) setenv("OPENBLAS_CORETYPE", target, 1);
    setenv("SHARDLORA_BLAS_REEXEC", current, 1);
    log_debug("re-exec: OpenBLAS core %s -> %s, OMP_WAIT_POLICY=%s", current,
              change_core ? target : current, getenv("OMP_WAIT_POLICY"));
    /* exec discards stdio buffers */
    fflush(stdout);
    fflush(stderr);
    execv("/proc/self/exe", argv);

    int err = errno;
    unsetenv("SHARDLORA_BLAS_REEXEC");
    if (change_core) {
        if (old_coretype)
            setenv("OPENBLAS_CORETYPE", saved, 1);
        else
            unsetenv("OPENBLAS_CORETYPE");
    }
    log_warn("cannot re-exec /proc/self/exe (%s)%s%s%s; continuing with OpenBLAS core %s",
             strerror(err), change_core ? " to switch OpenBLAS to core " : "",
             change_core ? target : "", change_core ? " (GEMM may run at half speed)" : "",
             current);
}

/* ---- context ------------------------------------------------------------------------- */

static int gemm_affinity_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void gemm_init(GemmCtx *g, MemCtx *m, int nthreads, int64_t max_cols) {
    memset(g, 0, sizeof *g);
    SL_CHECK(max_cols >= 0, "max_cols %lld", (long long)max_cols);
    g->nthreads = nthreads > 0 ? nthreads : gemm_affinity_cpus();
    g->mem = m;
    /* One thread count for both pools: OpenBLAS's pthreads run the GEMMs, OpenMP runs our
     * kernels; they take turns, never overlap, so each may use every core. */
    openblas_set_num_threads(g->nthreads);
    omp_set_num_threads(g->nthreads);
    gemm_copy_name(g->core, sizeof g->core, openblas_get_corename());
    if (max_cols > 0) {
        SL_CHECK((uint64_t)max_cols <= SIZE_MAX / sizeof(float) / GEMM_TILE_ROWS,
                 "max_cols %lld too large", (long long)max_cols);
        g->scratch_floats = (size_t)GEMM_TILE_ROWS * (size_t)max_cols;
        g->scratch = mem_alloc(m, MEM_ACTIVATION, g->scratch_floats * sizeof(float));
    }
}

int gemm_set_blas_threads(GemmCtx *g, int nthreads) {
    (void)g;
    int prev = openblas_get_num_threads();
    openblas_set_num_threads(nthreads > 0 ? nthreads : 1);
    return prev;
}

void gemm_free(GemmCtx *g, MemCtx *m) {
    mem_free(m, MEM_ACTIVATION, g->scratch, g->scratch_floats * sizeof(float));
    mem_free(m, MEM_ACTIVATION, g->act, g->act_bytes);
    bmm_destroy(g->bmm);
    memset(g, 0, sizeof *g);
}

const char *gemm_blas_config(void) {
    const char *cfg = openblas_get_config();
    return cfg ? cfg : "OpenBLAS (no configuration string)";
}

const char *gemm_describe(const GemmCtx *g, char *buf, size_t n) {
    /* openblas_get_config(): "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ..." -> keep 2 words */
    char version[64] = "OpenBLAS";
    const char *cfg = openblas_get_config();
    if (cfg) {
        const char *sp = strchr(cfg, ' ');
        if (sp) sp = strchr(sp + 1, ' ');
        size_t len = sp ? (size_t)(sp - cfg) : strlen(cfg);
        if (len >= sizeof version) len = sizeof version - 1;
        memcpy(version, cfg, len);
        version[len] = 0;
    }
    const char *core = g->core[0] ? g->core : openblas_get_corename();
    const char *was = getenv("SHARDLORA_BLAS_REEXEC");
    char note[160] = "";
    if (was && core && strcasecmp(was, core) != 0)
        snprintf(note, sizeof note, " (was %s; set SHARDLORA_BLAS_CORE=keep to keep it)", was);
    snprintf(buf, n, "%s core=%s%s threads=%d", version, core ? core : "unknown", note,
             g->nthreads);
    return buf;
}

/* ---- GEMM ------------------------------------------------------------------------------ */

/* cblas takes int sizes; big models overflow 32 bits in products, never silently here. */
static int gemm_int(int64_t v, const char *what) {
    SL_CHECK(v >= 0 && v <= INT_MAX, "%s = %lld does not fit cblas's int", what, (long long)v);
    return (int)v;
}

void gemm_f32(GemmCtx *g, int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc) {
    (void)g;
    int m = gemm_int(M, "M"), n = gemm_int(N, "N"), k = gemm_int(K, "K");
    int la = gemm_int(lda, "lda"), lb = gemm_int(ldb, "ldb"), lc = gemm_int(ldc, "ldc");
    SL_CHECK(lc >= n, "ldc %d < N %d", lc, n);
    if (m == 0 || n == 0) return;
    if (k == 0) {
        /* C = beta * C; BLAS's beta == 0 means C is not read (may hold NaN). */
        for (int i = 0; i < m; i++) {
            float *c = C + (size_t)i * (size_t)lc;
            for (int j = 0; j < n; j++)
                c[j] = beta == 0.0f ? 0.0f : beta * c[j];
        }
        return;
    }
    SL_CHECK(la >= (transA ? m : k) && lb >= (transB ? k : n),
             "leading dimension too small "
             "(lda %d, ldb %d, M %d, N %d, K %d, transA %d, transB %d)",
             la, lb, m, n, k, transA, transB);
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, m, n, k, alpha, A, la, B, lb, beta, C, lc);
}

/* rows x cols BF16 (leading dim ld) -> dense F32 [rows, cols]. BF16 is the top half of an
 * F32, so this is a zero-extend and a 16-bit shift; the plain loop vectorises (AVX-512:
 * 16 per instruction). */
static void gemm_bf16_tile_to_f32(float *restrict dst, const uint16_t *restrict src, int64_t rows,
                                  int64_t cols, int64_t ld, int nthreads) {
    int nt = rows * cols >= GEMM_CONVERT_PAR_MIN ? nthreads : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *s = src + r * ld;
        float *d = dst + r * cols;
        for (int64_t c = 0; c < cols; c++) {
            uint32_t u = (uint32_t)s[c] << 16;
            memcpy(&d[c], &u, sizeof u);
        }
    }
}

/* Rows per BF16 tile for a weight with `cols` columns: as many as the scratch holds. */
static int64_t gemm_tile_rows(const GemmCtx *g, const GemmWeight *W) {
    SL_CHECK(g->scratch != NULL && W->cols > 0 &&
                 (size_t)W->cols * GEMM_TILE_ROWS <= g->scratch_floats,
             "%s weight [%lld, %lld] wider than the GEMM scratch (gemm_init max_cols %zu)",
             gemm_dtype_name(W->dtype), (long long)W->rows, (long long)W->cols,
             g->scratch_floats / GEMM_TILE_ROWS);
    return GEMM_TILE_ROWS;
}

static void gemm_check_weight(const GemmWeight *W) {
    SL_CHECK(W->dtype >= GEMM_F32 && W->dtype <= GEMM_NF4, "unknown weight dtype %d",
             (int)W->dtype);
    SL_CHECK(W->rows >= 0 && W->cols >= 0 && W->ld >= W->cols, "bad weight [%lld, %lld] ld %lld",
             (long long)W->rows, (long long)W->cols, (long long)W->ld);
    SL_CHECK(W->dtype < GEMM_INT8 || (W->ld == W->cols && W->scales),
             "quantised weight [%lld, %lld] must be dense (ld %lld) with scales",
             (long long)W->rows, (long long)W->cols, (long long)W->ld);
}

/* The runtime/quant.h view of an INT8 / NF4 weight (quant never writes through it here). */
static QuantWeight gemm_quant_view(const GemmWeight *W) {
    QuantWeight q = {W->dtype == GEMM_INT8 ? QUANT_INT8 : QUANT_NF4, W->rows, W->cols,
                     (uint8_t *)(uintptr_t)W->data, (float *)(uintptr_t)W->scales};
    return q;
}

/* Rows [r0, r1) as F32 into dst (leading dimension ld), threads for big tiles. */
static void gemm_rows_f32(const GemmWeight *W, int64_t r0, int64_t r1, float *dst, int64_t ld,
                          int nthreads) {
    const int64_t cols = W->cols;
    if (W->dtype == GEMM_BF16 && ld == cols) {
        gemm_bf16_tile_to_f32(dst, (const uint16_t *)W->data + r0 * W->ld, r1 - r0, cols, W->ld,
                              nthreads);
        return;
    }
    int nt = (r1 - r0) * cols >= GEMM_CONVERT_PAR_MIN ? nthreads : 1;
    if (W->dtype == GEMM_INT8 || W->dtype == GEMM_NF4) {
        QuantWeight q = gemm_quant_view(W);
        /* disjoint row ranges per thread; any sub-tile equals that part of the whole */
        const int64_t step = nt > 1 ? (r1 - r0 + nt - 1) / nt : r1 - r0;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t a = r0; a < r1; a += step) {
            const int64_t b = a + step < r1 ? a + step : r1;
            quant_dequant_f32(&q, a, b, 0, cols, dst + (a - r0) * ld, ld);
        }
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        float *d = dst + (r - r0) * ld;
        if (W->dtype == GEMM_F32) {
            memcpy(d, (const float *)W->data + r * W->ld, (size_t)cols * sizeof(float));
        } else {
            const uint16_t *s = (const uint16_t *)W->data + r * W->ld;
            for (int64_t c = 0; c < cols; c++)
                d[c] = gemm_bf16_to_f32(s[c]);
        }
    }
}

void gemm_weight_rows_f32(const GemmWeight *W, int64_t r0, int64_t r1, float *dst, int64_t ld) {
    gemm_check_weight(W);
    SL_CHECK(0 <= r0 && r0 <= r1 && r1 <= W->rows && ld >= W->cols, "rows [%lld, %lld) of %lld",
             (long long)r0, (long long)r1, (long long)W->rows);
    gemm_rows_f32(W, r0, r1, dst, ld, 1);
}

GemmWeight gemm_weight_block(const GemmWeight *W, int64_t r0, int64_t n) {
    gemm_check_weight(W);
    SL_CHECK(0 <= r0 && 0 <= n && r0 + n <= W->rows, "rows [%lld, +%lld) of %lld", (long long)r0,
             (long long)n, (long long)W->rows);
    GemmWeight b = *W;
    b.rows = n;
    const char *d = W->data;
    switch (W->dtype) {
    case GEMM_F32:
        b.data = d + (size_t)(r0 * W->ld) * 4;
        break;
    case GEMM_BF16:
        b.data = d + (size_t)(r0 * W->ld) * 2;
        break;
    case GEMM_INT8:
        b.data = d + (size_t)(r0 * W->cols);
        b.scales = W->scales + r0;
        break;
    case GEMM_NF4:
        b.data = d + (size_t)(r0 * W->cols) / 2;
        b.scales = W->scales + (size_t)(r0 * W->cols) / QUANT_NF4_BLOCK;
        break;
    }
    return b;
}

const char *gemm_dtype_name(GemmDtype d) {
    switch (d) {
    case GEMM_F32:
        return "F32";
    case GEMM_BF16:
        return "BF16";
    case GEMM_INT8:
        return "INT8";
    case GEMM_NF4:
        return "NF4";
    }
    return "?";
}

size_t gemm_weight_bytes(const GemmWeight *W) {
    switch (W->dtype) {
    case GEMM_F32:
        return (size_t)(W->rows * W->ld) * 4;
    case GEMM_BF16:
        return (size_t)(W->rows * W->ld) * 2;
    case GEMM_INT8:
        return quant_bytes(QUANT_INT8, W->rows, W->cols);
    case GEMM_NF4:
        return quant_bytes(QUANT_NF4, W->rows, W->cols);
    }
    return 0;
}

/* Rows [r, r + n) of a non-F32 weight, n = min(tr, rows - r), converted into g->scratch as
 * an [n, cols] F32 tile; returns n. */
static int64_t gemm_load_tile(GemmCtx *g, const GemmWeight *W, int64_t r, int64_t tr) {
    int64_t n = W->rows - r < tr ? W->rows - r : tr;
    gemm_rows_f32(W, r, r + n, g->scratch, W->cols, g->nthreads);
    return n;
}

/* ---- BF16 compute ------------------------------------------------------------------------ */

/* gemm_f32_to_bf16 on the bits, without branches, so the loops below vectorise. */
static inline uint32_t gemm_bf16_bits(uint32_t u) {
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded;
}

/* rows x cols of src (leading dimension lds) rounded to BF16 into the dense dst [rows, cols]:
 * BF16 bits (uint16_t) when !wide, else the BF16 value as an F32 (emulation). dst may be src
 * when wide and lds == cols (in place, element by element). */
static void gemm_round_rows(void *dst, int wide, const float *src, int64_t rows, int64_t cols,
                            int64_t lds, int nthreads) {
    int nt = rows * cols >= GEMM_CONVERT_PAR_MIN ? nthreads : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *s = src + r * lds;
        if (wide) {
            float *d = (float *)dst + r * cols;
            for (int64_t c = 0; c < cols; c++) {
                uint32_t u;
                memcpy(&u, &s[c], 4);
                u = gemm_bf16_bits(u) << 16;
                memcpy(&d[c], &u, 4);
            }
        } else {
            uint16_t *d = (uint16_t *)dst + r * cols;
            for (int64_t c = 0; c < cols; c++) {
                uint32_t u;
                memcpy(&u, &s[c], 4);
                d[c] = (uint16_t)gemm_bf16_bits(u);
            }
        }
    }
}

/* X [T, width] rounded to BF16 into g->act (grown when too small; the first step allocates,
 * the later ones reuse it). */
static const void *gemm_round_act(GemmCtx *g, int wide, const float *X, int64_t T, int64_t width) {
    const size_t esize = wide ? sizeof(float) : sizeof(uint16_t);
    SL_CHECK((uint64_t)T <= SIZE_MAX / esize / (uint64_t)width, "activation [%lld, %lld] too large",
             (long long)T, (long long)width);
    const size_t bytes = (size_t)T * (size_t)width * esize;
    if (bytes > g->act_bytes) {
        mem_free(g->mem, MEM_ACTIVATION, g->act, g->act_bytes);
        g->act = mem_alloc(g->mem, MEM_ACTIVATION, bytes);
        g->act_bytes = bytes;
    }
    gemm_round_rows(g->act, wide, X, T, width, width, g->nthreads);
    return g->act;
}

/* Rows [r, r + n) of W as BF16 into g->scratch, a dense [n, cols] tile: BF16 bits (!wide, for
 * oneDNN; the F32 scratch holds twice the elements needed) or BF16 values as F32 (wide). */
static const void *gemm_bf16_tile(GemmCtx *g, const GemmWeight *W, int64_t r, int64_t n, int wide) {
    const int64_t cols = W->cols;
    if (wide) {
        gemm_rows_f32(W, r, r + n, g->scratch, cols, g->nthreads);
        /* BF16 widened is already exact; quant_dequant_bf16 = the F32 panel rounded */
        if (W->dtype != GEMM_BF16)
            gemm_round_rows(g->scratch, 1, g->scratch, n, cols, cols, g->nthreads);
        return g->scratch;
    }
    uint16_t *dst = (uint16_t *)g->scratch;
    if (W->dtype == GEMM_F32) {
        gemm_round_rows(dst, 0, (const float *)W->data + r * W->ld, n, cols, W->ld, g->nthreads);
    } else if (W->dtype == GEMM_BF16) {
        for (int64_t k = 0; k < n; k++)
            memcpy(dst + k * cols, (const uint16_t *)W->data + (r + k) * W->ld,
                   (size_t)cols * sizeof(uint16_t));
    } else {
        QuantWeight q = gemm_quant_view(W);
        int nt = n * cols >= GEMM_CONVERT_PAR_MIN ? g->nthreads : 1;
        const int64_t step = nt > 1 ? (n + nt - 1) / nt : n;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t a = 0; a < n; a += step) {
            const int64_t b = a + step < n ? a + step : n;
            quant_dequant_bf16(&q, r + a, r + b, 0, cols, dst + a * cols, cols);
        }
    }
    return dst;
}

/* C = beta C + A op(B) for one BF16-compute product: oneDNN on BF16 operands (native), or
 * sgemm on the BF16 values widened to F32 (emulated). */
static void gemm_bf16_product(GemmCtx *g, int wide, const BmmShape *s, const void *A, const void *B,
                              float *C) {
    if (!wide) {
        bmm_run(g->bmm, s, A, B, C);
        return;
    }
    gemm_f32(g, 0, s->trans_b, s->M, s->N, s->K, 1.0f, A, s->lda, B, s->ldb, s->beta, C, s->ldc);
}

/* The product of rows [r, r + n) of W (tile, or W itself in place) for gemm_xwt (xw = 0) or
 * gemm_xw (xw = 1); T, O, I of the layer. */
static BmmShape gemm_bf16_shape(const GemmWeight *W, int xw, int wide, int inplace, int64_t T,
                                int64_t r, int64_t n, float beta) {
    const int64_t nout = W->rows, nin = W->cols, ldw = inplace ? W->ld : nin;
    BmmShape s = {wide ? BMM_F32 : BMM_BF16, !xw, T, 0, 0, 0, ldw, 0, beta};
    if (!xw) { /* Y[:, r:r+n] (ldc O) = beta Y[:, r:r+n] + X[T, I] W[r:r+n, :]^T */
        s.N = n, s.K = nin, s.lda = nin, s.ldc = nout;
    } else { /* dX[T, I] = beta' dX + dY[:, r:r+n] (lda O) W[r:r+n, :]; beta' = beta on the
                first tile, 1 on the others */
        s.N = nin, s.K = n, s.lda = nout, s.ldc = nin;
        s.beta = r == 0 ? beta : 1.0f;
    }
    return s;
}

/* out = beta out + (X W^T | dY W) in BF16 compute, for T, O, I >= 1. Native (!wide): returns 0,
 * with nothing written, when oneDNN has no primitive for one of the products; else 1. */
static int gemm_bf16_linear(GemmCtx *g, int xw, int wide, float *out, const float *in,
                            const GemmWeight *W, int64_t T, float beta) {
    const int64_t nout = W->rows, nin = W->cols;
    const int inplace = !wide && W->dtype == GEMM_BF16;
    const int64_t tr = inplace ? nout : gemm_tile_rows(g, W);
    /* Every product must have its primitive before the first one writes (a fallback must not
     * see half-updated output); the tiles have at most three distinct shapes. */
    for (int64_t r = 0; r < nout && !wide; r += tr) {
        BmmShape s =
            gemm_bf16_shape(W, xw, wide, inplace, T, r, nout - r < tr ? nout - r : tr, beta);
        if (!bmm_ready(g->bmm, &s)) return 0;
    }
    const size_t esize = wide ? sizeof(float) : sizeof(uint16_t);
    const char *a = gemm_round_act(g, wide, in, T, xw ? nout : nin);
    for (int64_t r = 0; r < nout; r += tr) {
        const int64_t n = nout - r < tr ? nout - r : tr;
        BmmShape s = gemm_bf16_shape(W, xw, wide, inplace, T, r, n, beta);
        const void *w = inplace ? W->data : gemm_bf16_tile(g, W, r, n, wide);
        if (!xw)
            gemm_bf16_product(g, wide, &s, a, w, out + r);
        else
            gemm_bf16_product(g, wide, &s, a + (size_t)r * esize, w, out);
    }
    return 1;
}

/* The BF16-compute dispatch of gemm_xwt / gemm_xw: oneDNN, else (emulation asked for, or a
 * shape oneDNN lacks) sgemm on widened BF16 operands. */
static void gemm_bf16_dispatch(GemmCtx *g, int xw, float *out, const float *in, const GemmWeight *W,
                               int64_t T, float beta) {
    if (!g->bf16_emulate) {
        if (gemm_bf16_linear(g, xw, 0, out, in, W, T, beta)) return;
        if (!g->bf16_warned)
            log_warn("oneDNN has no BF16 matmul for %s T=%lld [%lld, %lld] %s weights (%s); "
                     "emulating it with sgemm (same numerics, slower)",
                     xw ? "dY W" : "X W^T", (long long)T, (long long)W->rows, (long long)W->cols,
                     gemm_dtype_name(W->dtype), bmm_last_status(g->bmm));
        g->bf16_warned = 1;
    }
    gemm_bf16_linear(g, xw, 1, out, in, W, T, beta);
}

void gemm_xwt(GemmCtx *g, float *Y, const float *X, const GemmWeight *W, int64_t T, float beta) {
    gemm_check_weight(W);
    const int64_t nout = W->rows, nin = W->cols;
    if (g->compute == GEMM_COMPUTE_BF16 && T > 0 && nout > 0 && nin > 0) {
        gemm_bf16_dispatch(g, 0, Y, X, W, T, beta);
        return;
    }
    if (W->dtype == GEMM_F32) {
        gemm_f32(g, 0, 1, T, nout, nin, 1.0f, X, nin, (const float *)W->data, W->ld, beta, Y, nout);
        return;
    }
    if (T == 0 || nout == 0) return;
    if (nin == 0) {
        gemm_f32(g, 0, 1, T, nout, 0, 1.0f, X, 1, NULL, 1, beta, Y, nout);
        return;
    }
    const int64_t tr = gemm_tile_rows(g, W);
    /* Y[:, r:r+n] = beta * Y[:, r:r+n] + X W[r:r+n, :]^T; tiles own disjoint output
     * columns, so every tile applies beta. */
    for (int64_t r = 0; r < nout; r += tr) {
        int64_t n = gemm_load_tile(g, W, r, tr);
        gemm_f32(g, 0, 1, T, n, nin, 1.0f, X, nin, g->scratch, nin, beta, Y + r, nout);
    }
}

void gemm_xw(GemmCtx *g, float *dX, const float *dY, const GemmWeight *W, int64_t T, float beta) {
    gemm_check_weight(W);
    const int64_t nout = W->rows, nin = W->cols;
    if (g->compute == GEMM_COMPUTE_BF16 && T > 0 && nout > 0 && nin > 0) {
        gemm_bf16_dispatch(g, 1, dX, dY, W, T, beta);
        return;
    }
    if (W->dtype == GEMM_F32) {
        gemm_f32(g, 0, 0, T, nin, nout, 1.0f, dY, nout, (const float *)W->data, W->ld, beta, dX,
                 nin);
        return;
    }
    if (T == 0 || nin == 0) return;
    if (nout == 0) {
        gemm_f32(g, 0, 0, T, nin, 0, 1.0f, dY, 1, NULL, nin, beta, dX, nin);
        return;
    }
    const int64_t tr = gemm_tile_rows(g, W);
    /* dX = beta * dX + sum over tiles of dY[:, r:r+n] W[r:r+n, :]: the first tile applies
     * beta, the others accumulate. */
    for (int64_t r = 0; r < nout; r += tr) {
        int64_t n = gemm_load_tile(g, W, r, tr);
        gemm_f32(g, 0, 0, T, nin, n, 1.0f, dY + r, nout, g->scratch, nin, r == 0 ? beta : 1.0f, dX,
                 nin);
    }
}

/* ---- compute dtype ------------------------------------------------------------------ */

int gemm_bf16_native(void) {
    return bmm_isa_bf16();
}

const char *gemm_isa(void) {
    return bmm_isa();
}

int64_t gemm_bf16_primitives(const GemmCtx *g) {
    return g->bmm ? bmm_created(g->bmm) : 0;
}

GemmCompute gemm_set_compute(GemmCtx *g, GemmCompute c, char *why, size_t n) {
    char dummy[8];
    if (!why) why = dummy, n = sizeof dummy;
    g->compute = GEMM_COMPUTE_F32;
    g->bf16_emulate = 0;
    if (c != GEMM_COMPUTE_BF16) {
        snprintf(why, n, "fp32");
        return g->compute;
    }
    const char *env = getenv("SHARDLORA_BF16");
    if (env && *env && strcmp(env, "auto") != 0 && strcmp(env, "off") != 0 &&
        strcmp(env, "emulate") != 0) {
        log_warn("SHARDLORA_BF16=%s is not auto, off or emulate; taken as auto", env);
        env = NULL;
    }
    if (env && strcmp(env, "off") == 0) {
        snprintf(why, n, "fp32 (SHARDLORA_BF16=off)");
        return g->compute;
    }
    if (env && strcmp(env, "emulate") == 0) {
        g->compute = GEMM_COMPUTE_BF16;
        g->bf16_emulate = 1;
        snprintf(why, n,
                 "bf16 (emulated: SHARDLORA_BF16=emulate, sgemm on BF16 operands; oneDNN ISA %s)",
                 gemm_isa());
        return g->compute;
    }
    if (!gemm_bf16_native()) {
        snprintf(why, n, "fp32 (this CPU has no native BF16: oneDNN ISA %s)", gemm_isa());
        return g->compute;
    }
    char err[160] = "";
    if (!g->bmm) g->bmm = bmm_create(err, sizeof err);
    if (!g->bmm) {
        snprintf(why, n, "fp32 (%s)", err);
        return g->compute;
    }
    /* A small product proves that oneDNN has a BF16 matmul here, and names it. */
    BmmShape probe = {BMM_BF16, 1, 16, 16, 16, 16, 16, 16, 0.0f};
    if (!bmm_ready(g->bmm, &probe)) {
        snprintf(why, n, "fp32 (oneDNN cannot create a BF16 matmul: %s; ISA %s)",
                 bmm_last_status(g->bmm), gemm_isa());
        return g->compute;
    }
    g->compute = GEMM_COMPUTE_BF16;
    snprintf(why, n, "bf16 (oneDNN %s, ISA %s)", bmm_impl(g->bmm), gemm_isa());
    return g->compute;
}

/* ---- BF16 <-> F32 -------------------------------------------------------------------- */

float gemm_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t gemm_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    /* NaN: keep sign and top payload bits, force the quiet bit so truncation cannot turn
     * it into an infinity. */
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    /* Round to nearest, ties to even: add 0x7fff plus the lowest kept bit. Overflow past
     * the largest finite value carries into the exponent and gives inf, as it should. */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
