/* GEMM backend: gemm_f32 in all four transpose combinations, the linear-layer products
 * with F32 and BF16 weights against plain double loops, BF16 conversion, and the OpenBLAS
 * core re-exec (in child processes of this executable). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/gemm.h"
#include "runtime/mem.h"
#include "runtime/philox.h"
#include "tests/unit/check.h"

static void fill(float *x, int64_t n, uint64_t tag) {
    for (int64_t i = 0; i < n; i++)
        x[i] = philox_uniform(17, PHILOX_MODEL_INIT, (uint64_t)i, tag, 0, -1.0f, 1.0f);
}

/* ---- gemm_f32 ------------------------------------------------------------------------- */

/* C = alpha op(A) op(B) + beta C in double, row-major with leading dims. */
static void ref_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += a * b;
            }
            double c = beta == 0.0f ? 0.0 : (double)beta * C[(size_t)i * ldc + j];
            C[(size_t)i * ldc + j] = (float)(alpha * s + c);
        }
}

static void test_gemm_f32(GemmCtx *g) {
    const int M = 37, N = 29, K = 53;
    const float betas[] = {0.0f, 1.0f, 0.5f};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int bi = 0; bi < 3; bi++) {
                /* leading dimensions larger than the widths */
                int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 7;
                int arows = ta ? K : M, brows = tb ? N : K;
                float *A = malloc(sizeof(float) * arows * lda);
                float *B = malloc(sizeof(float) * brows * ldb);
                float *C = malloc(sizeof(float) * M * ldc);
                float *R = malloc(sizeof(float) * M * ldc);
                fill(A, (int64_t)arows * lda, 1);
                fill(B, (int64_t)brows * ldb, 2);
                fill(C, (int64_t)M * ldc, 3);
                float beta = betas[bi];
                if (beta == 0.0f) /* beta 0 must not read C */
                    for (int i = 0; i < M * ldc; i++)
                        C[i] = NAN;
                memcpy(R, C, sizeof(float) * M * ldc);
                gemm_f32(g, ta, tb, M, N, K, 0.75f, A, lda, B, ldb, beta, C, ldc);
                ref_gemm(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, beta, R, ldc);
                /* compare the M x N block; the padding columns must be untouched */
                float *cb = malloc(sizeof(float) * M * N), *rb = malloc(sizeof(float) * M * N);
                int pad_ok = 1;
                for (int i = 0; i < M; i++) {
                    memcpy(cb + i * N, C + i * ldc, sizeof(float) * N);
                    memcpy(rb + i * N, R + i * ldc, sizeof(float) * N);
                    for (int j = N; j < ldc; j++)
                        pad_ok &= memcmp(&C[i * ldc + j], &R[i * ldc + j], sizeof(float)) == 0;
                }
                char name[96];
                snprintf(name, sizeof name, "gemm_f32 transA=%d transB=%d beta=%g", ta, tb,
                         (double)beta);
                check_close(name, cb, rb, (int64_t)M * N, 1e-5);
                CHECK_TRUE(pad_ok, "%s wrote outside the M x N block", name);
                free(A), free(B), free(C), free(R), free(cb), free(rb);
            }

    /* K = 0: C = beta C */
    float c0[4] = {1, 2, 3, 4}, want0[4] = {0.5f, 1, 1.5f, 2};
    gemm_f32(g, 0, 0, 2, 2, 0, 1.0f, NULL, 1, NULL, 2, 0.5f, c0, 2);
    CHECK_TRUE(memcmp(c0, want0, sizeof c0) == 0, "K=0 with beta 0.5");
}

/* ---- linear products ------------------------------------------------------------------- */

/* Y = beta Y + X Wf^T and dX = beta dX + dY Wf, in double; Wf the F32 values of W. */
static void ref_xwt(float *Y, const float *X, const float *Wf, int64_t T, int64_t O, int64_t I,
                    float beta) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t o = 0; o < O; o++) {
            double s = beta == 0.0f ? 0.0 : (double)beta * Y[t * O + o];
            for (int64_t i = 0; i < I; i++)
                s += (double)X[t * I + i] * Wf[o * I + i];
            Y[t * O + o] = (float)s;
        }
}

static void ref_xw(float *dX, const float *dY, const float *Wf, int64_t T, int64_t O, int64_t I,
                   float beta) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < I; i++) {
            double s = beta == 0.0f ? 0.0 : (double)beta * dX[t * I + i];
            for (int64_t o = 0; o < O; o++)
                s += (double)dY[t * O + o] * Wf[o * I + i];
            dX[t * I + i] = (float)s;
        }
}

