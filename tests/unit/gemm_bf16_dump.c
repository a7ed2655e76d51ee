/* The driver of reference_gemm_bf16 (tests/reference/gemm_bf16_ref.py --check): writes X [T, I],
 * dY [T, O] and W [O, I] (F32), then Y = X W^T and dX = dY W in BF16 compute with W stored as
 * F32, BF16 (rows padded: ld > I), INT8 and NF4 (quantised from W by runtime/quant.c).
 * MODE: "emulate" (SHARDLORA_BF16=emulate, any CPU) or "onednn" (the native path; when this CPU
 * has none, prints "skip <why>" and writes nothing). Prints "T O I" and gemm_set_compute's why. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/gemm.h"
#include "runtime/mem.h"
#include "runtime/quant.h"
#include "tests/unit/check.h"

enum { T = 19, O = 600, I = 256, PAD = 8 };

static void put(const char *dir, const char *name, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    check_write_file(path, p, n);
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[2], "emulate") != 0 && strcmp(argv[2], "onednn") != 0)) {
        fprintf(stderr, "usage: gemm_bf16_dump DIR emulate|onednn\n");
        return 2;
    }
    const char *dir = argv[1];
    gemm_ensure_blas_core(argc, argv);
    if (strcmp(argv[2], "emulate") == 0)
        setenv("SHARDLORA_BF16", "emulate", 1);
    else
        unsetenv("SHARDLORA_BF16");
    MemCtx m;
    mem_init(&m, MEM_PIN_OFF);
    GemmCtx g;
    gemm_init(&g, &m, 0, I);
    char why[256];
    if (gemm_set_compute(&g, GEMM_COMPUTE_BF16, why, sizeof why) != GEMM_COMPUTE_BF16) {
        printf("skip %s\n", why);
        gemm_free(&g, &m);
        return 0;
    }
    float *x = check_frand(T * I, 2.0f), *dy = check_frand(T * O, 0.1f);
    float *w = check_frand(O * I, 0.05f);
    put(dir, "x.f32", x, sizeof(float) * T * I);
    put(dir, "dy.f32", dy, sizeof(float) * T * O);
    put(dir, "w.f32", w, sizeof(float) * O * I);

    static uint16_t wb[O * (I + PAD)];
    static uint8_t codes[O * I];
    static float scales[O * I];
    static float y[T * O], dx[T * I];
    for (int64_t r = 0; r < O; r++)
        for (int64_t c = 0; c < I + PAD; c++)
            wb[r * (I + PAD) + c] = gemm_f32_to_bf16(c < I ? w[r * I + c] : 1e30f);
    const GemmDtype dts[] = {GEMM_F32, GEMM_BF16, GEMM_INT8, GEMM_NF4};
    for (int k = 0; k < 4; k++) {
        GemmWeight W = {dts[k], w, O, I, I, NULL};
        if (dts[k] == GEMM_BF16) W.data = wb, W.ld = I + PAD;
        if (dts[k] == GEMM_INT8 || dts[k] == GEMM_NF4) {
            QuantWeight q = {dts[k] == GEMM_INT8 ? QUANT_INT8 : QUANT_NF4, O, I, codes, scales};
            ErrStatus st;
            if (!quant_rows_f32(&q, 0, O, w, I, &st)) {
                fprintf(stderr, "gemm_bf16_dump: %s\n", st.msg);
                return 1;
            }
            W.data = codes, W.scales = scales;
        }
        gemm_xwt(&g, y, x, &W, T, 0.0f);
        gemm_xw(&g, dx, dy, &W, T, 0.0f);
        char name[64];
        snprintf(name, sizeof name, "y_%s.f32", gemm_dtype_name(dts[k]));
        put(dir, name, y, sizeof y);
        snprintf(name, sizeof name, "dx_%s.f32", gemm_dtype_name(dts[k]));
        put(dir, name, dx, sizeof dx);
    }
    printf("%d %d %d\n%s\n", T, O, I, why);
    free(x), free(dy), free(w);
    gemm_free(&g, &m);
    return 0;
}
