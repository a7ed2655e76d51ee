/* Minimal test helpers shared by the C unit tests: comparisons that print the max error
 * they saw and count failures; main returns check_finish() (non-zero on any failure); a
 * scratch directory for tests that write files (the build defines _GNU_SOURCE). */
#ifndef SHARDLORA_TESTS_CHECK_H
#define SHARDLORA_TESTS_CHECK_H

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int check_failures;
static int check_count;

/* max |a - b| / max(max |b|, floor); prints name and the error; fails above tol. */
static inline double check_close(const char *name, const float *a, const float *b, int64_t n,
                                 double tol) {
    double maxdiff = 0, maxref = 0;
    int64_t worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= maxdiff)) {
            maxdiff = d;
            worst = i;
        } /* NaN counts as worst */
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

#define CHECK_TRUE(cond, ...)                                                                      \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!(cond)) {                                                                             \
            check_failures++;                                                                      \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                 \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

static inline int check_finish(void) {
    printf("%d passed, %d failed\n", check_count - check_failures, check_failures);
    return check_failures ? 1 : 0;
}

/* Scratch directory: main calls check_tmp_init("name") first (makes /tmp/name_XXXXXX, exits
 * 1 if it cannot) and check_rm_rf(check_tmp) last; check_tmp_path("f") is "<dir>/f" in one of
 * 8 rotating buffers (so a few can be live at once). */
static char check_tmp[64];

static inline void check_tmp_init(const char *prefix) {
    snprintf(check_tmp, sizeof check_tmp, "/tmp/%s_XXXXXX", prefix);
    if (!mkdtemp(check_tmp)) {
        printf("FAIL mkdtemp %s: %s\n", check_tmp, strerror(errno));
        exit(1);
    }
}

static inline char *check_tmp_path(const char *name) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", check_tmp, name);
    return p;
}

/* Writes len bytes to path; a test input that cannot be written ends the test (exit 1). */
static inline void check_write_file(const char *path, const void *buf, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(buf, 1, len, fp) != len || fclose(fp) != 0) {
        printf("FAIL cannot write %s\n", path);
        exit(1);
    }
}

static inline int check_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Reads what a forked child writes into the pipe end fd (at most outsz - 1 bytes, NUL-
 * terminated; closes fd), then waits for it: its exit status, or 128 + the ending signal. */
static inline int check_child_output(int fd, pid_t pid, char *out, size_t outsz) {
    size_t len = 0;
    ssize_t k;
    while (len + 1 < outsz && (k = read(fd, out + len, outsz - 1 - len)) > 0)
        len += (size_t)k;
    out[len] = 0;
    close(fd);
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* rm -rf path (links are removed, not followed). */
static inline void check_rm_rf(const char *path) {
    nftw(path, check_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- test data and finite differences ---------------------------------------------------- */

static uint64_t check_rng_state = 0x9e3779b97f4a7c15ull;

/* Uniform in [-1, 1) (xorshift64*: deterministic, good enough for test data). */
static inline float check_rnd(void) {
    check_rng_state ^= check_rng_state >> 12;
    check_rng_state ^= check_rng_state << 25;
    check_rng_state ^= check_rng_state >> 27;
    uint64_t r = check_rng_state * 0x2545f4914f6cdd1dull;
    return (float)((double)(r >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

/* n zeroed floats (at least one); out of memory ends the test (exit 2). */
static inline float *check_falloc(int64_t n) {
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof *p);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* n values scale x check_rnd() (malloc'd). */
static inline float *check_frand(int64_t n, float scale) {
    float *p = check_falloc(n);
    for (int64_t i = 0; i < n; i++)
        p[i] = scale * check_rnd();
    return p;
}

static inline double check_dot_f64(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* Central differences of loss(ctx) w.r.t. x[0..n), step h relative to max(1, |x|). The step
 * actually taken is measured from the rounded floats, so fp32 rounding of x +- h does not
 * bias the quotient. */
typedef double (*CheckLossFn)(void *ctx);

static inline void check_fd_grad(float *g, float *x, int64_t n, double h, CheckLossFn loss,
                                 void *ctx) {
    for (int64_t i = 0; i < n; i++) {
        float x0 = x[i];
        double step = h * (fabs(x0) > 1 ? fabs(x0) : 1);
        float xp = (float)(x0 + step), xm = (float)(x0 - step);
        x[i] = xp;
        double lp = loss(ctx);
        x[i] = xm;
        double lm = loss(ctx);
        x[i] = x0;
        g[i] = (float)((lp - lm) / ((double)xp - (double)xm));
    }
}

#endif