/* An output and its reference copy, equal: random (tag) when beta != 0, NaN when beta == 0
 * (gemm must overwrite it, not read it). */
static void fill_out(float *y, float *yr, int64_t n, uint64_t tag, float beta) {
    fill(y, n, tag);
    if (beta == 0.0f)
        for (int64_t k = 0; k < n; k++)
            y[k] = NAN;
    memcpy(yr, y, sizeof(float) * n);
}

static void test_linear(GemmCtx *g, GemmDtype dt, int64_t T, int64_t O, int64_t I, int64_t ld,
                        float beta) {
    /* W stored with leading dimension ld (> I), in its dtype; Wf = its exact F32 values. */
    float *Wsrc = malloc(sizeof(float) * O * ld), *Wf = malloc(sizeof(float) * O * I);
    uint16_t *Wb = malloc(sizeof(uint16_t) * O * ld);
    fill(Wsrc, O * ld, 10);
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < ld; i++) {
            Wb[o * ld + i] = gemm_f32_to_bf16(Wsrc[o * ld + i]);
            if (i < I)
                Wf[o * I + i] =
                    dt == GEMM_BF16 ? gemm_bf16_to_f32(Wb[o * ld + i]) : Wsrc[o * ld + i];
        }
    GemmWeight W = {dt, dt == GEMM_BF16 ? (const void *)Wb : (const void *)Wsrc, O, I, ld, NULL};
    char shape[80];
    snprintf(shape, sizeof shape, "%s T=%lld O=%lld I=%lld beta=%g",
             dt == GEMM_BF16 ? "bf16" : "f32", (long long)T, (long long)O, (long long)I,
             (double)beta);

    float *X = malloc(sizeof(float) * T * I), *Y = malloc(sizeof(float) * T * O);
    float *Yr = malloc(sizeof(float) * T * O);
    fill(X, T * I, 11);
    fill_out(Y, Yr, T * O, 12, beta);
    gemm_xwt(g, Y, X, &W, T, beta);
    ref_xwt(Yr, X, Wf, T, O, I, beta);
    char name[96];
    snprintf(name, sizeof name, "xwt %s", shape);
    check_close(name, Y, Yr, T * O, 1e-5);

    float *dY = malloc(sizeof(float) * T * O), *dX = malloc(sizeof(float) * T * I);
    float *dXr = malloc(sizeof(float) * T * I);
    fill(dY, T * O, 13);
    fill_out(dX, dXr, T * I, 14, beta);
    gemm_xw(g, dX, dY, &W, T, beta);
    ref_xw(dXr, dY, Wf, T, O, I, beta);
    snprintf(name, sizeof name, "xw  %s", shape);
    check_close(name, dX, dXr, T * I, 1e-5);

    free(Wsrc), free(Wf), free(Wb), free(X), free(Y), free(Yr), free(dY), free(dX), free(dXr);
}

/* ---- BF16 conversion ------------------------------------------------------------------ */

static uint16_t bf16_of_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, 4);
    return gemm_f32_to_bf16(f);
}

static void test_bf16(void) {
    /* Round to nearest, ties to even (1 + 2^-8 lies halfway between 1 and 1 + 2^-7). */
    struct {
        uint32_t in;
        uint16_t out;
        const char *what;
    } v[] = {
        {0x3f800000u, 0x3f80, "1.0 exact"},
        {0x3f808000u, 0x3f80, "tie, even below: down"},
        {0x3f818000u, 0x3f82, "tie, odd below: up"},
        {0x3f808001u, 0x3f81, "just above tie: up"},
        {0x3f807fffu, 0x3f80, "just below tie: down"},
        {0xbf808001u, 0xbf81, "negative, above tie"},
        {0x7f800000u, 0x7f80, "+inf"},
        {0xff800000u, 0xff80, "-inf"},
        {0x7f7fffffu, 0x7f80, "FLT_MAX rounds to inf"},
        {0x00000001u, 0x0000, "smallest denormal to +0"},
        {0x80000000u, 0x8000, "-0"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint16_t got = bf16_of_bits(v[i].in);
        CHECK_TRUE(got == v[i].out, "bf16(%08x) %s: got %04x want %04x", v[i].in, v[i].what, got,
                   v[i].out);
    }
    /* NaNs stay NaN, whatever the payload (a low-bit-only payload must not become inf). */
    const uint32_t nans[] = {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu, 0x7f80ffffu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t h = bf16_of_bits(nans[i]);
        float back = gemm_bf16_to_f32(h);
        CHECK_TRUE(isnan(back), "NaN %08x became %04x", nans[i], h);
        CHECK_TRUE((h >> 15) == (nans[i] >> 31), "NaN %08x lost its sign", nans[i]);
    }
    /* Every non-NaN BF16 value round-trips exactly. */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = gemm_bf16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        bad += gemm_f32_to_bf16(f) != h;
    }
    CHECK_TRUE(bad == 0, "%d bf16 values do not round-trip", bad);
    /* Rounding to an 8-bit significand: relative error at most the unit roundoff 2^-8. */
    double maxrel = 0;
    for (int i = 0; i < 100000; i++) {
        float f = philox_normal(3, PHILOX_MODEL_INIT, (uint64_t)i, 0, 0) * 1e3f;
        double rel = fabs((double)gemm_bf16_to_f32(gemm_f32_to_bf16(f)) - f) / fabs(f);
        if (rel > maxrel) maxrel = rel;
    }
    printf("bf16 rounding max_rel_err %.3e (bound 2^-8 = %.3e)\n", maxrel, 1.0 / 256);
    CHECK_TRUE(maxrel <= 1.0 / 256, "bf16 rounding error %g", maxrel);
}

