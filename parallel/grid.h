/* The process grid world = dp x tp (DESIGN.md §2): tp_rank = world_rank % tp,
 * dp_rank = world_rank / tp, so a TP group is a block of consecutive ranks. Communicators
 * tp_comm (same dp_rank), dp_comm (same tp_rank) and world; collectives count the bytes they
 * move per category. grid_init installs the abort hook that calls MPI_Abort. */
#ifndef SHARDLORA_PARALLEL_GRID_H
#define SHARDLORA_PARALLEL_GRID_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "../runtime/err.h"

typedef enum {
    GRID_BYTES_TP = 0, /* activation all-reduces inside a TP group */
    GRID_BYTES_DP,     /* gradient sync of sharded adapter factors */
    GRID_BYTES_WORLD,  /* gradient sync of replicated adapter factors */
    GRID_BYTES_KV,     /* gradient sync of factors replicated within a kv-head group */
    GRID_BYTES_OTHER,  /* counts, norms, control */
    GRID_NBYTES
} GridBytes;

typedef struct {
    int world_rank, world_size;
    int tp, dp, tp_rank, dp_rank;
    MPI_Comm world, tp_comm, dp_comm;
    int mpi_owned;                 /* this Grid called MPI_Init */
    uint64_t bytes[GRID_NBYTES];   /* bytes sent per category (payload size per call) */
    uint64_t calls[GRID_NBYTES];
} Grid;

/* MPI_Init (if not yet), world rank/size, error rank, abort hook. Call after
 * gemm_ensure_blas_core (which may re-exec). */
void grid_init(Grid *g, int *argc, char ***argv);
/* Split into tp x dp. Impossible layouts (world % tp != 0, tp < 1): returns 0 with the
 * reason in st; every rank computes the same verdict, so no rank waits for another. */
int grid_setup(Grid *g, int tp, ErrStatus *st);
void grid_finalize(Grid *g);
const char *grid_bytes_name(GridBytes b);

/* In-place sum / max all-reduce over comm (a no-op on a communicator of size 1). */
void grid_allreduce_sum_f32(Grid *g, MPI_Comm comm, float *buf, size_t n, GridBytes cat);
void grid_allreduce_max_f32(Grid *g, MPI_Comm comm, float *buf, size_t n, GridBytes cat);
void grid_allreduce_sum_f64(Grid *g, MPI_Comm comm, double *buf, size_t n, GridBytes cat);
void grid_allreduce_sum_i64(Grid *g, MPI_Comm comm, int64_t *buf, size_t n, GridBytes cat);
/* Logical AND of a flag over world (for agreeing on errors and signals). */
int grid_all_ok(Grid *g, int ok);
/* The lowest world rank with ok == 0, or -1 when every rank is ok (so exactly one rank
 * prints a verdict that all ranks share). */
int grid_first_failed(Grid *g, int ok);
/* A communicator of all world ranks with the same color (MPI_Comm_split). */
MPI_Comm grid_split_world(Grid *g, int color);
/* Number of distinct shared-memory nodes spanned by the TP group (1 is what we want). */
int grid_tp_nodes(Grid *g);
void grid_barrier(Grid *g);

#endif
