/* train/mfu: the peak follows the run (MFU never above 1), says so once, and the
 * theoretical FMA peak is a number or an explained 0. (mfu_peak_init's sgemm needs MPI and
 * is exercised by e2e_train_ckpt.) */
#include <stdio.h>
#include <string.h>

#include "../../train/mfu.h"
#include "check.h"

int main(void) {
    MfuPeak p;
    memset(&p, 0, sizeof p);
    p.gflops = 10;
    snprintf(p.source, sizeof p.source, "--peak-gflops");
    /* step rates, GFLOP/s per rank: below, above (raises, said), above again (not said) */
    const double rates[] = {5, 9.5, 12, 11, 15, 3};
    const int said[] = {0, 0, 1, 0, 0, 0};
    double worst = 0;
    for (int i = 0; i < 6; i++) {
        const int r = mfu_peak_observe(&p, rates[i], i + 1);
        CHECK_TRUE(r == said[i], "step %d rate %g: observe returned %d, want %d", i + 1, rates[i],
                   r, said[i]);
        const double mfu = rates[i] / p.gflops;
        if (mfu > worst) worst = mfu;
        CHECK_TRUE(mfu > 0 && mfu <= 1, "step %d: MFU %g outside (0, 1]", i + 1, mfu);
    }
    CHECK_TRUE(p.gflops == 15 && p.raised_at == 5, "peak %g raised at %lld, want 15 at 5", p.gflops,
               p.raised_at);
    CHECK_TRUE(strstr(p.source, "--peak-gflops; raised") && strstr(p.source, "first at step 3"),
               "source '%s'", p.source);
    char desc[128] = "";
    const double theo = mfu_theoretical_gflops(desc, sizeof desc);
    CHECK_TRUE(theo >= 0 && desc[0], "theoretical %g '%s'", theo, desc);
    printf("max MFU %.3g; source: %s; theoretical %.4g GFLOP/s (%s)\n", worst, p.source, theo,
           desc);
    return check_finish();
}
