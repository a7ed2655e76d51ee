/* The MFU denominator (mfu.h): a stable measured sgemm peak, raised to what the run
 * reaches, and the theoretical FMA peak for reference. */
#include "mfu.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "../runtime/timer.h"

/* Best GFLOP/s of n x n x n sgemms repeated for at least min_seconds (at least 3 of them):
 * the best repetition, so a moment of contention on a shared machine does not lower it. */
static double mfu_sgemm_gflops(GemmCtx *gc, MemCtx *mem, int64_t n, double min_seconds) {
    const size_t bytes = (size_t)(n * n) * sizeof(float);
    float *a = mem_alloc(mem, MEM_OTHER, bytes), *b = mem_alloc(mem, MEM_OTHER, bytes),
          *c = mem_alloc(mem, MEM_OTHER, bytes); /* [n, n] each */
    for (int64_t i = 0; i < n * n; i++)
        a[i] = b[i] = (float)(i % 7) * 0.01f;
    gemm_f32(gc, 0, 1, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n); /* warm-up */
    double best = 0;
    const double start = timer_now();
    for (int r = 0; r < 3 || timer_now() - start < min_seconds; r++) {
        const double t0 = timer_now();
        gemm_f32(gc, 0, 1, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        const double g = 2.0 * (double)n * (double)n * (double)n / (timer_now() - t0) / 1e9;
        if (g > best) best = g;
    }
    mem_free(mem, MEM_OTHER, a, bytes);
    mem_free(mem, MEM_OTHER, b, bytes);
    mem_free(mem, MEM_OTHER, c, bytes);
    return best;
}

void mfu_peak_init(MfuPeak *p, double given, Grid *g, GemmCtx *gc, MemCtx *mem,
                   double min_seconds) {
    memset(p, 0, sizeof *p);
    p->theoretical = mfu_theoretical_gflops(p->theoretical_desc, sizeof p->theoretical_desc);
    if (given > 0) {
        p->gflops = given;
        snprintf(p->source, sizeof p->source, "--peak-gflops");
        return;
    }
    int sync = 0; /* start together: the ranks share the node's cores and memory bandwidth */
    grid_allreduce_max_int(g, g->world, &sync, 1, GRID_BYTES_OTHER);
    /* 1536: large enough for OpenBLAS's blocked kernel to reach its steady rate */
    double best = mfu_sgemm_gflops(gc, mem, 1536, min_seconds);
    grid_allreduce_max_f64(g, g->world, &best, 1, GRID_BYTES_OTHER);
    p->gflops = p->measured = best;
    snprintf(p->source, sizeof p->source,
             "sgemm 1536^3 measured on all ranks at once for %.2g s, best rank", min_seconds);
}

int mfu_peak_observe(MfuPeak *p, double gflops, long long step) {
    if (!(gflops > p->gflops)) return 0;
    p->gflops = gflops;
    const int first = p->raised_at == 0;
    p->raised_at = step;
    if (first) {
        const size_t len = strlen(p->source);
        snprintf(p->source + len, sizeof p->source - len,
                 "; raised to the run's best step rate (first at step %lld)", step);
    }
    return first;
}

/* A number after "key" and ':' in /proc/cpuinfo's first processor (0 if absent). */
static double mfu_cpuinfo_num(const char *key) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[4096];
    double v = 0;
    while (f && fgets(line, sizeof line, f)) {
        const char *colon = strchr(line, ':');
        if (strncmp(line, key, strlen(key)) == 0 && colon) {
            sscanf(colon + 1, "%lf", &v);
            break;
        }
    }
    if (f) fclose(f);
    return v;
}

/* Single-precision lanes of the widest FMA the CPU has (16 AVX-512, 8 AVX2 + FMA; 0). */
static int mfu_fma_lanes(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[8192];
    int lanes = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) != 0) continue;
        if (strstr(line, " avx512f"))
            lanes = 16;
        else if (strstr(line, " fma") && strstr(line, " avx2"))
            lanes = 8;
        break;
    }
    if (f) fclose(f);
    return lanes;
}

double mfu_theoretical_gflops(char *desc, size_t n) {
    double mhz = 0;
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "r");
    if (f) {
        double khz = 0;
        if (fscanf(f, "%lf", &khz) == 1) mhz = khz / 1000.0;
        fclose(f);
    }
    const int max_clock = mhz > 0;
    if (mhz <= 0) mhz = mfu_cpuinfo_num("cpu MHz"); /* the current clock: a rougher figure */
    const int lanes = mfu_fma_lanes();
    cpu_set_t set;
    CPU_ZERO(&set);
    const int cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    if (mhz <= 0 || lanes == 0 || cores == 0) {
        snprintf(desc, n, "unknown (no clock or FMA width in /proc, /sys)");
        return 0;
    }
    const double gflops = cores * mhz / 1000.0 * lanes * 2 /* FMA units */ * 2 /* mul+add */;
    /* a virtual machine's /proc often shows the base clock while the cores boost above it
     * (measured here: sgemm 10% over this figure), so it is not a bound */
    snprintf(desc, n, "%d CPUs x %.0f MHz (%s) x %d lanes x 2 FMA units x 2", cores, mhz,
             max_clock ? "cpuinfo_max_freq" : "/proc/cpuinfo's clock; boost may exceed it", lanes);
    return gflops;
}