/* ---- OpenBLAS core re-exec ---------------------------------------------------------------- */

/* Child mode: what main() of a real program does, then report the core in use. */
static int blas_core_child(int argc, char **argv) {
    gemm_ensure_blas_core(argc, argv);
    MemCtx m;
    mem_init(&m, MEM_PIN_OFF);
    GemmCtx g;
    gemm_init(&g, &m, 1, 0);
    char desc[256];
    const char *omp = getenv("OMP_WAIT_POLICY"), *re = getenv("SHARDLORA_BLAS_REEXEC");
    printf("core=%s\ndescribe=%s\nomp=%s\nreexec=%s\n", g.core,
           gemm_describe(&g, desc, sizeof desc), omp ? omp : "(unset)", re ? re : "(unset)");
    gemm_free(&g, &m);
    return 0;
}

/* Runs this executable in child mode with the given environment changes (NULL value:
 * unset); returns its exit status and its stdout + stderr in out. */
static int run_child(const char *const env[][2], int nenv, char *out, size_t outsz) {
    int fd[2];
    if (pipe(fd) != 0) return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 1);
        dup2(fd[1], 2);
        for (int i = 0; i < nenv; i++) {
            if (env[i][1])
                setenv(env[i][0], env[i][1], 1);
            else
                unsetenv(env[i][0]);
        }
        execl("/proc/self/exe", "test_gemm", "--blas-core-child", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    return check_child_output(fd[0], pid, out, outsz);
}

static int core_is_avx512(const char *out) {
    return strstr(out, "core=SkylakeX\n") || strstr(out, "core=Cooperlake\n") ||
           strstr(out, "core=SapphireRapids\n");
}

