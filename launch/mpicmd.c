/* The shared start of the MPI commands (see mpicmd.h). */
#include "mpicmd.h"

#include <stdio.h>

#include "../runtime/log.h"
#include "../runtime/mem.h"

int mpicmd_start(Grid *g, int *argc, char ***argv, ArgSpec *specs, int nspecs, const char *usage,
                 const char *about, int *help, ErrStatus *st) {
    grid_init(g, argc, argv);
    *help = 0;
    err_status_ok(st);
    int ok = args_parse(specs, nspecs, *argc, *argv, 2, help, st);
    if (ok && *help && g->world_rank == 0) args_print_help(stdout, usage, about, specs, nspecs);
    return ok;
}

int mpicmd_run_opts(const char *log_level, const char *kernels, const char *pin, int *lvl,
                    const KernOps **kops, int *pin_mode, ErrStatus *st) {
    if (!st->ok) return 0;
    *lvl = log_parse_level(log_level);
    *kops = kern_ops_by_name(kernels);
    *pin_mode = mem_parse_pin(pin);
    if (*lvl < 0) return err_status_set(st, "--log-level '%s': expected error, warn, info or debug", log_level);
    if (!*kops) return err_status_set(st, "--kernels '%s': expected fast or reference", kernels);
    if (*pin_mode < 0) return err_status_set(st, "--pin-memory '%s': expected auto, on or off", pin);
    return 1;
}
