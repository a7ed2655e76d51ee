/* The start shared by the MPI commands (train, eval, generate, merge): MPI up, the options
 * parsed on every rank (so every rank reaches the same verdict), --help printed by rank 0,
 * and the run options they all have checked the same way. */
#ifndef SHARDLORA_LAUNCH_MPICMD_H
#define SHARDLORA_LAUNCH_MPICMD_H

#include "../parallel/grid.h"
#include "../runtime/kernels.h"
#include "args.h"

/* grid_init, then args_parse of argv[2..]; with --help, rank 0 prints usage + about + the
 * options and *help = 1 (the caller frees the specs and ends with status 0). Returns
 * args_parse's verdict, st set on failure. */
int mpicmd_start(Grid *g, int *argc, char ***argv, ArgSpec *specs, int nspecs, const char *usage,
                 const char *about, int *help, ErrStatus *st);

/* --log-level, --kernels and --pin-memory: their parsed values, or 0 with st saying which
 * value is wrong (nothing checked when st is already failed: returns 0). */
int mpicmd_run_opts(const char *log_level, const char *kernels, const char *pin, int *lvl,
                    const KernOps **kops, int *pin_mode, ErrStatus *st);

#endif