static void test_blas_core(void) {
    char out[2048];
    if (!__builtin_cpu_supports("avx512f")) {
        printf("SKIP re-exec to an AVX-512 core: this CPU has no avx512f\n");
        CHECK_TRUE(1, "skipped explicitly");
        return;
    }
    /* Prescott forced (what Debian's 0.3.21 falls back to on CPUs it does not know). */
    const char *const prescott[][2] = {{"OPENBLAS_CORETYPE", "Prescott"},
                                       {"SHARDLORA_BLAS_CORE", NULL},
                                       {"SHARDLORA_BLAS_REEXEC", NULL},
                                       {"OMP_WAIT_POLICY", NULL}};
    int rc = run_child(prescott, 4, out, sizeof out);
    printf("child (OPENBLAS_CORETYPE=Prescott):\n%s", out);
    CHECK_TRUE(rc == 0, "child exit %d", rc);
    CHECK_TRUE(core_is_avx512(out), "child did not switch to an AVX-512 core");
    CHECK_TRUE(strstr(out, "(was Prescott; set SHARDLORA_BLAS_CORE=keep to keep it)") != NULL,
               "gemm_describe does not mention the override");
    CHECK_TRUE(strstr(out, "omp=PASSIVE") != NULL, "OMP_WAIT_POLICY not set to PASSIVE");

    /* keep: no re-exec, Prescott stays. */
    const char *const keep[][2] = {{"OPENBLAS_CORETYPE", "Prescott"},
                                   {"SHARDLORA_BLAS_CORE", "keep"},
                                   {"SHARDLORA_BLAS_REEXEC", NULL}};
    rc = run_child(keep, 3, out, sizeof out);
    CHECK_TRUE(rc == 0 && strstr(out, "core=Prescott\n") && !strstr(out, "(was"),
               "SHARDLORA_BLAS_CORE=keep did not keep Prescott: %s", out);

    /* Forced name. */
    const char *const forced[][2] = {{"OPENBLAS_CORETYPE", "Prescott"},
                                     {"SHARDLORA_BLAS_CORE", "Cooperlake"},
                                     {"SHARDLORA_BLAS_REEXEC", NULL}};
    rc = run_child(forced, 3, out, sizeof out);
    CHECK_TRUE(rc == 0 && strstr(out, "core=Cooperlake\n"),
               "SHARDLORA_BLAS_CORE=Cooperlake not honoured: %s", out);

    /* Right core already: re-exec only to make OMP_WAIT_POLICY=PASSIVE take effect, and not
     * at all once the user has set it. */
    const char *const omp_only[][2] = {{"OPENBLAS_CORETYPE", "SkylakeX"},
                                       {"SHARDLORA_BLAS_CORE", NULL},
                                       {"SHARDLORA_BLAS_REEXEC", NULL},
                                       {"OMP_WAIT_POLICY", NULL}};
    rc = run_child(omp_only, 4, out, sizeof out);
    CHECK_TRUE(rc == 0 && strstr(out, "core=SkylakeX\n") && strstr(out, "omp=PASSIVE\n") &&
                   strstr(out, "reexec=SkylakeX\n") && !strstr(out, "(was"),
               "OMP_WAIT_POLICY re-exec: %s", out);
    const char *const nothing[][2] = {{"OPENBLAS_CORETYPE", "SkylakeX"},
                                      {"SHARDLORA_BLAS_CORE", NULL},
                                      {"SHARDLORA_BLAS_REEXEC", NULL},
                                      {"OMP_WAIT_POLICY", "ACTIVE"}};
    rc = run_child(nothing, 4, out, sizeof out);
    CHECK_TRUE(rc == 0 && strstr(out, "omp=ACTIVE\n") && strstr(out, "reexec=(unset)\n"),
               "re-exec although nothing needed changing: %s", out);

    /* Loop guard: a process that already re-exec'd once never does it again. */
    const char *const guard[][2] = {{"OPENBLAS_CORETYPE", "Prescott"},
                                    {"SHARDLORA_BLAS_CORE", NULL},
                                    {"SHARDLORA_BLAS_REEXEC", "Prescott"}};
    rc = run_child(guard, 3, out, sizeof out);
    CHECK_TRUE(rc == 0 && strstr(out, "core=Prescott\n"),
               "re-exec despite SHARDLORA_BLAS_REEXEC: %s", out);
    CHECK_TRUE(strstr(out, "not re-executing again") != NULL,
               "no warning that the requested core was not taken: %s", out);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--blas-core-child") == 0) return blas_core_child(argc, argv);
    gemm_ensure_blas_core(argc, argv);

    MemCtx m;
    mem_init(&m, MEM_PIN_OFF);
    GemmCtx g;
    const int64_t max_cols = 400;
    gemm_init(&g, &m, 0, max_cols);
    char desc[256];
    printf("%s\n", gemm_describe(&g, desc, sizeof desc));
    CHECK_TRUE(m.bytes[MEM_ACTIVATION] == g.scratch_floats * sizeof(float) &&
                   g.scratch_floats >= (size_t)max_cols,
               "scratch accounting");

    test_gemm_f32(&g);
    /* O = 1100: three tiles, the last one partial; ld > I; T = 1 and 37. */
    for (int dt = 0; dt < 2; dt++)
        for (int ti = 0; ti < 2; ti++)
            for (int bi = 0; bi < 2; bi++)
                test_linear(&g, (GemmDtype)dt, ti ? 37 : 1, 1100, 333, 341, bi ? 1.0f : 0.0f);
    /* widest weight the scratch allows, few rows (one partial tile) */
    test_linear(&g, GEMM_BF16, 5, 7, max_cols, max_cols, 1.0f);
    test_bf16();
    test_blas_core();

    size_t before = m.bytes[MEM_ACTIVATION];
    gemm_free(&g, &m);
    CHECK_TRUE(m.bytes[MEM_ACTIVATION] == before - before, "scratch not freed");
    return check_finish();
}
