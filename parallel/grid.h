/* The process grid world = dp x pp x tp (DESIGN.md §2), TP innermost, then PP, then DP:
 * tp_rank = world_rank % tp, pp_rank = (world_rank / tp) % pp, dp_rank = world_rank / (tp * pp),
 * so a TP group is a block of consecutive ranks (one node) and a pipeline a block of tp * pp.
 * Communicators tp_comm (same dp_rank and pp_rank), pp_comm (same dp_rank and tp_rank: the
 * stages of one pipeline that hold the same TP shard), dp_comm (same tp_rank and pp_rank) and
 * world; at pp = 1 this is world = dp x tp as before and pp_comm is MPI_COMM_SELF. Collectives
 * count the bytes they move per category. grid_init installs the abort hook that calls
 * MPI_Abort. */
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
    GRID_BYTES_PP,     /* stage-boundary activations and their gradients (pp_comm) */
    GRID_BYTES_OTHER,  /* counts, norms, control */
    GRID_NBYTES
} GridBytes;

typedef struct {
    int world_rank, world_size;
    int tp, dp, pp, tp_rank, dp_rank, pp_rank;
    MPI_Comm world, tp_comm, dp_comm, pp_comm;
    int mpi_owned;               /* this Grid called MPI_Init */
    uint64_t bytes[GRID_NBYTES]; /* bytes sent per category (payload size per call) */
    uint64_t calls[GRID_NBYTES];
} Grid;

/* MPI_Init (if not yet), world rank/size, error rank, abort hook. Call after
 * gemm_ensure_blas_core (which may re-exec). */
void grid_init(Grid *g, int *argc, char ***argv);
/* Split into tp x dp (grid_setup_pp at pp = 1). Impossible layouts (world % tp != 0, tp < 1):
 * returns 0 with the reason in st; every rank computes the same verdict, so no rank waits for
 * another. */
int grid_setup(Grid *g, int tp, ErrStatus *st);
/* Split into dp x pp x tp. Refused as grid_setup, and also pp < 1 and world % (tp * pp) != 0
 * (the same verdict on every rank). At pp = 1 exactly grid_setup: the same two MPI_Comm_split
 * calls, and pp_comm stays MPI_COMM_SELF. */
int grid_setup_pp(Grid *g, int tp, int pp, ErrStatus *st);
void grid_finalize(Grid *g);

/* In-place sum / max all-reduce over comm (a no-op on a communicator of size 1). */
void grid_allreduce_sum_f32(Grid *g, MPI_Comm comm, float *buf, size_t n, GridBytes cat);
void grid_allreduce_max_f32(Grid *g, MPI_Comm comm, float *buf, size_t n, GridBytes cat);
void grid_allreduce_sum_f64(Grid *g, MPI_Comm comm, double *buf, size_t n, GridBytes cat);
void grid_allreduce_sum_i64(Grid *g, MPI_Comm comm, int64_t *buf, size_t n, GridBytes cat);
void grid_allreduce_max_int(Grid *g, MPI_Comm comm, int *buf, size_t n, GridBytes cat);
void grid_allreduce_max_f64(Grid *g, MPI_Comm comm, double *buf, size_t n, GridBytes cat);
/* A value and the rank-chosen index it came from: MPI_MAXLOC keeps the largest value (the
 * lowest index among equal ones), e.g. a distributed argmax. */
typedef struct {
    float v;
    int i;
} GridMaxLoc;
void grid_allreduce_maxloc(Grid *g, MPI_Comm comm, GridMaxLoc *buf, size_t n, GridBytes cat);
/* Byte-wise collectives over comm (root's rank in comm): bcast of `bytes` from root;
 * gather of `bytes` from each rank into root's recv (rank-major); gatherv of each rank's
 * `bytes` into root's recv at offsets sum(lens[0..r)) (lens: every rank's byte count, read on
 * root only). Counted in cat (what this rank sends). */
void grid_bcast(Grid *g, MPI_Comm comm, void *buf, size_t bytes, int root, GridBytes cat);
void grid_gather(Grid *g, MPI_Comm comm, const void *send, size_t bytes, void *recv, int root,
                 GridBytes cat);
void grid_gatherv(Grid *g, MPI_Comm comm, const void *send, size_t bytes, void *recv,
                  const size_t *lens, int root, GridBytes cat);
/* Point-to-point, byte-wise (tag distinguishes messages between one pair). */
void grid_send(Grid *g, MPI_Comm comm, const void *buf, size_t bytes, int dest, int tag,
               GridBytes cat);
void grid_recv(Grid *g, MPI_Comm comm, void *buf, size_t bytes, int src, int tag);
/* Non-blocking point-to-point (pipeline stages): *req completes in grid_wait, which returns
 * the seconds it waited (MPI_REQUEST_NULL: none). Isend is counted in cat when posted. */
void grid_isend(Grid *g, MPI_Comm comm, const void *buf, size_t bytes, int dest, int tag,
                GridBytes cat, MPI_Request *req);
void grid_irecv(MPI_Comm comm, void *buf, size_t bytes, int src, int tag, MPI_Request *req);
double grid_wait(MPI_Request *req);
/* Part r of n elements cut into `parts` nearly equal pieces: [*off, *off + *len). */
void grid_part(size_t n, int parts, int r, size_t *off, size_t *len);
/* full [n] on every rank of comm from each rank's part (grid_part of n over comm's size, in
 * full at its offset already): an in-place all-gather, counted in cat. */
void grid_allgather_f32(Grid *g, MPI_Comm comm, float *full, size_t n, GridBytes cat);
/* Logical AND of a flag over world (for agreeing on errors and signals). */
int grid_all_ok(Grid *g, int ok);
/* The lowest world rank with ok == 0, or -1 when every rank is ok (so exactly one rank
 * prints a verdict that all ranks share). */
int grid_first_failed(Grid *g, int ok);
/* The "all ranks ok?" pattern: one verdict for every rank. When a rank has ok == 0, the lowest
 * such rank prints "PREFIX: st->msg" on stderr (one line, not one per rank) and every rank
 * returns 0; otherwise 1. */
int grid_agree(Grid *g, int ok, const char *prefix, const ErrStatus *st);
/* grid_agree that also hands the failing rank's `code` to every rank: 0 when all are ok. */
int grid_agree_code(Grid *g, int ok, int code, const char *prefix, const ErrStatus *st);
/* A communicator of all world ranks with the same color (MPI_Comm_split). */
MPI_Comm grid_split_world(Grid *g, int color);
void grid_comm_free(MPI_Comm *c); /* a no-op for MPI_COMM_SELF / WORLD / NULL */
int grid_comm_rank(MPI_Comm c);
int grid_comm_size(MPI_Comm c);
/* The MPI library's version string (its first line) into buf. */
const char *grid_mpi_version(char *buf, size_t n);
/* Number of distinct shared-memory nodes spanned by the TP group (1 is what we want). */
int grid_tp_nodes(Grid *g);
void grid_barrier(Grid *g);
/* Number of world ranks on this rank's shared-memory node (collective over world). */
int grid_node_ranks(Grid *g);

#endif
