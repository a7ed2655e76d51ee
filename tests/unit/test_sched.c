/* LR schedules: values worked out by hand from Hugging Face's definitions (sched.h). */
#include <math.h>
#include <stdio.h>

#include "../../model/sched.h"
#include "check.h"

static void expect(SchedKind k, int64_t step, int64_t warmup, int64_t total, double want) {
    double got = sched_lr(k, 2.0, step, warmup, total);
    CHECK_TRUE(fabs(got - want) < 1e-12,
               "%s step %lld warmup %lld total %lld: got %.15g want %.15g", sched_name(k),
               (long long)step, (long long)warmup, (long long)total, got, want);
}

static void expect_near(const char *what, double got, double want) {
    CHECK_TRUE(fabs(got - want) < 1e-12, "%s: got %.15g want %.15g", what, got, want);
}

/* The anchored rule (sched.h): plain when nothing changed, continuous at a resume, 0 at the
 * new end; a second resume takes its anchor from the first one's rule. */
static void check_resumed(SchedKind k) {
    double worst = 0;
    const int64_t W = 3, T0 = 20;
    const SchedAnchor plain = sched_anchor_plain(W);
    for (int64_t s = 1; s <= T0 + 1; s++)
        worst = fmax(worst,
                     fabs(sched_lr_resumed(k, 2.0, s, W, plain, T0) - sched_lr(k, 2.0, s, W, T0)));
    /* resumed after every step P with the same total: the old schedule again */
    for (int64_t P = 0; P < T0; P++) {
        const SchedAnchor a = sched_anchor_resume(plain, W, T0, P);
        for (int64_t s = P + 1; s <= T0 + 1; s++)
            worst = fmax(worst,
                         fabs(sched_lr_resumed(k, 2.0, s, W, a, T0) - sched_lr(k, 2.0, s, W, T0)));
    }
    CHECK_TRUE(worst < 1e-12, "%s: anchored rule with the total unchanged differs by %g",
               sched_name(k), worst);
    /* 20 -> 30 at step 12, then 30 -> 24 at step 18; and inside the warmup (step 2 -> 40) */
    const int64_t P1 = 12, T1 = 30, P2 = 18, T2 = 24;
    const SchedAnchor a1 = sched_anchor_resume(plain, W, T0, P1);
    /* continuous: step P's lr (the last one the old rule gave) is the new rule's too */
    CHECK_TRUE(fabs(sched_lr_resumed(k, 2.0, P1, W, a1, T1) - sched_lr(k, 2.0, P1, W, T0)) < 1e-12,
               "%s: lr of step %lld not continuous at the resume", sched_name(k), (long long)P1);
    const SchedAnchor a2 = sched_anchor_resume(a1, W, T1, P2);
    CHECK_TRUE(fabs(sched_lr_resumed(k, 2.0, P2, W, a2, T2) -
                    sched_lr_resumed(k, 2.0, P2, W, a1, T1)) < 1e-12,
               "%s: lr of step %lld not continuous at the second resume", sched_name(k),
               (long long)P2);
    /* a finished run extended: the lr after its last step is not 0 (except constant's) */
    const SchedAnchor a4 = sched_anchor_resume(plain, W, T0, T0);
    const double next = sched_lr_resumed(k, 2.0, T0 + 1, W, a4, T1);
    CHECK_TRUE(next > 0 && next <= sched_lr(k, 2.0, T0, W, T0),
               "%s: extending a finished run: lr of step %lld is %g", sched_name(k),
               (long long)T0 + 1, next);
    const SchedAnchor a3 = sched_anchor_resume(plain, W, T0, 2);
    CHECK_TRUE(a3.step == W && a3.progress == 0, "%s: resume inside the warmup: anchor (%lld, %g)",
               sched_name(k), (long long)a3.step, a3.progress);
    const double end1 = sched_lr_resumed(k, 2.0, T1 + 1, W, a1, T1),
                 end2 = sched_lr_resumed(k, 2.0, T2 + 1, W, a2, T2);
    const double want_end = k == SCHED_CONSTANT ? 2.0 : 0.0;
    CHECK_TRUE(fabs(end1 - want_end) < 1e-12 && fabs(end2 - want_end) < 1e-12,
               "%s: lr after the new last step %g and %g, want %g", sched_name(k), end1, end2,
               want_end);
    /* monotone decay after the warmup, never below 0 */
    double prev = 2.0;
    for (int64_t s = W + 1; s <= T1 + 1; s++) {
        const double lr =
            s <= P1 ? sched_lr(k, 2.0, s, W, T0) : sched_lr_resumed(k, 2.0, s, W, a1, T1);
        CHECK_TRUE(lr <= prev + 1e-12 && lr >= 0, "%s: step %lld lr %g after %g", sched_name(k),
                   (long long)s, lr, prev);
        prev = lr;
    }
    /* linear by hand: lr at step 12 of 20 (W 3) = 2 * (20 - 11) / 17; then to 0 at s = 30 */
    if (k == SCHED_LINEAR) {
        const double l12 = 2.0 * 9.0 / 17.0;
        expect_near("linear resumed step 14", sched_lr_resumed(k, 2.0, 14, W, a1, T1),
                    l12 * (30.0 - 13.0) / (30.0 - 11.0));
    }
    printf("%s: anchored rule = plain schedule within %.3g; continuous at both resumes\n",
           sched_name(k), worst);
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
    for (int k = 0; k < 3; k++)
        check_resumed((SchedKind)k);
    CHECK_TRUE(sched_parse("cosine") == SCHED_COSINE && sched_parse("linear") == SCHED_LINEAR &&
                   sched_parse("constant") == SCHED_CONSTANT && sched_parse("step") == -1 &&
                   sched_parse("constant_with_warmup") == SCHED_CONSTANT,
               "sched_parse");
    return check_finish();
}
