/* Minimal test helpers shared by the C unit tests: comparisons that print the max error
 * they saw and count failures; main returns check_finish() (non-zero on any failure). */
#ifndef SHARDLORA_TESTS_CHECK_H
#define SHARDLORA_TESTS_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

static int check_failures;
static int check_count;

/* max |a - b| / max(max |b|, floor); prints name and the error; fails above tol. */
static inline double check_close(const char *name, const float *a, const float *b, int64_t n,
                                 double tol) {
    double maxdiff = 0, maxref = 0;
    int64_t worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= maxdiff)) { maxdiff = d; worst = i; } /* NaN counts as worst */
        if (fabs((double)b[i]) > maxref) maxref = fabs((double)b[i]);
    }
    double rel = maxdiff / (maxref > 1e-6 ? maxref : 1e-6);
    int ok = rel <= tol;
    check_count++;
    if (!ok) check_failures++;
    printf("%s %-48s max_rel_err %.3e (tol %.1e, n %lld, worst at %lld)\n", ok ? "PASS" : "FAIL",
           name, rel, tol, (long long)n, (long long)worst);
    return rel;
}

#define CHECK_TRUE(cond, ...)                                                                  \
    do {                                                                                       \
        check_count++;                                                                         \
        if (!(cond)) {                                                                         \
            check_failures++;                                                                  \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                             \
            printf(__VA_ARGS__);                                                               \
            printf("\n");                                                                      \
        }                                                                                      \
    } while (0)

static inline int check_finish(void) {
    printf("%d passed, %d failed\n", check_count - check_failures, check_failures);
    return check_failures ? 1 : 0;
}

#endif
