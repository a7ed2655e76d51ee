/* torchrng against values torch 1.13 (Debian python3-torch) printed for
 *   g = torch.Generator(device="cpu").manual_seed(seed); torch.empty(n).uniform_(lo, hi,
 * generator=g) (t[i].item().hex()): PEFT's VeRA projections depend on them being bit-identical.
 * Seed 123456789012 checks the 32-bit truncation, index 624 the first regeneration of the state. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "runtime/torchrng.h"
#include "tests/unit/check.h"

typedef struct {
    uint64_t seed;
    size_t n;
    double lo, hi;
    size_t idx[4];
    double want[4];
    int nidx;
} TrngCase;

int main(void) {
    const double b = sqrt(3.0) * (sqrt(2.0) / sqrt(64.0)); /* PEFT _kaiming_init, fan_in 64 */
    const TrngCase cases[] = {
        {0,
         256,
         -b,
         b,
         {0, 1, 2, 255},
         {-0x1.2c76e2p-9, 0x1.50632ap-3, -0x1.020da0p-2, -0x1.cfd448p-4},
         4},
        {123456789012ull,
         1000,
         -1.0,
         1.0,
         {0, 623, 624, 999},
         {-0x1.35ad8cp-1, 0x1.ae4a50p-2, -0x1.f85300p-4, -0x1.589558p-1},
         4},
        {42,
         1000000,
         -0.25,
         0.5,
         {0, 500000, 999999},
         {0x1.a59532p-2, -0x1.b7f262p-3, 0x1.f7d148p-3},
         3},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const TrngCase *k = &cases[c];
        float *v = malloc(k->n * sizeof *v);
        CHECK_TRUE(v != NULL, "out of memory");
        if (!v) break;
        TorchRng g;
        torchrng_seed(&g, k->seed);
        torchrng_uniform_f32(&g, v, k->n, k->lo, k->hi);
        for (int i = 0; i < k->nidx; i++) {
            const float want = (float)k->want[i], got = v[k->idx[i]];
            CHECK_TRUE(got == want, "seed %llu [%zu]: %a, torch %a", (unsigned long long)k->seed,
                       k->idx[i], (double)got, (double)want);
            printf("seed %llu uniform_(%g, %g) [%zu] = %a (torch %a)\n",
                   (unsigned long long)k->seed, k->lo, k->hi, k->idx[i], (double)got, (double)want);
        }
        free(v);
    }
    return check_finish();
}
