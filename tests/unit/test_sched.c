/* LR schedules: values worked out by hand from Hugging Face's definitions (sched.h). */
#include <math.h>

#include "../../model/sched.h"
#include "check.h"

static void expect(SchedKind k, int64_t step, int64_t warmup, int64_t total, double want) {
    double got = sched_lr(k, 2.0, step, warmup, total);
    CHECK_TRUE(fabs(got - want) < 1e-12,
               "%s step %lld warmup %lld total %lld: got %.15g want %.15g", sched_name(k),
               (long long)step, (long long)warmup, (long long)total, got, want);
}

int main(void) {
    /* lr 2, warmup 2, total 10: s = step - 1; warmup factors 0/2 and 1/2 */
    for (int k = 0; k < 3; k++) {
        expect((SchedKind)k, 1, 2, 10, 0.0);
        expect((SchedKind)k, 2, 2, 10, 1.0);
    }
    expect(SCHED_CONSTANT, 3, 2, 10, 2.0);
    expect(SCHED_CONSTANT, 10, 2, 10, 2.0);
    /* linear: 2 * (10 - s) / 8 */
    expect(SCHED_LINEAR, 3, 2, 10, 2.0);
    expect(SCHED_LINEAR, 4, 2, 10, 1.75);
    expect(SCHED_LINEAR, 10, 2, 10, 0.25);
    expect(SCHED_LINEAR, 12, 2, 10, 0.0); /* past the end: clamped at 0 */
    /* cosine: 2 * 0.5 * (1 + cos(pi * (s - 2) / 8)) */
    expect(SCHED_COSINE, 3, 2, 10, 2.0);
    expect(SCHED_COSINE, 7, 2, 10, 1.0);                   /* quarter wave: cos(pi/2) = 0 */
    expect(SCHED_COSINE, 5, 2, 10, 1.0 + sqrt(0.5) + 0.0); /* s = 4: cos(pi/4) */
    expect(SCHED_COSINE, 11, 2, 10, 0.0);                  /* s = total: cos(pi) = -1 */
    /* no warmup: the first step has the full rate */
    expect(SCHED_LINEAR, 1, 0, 4, 2.0);
    expect(SCHED_LINEAR, 4, 0, 4, 0.5);
    expect(SCHED_COSINE, 1, 0, 4, 2.0);
    /* one-step run and warmup >= total do not divide by zero */
    expect(SCHED_COSINE, 1, 0, 1, 2.0);
    expect(SCHED_LINEAR, 3, 5, 4, 0.8);
    CHECK_TRUE(sched_parse("cosine") == SCHED_COSINE && sched_parse("linear") == SCHED_LINEAR &&
                   sched_parse("constant") == SCHED_CONSTANT && sched_parse("step") == -1 &&
                   sched_parse("constant_with_warmup") == SCHED_CONSTANT,
               "sched_parse");
    return check_finish();
}
