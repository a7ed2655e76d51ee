/* The denominator of MFU (model FLOPs utilisation = model FLOP/s / peak FLOP/s): a peak per
 * rank that stays put for the whole run. It is the best of repeated large sgemms, measured
 * on all ranks at once for long enough to be stable, agreed over the ranks (the highest),
 * and raised to the run's own best step rate if a step ever goes faster, so MFU never
 * exceeds 100%. For reference the CPU's theoretical FMA peak is worked out when /proc and
 * /sys tell the vector width and the clock. */
#ifndef SHARDLORA_TRAIN_MFU_H
#define SHARDLORA_TRAIN_MFU_H

#include <stddef.h>

#include "../parallel/grid.h"
#include "../runtime/gemm.h"
#include "../runtime/mem.h"

typedef struct {
    double gflops;              /* the peak per rank, GFLOP/s */
    double measured;            /* what the sgemm gave (0: --peak-gflops) */
    double theoretical;         /* cores x clock x FMA lanes x 2 FMA units x 2 (0: unknown) */
    char theoretical_desc[192]; /* how theoretical was worked out */
    char source[160];           /* how gflops came about (summary.json "peak_source") */
    long long raised_at;        /* the step that raised it (0: never) */
} MfuPeak;

/* The peak: `given` (--peak-gflops) when > 0, else the sgemm measured on every rank at once
 * (collective over g->world) for at least min_seconds; the highest rank's figure. */
void mfu_peak_init(MfuPeak *p, double given, Grid *g, GemmCtx *gc, MemCtx *mem, double min_seconds);

/* A step ran at `gflops` model GFLOP/s per rank: raises the peak to it if higher. Returns 1
 * the first time that happens (the caller says so once). */
int mfu_peak_observe(MfuPeak *p, double gflops, long long step);

/* The CPU's theoretical single-precision peak of this process's CPUs in GFLOP/s, assuming
 * 2 FMA units per core (some cores have 1) at the clock the system reports (a base clock
 * under boost is exceeded in practice: a reference, not a bound); 0 when the clock or the vector
 * width is unknown. desc gets how it was computed. */
double mfu_theoretical_gflops(char *desc, size_t n);

#endif
