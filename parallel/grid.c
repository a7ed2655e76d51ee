/* Process grid and counted collectives (see grid.h). */
#include "grid.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/log.h"

static void grid_abort_hook(void *ctx, int code) {
    (void)ctx;
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    if (up && !down) MPI_Abort(MPI_COMM_WORLD, code);
}

void grid_init(Grid *g, int *argc, char ***argv) {
    memset(g, 0, sizeof *g);
    int up = 0;
    MPI_Initialized(&up);
    if (!up) {
        int provided = 0;
        MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        g->mpi_owned = 1;
    }
    g->world = MPI_COMM_WORLD;
    MPI_Comm_rank(g->world, &g->world_rank);
    MPI_Comm_size(g->world, &g->world_size);
    err_set_rank(g->world_rank);
    err_set_abort_hook(grid_abort_hook, NULL);
    g->tp = 1;
    g->pp = 1;
    g->dp = g->world_size;
    g->tp_rank = 0;
    g->pp_rank = 0;
    g->dp_rank = g->world_rank;
    g->tp_comm = MPI_COMM_SELF;
    g->pp_comm = MPI_COMM_SELF;
    g->dp_comm = MPI_COMM_WORLD;
}

int grid_setup(Grid *g, int tp, ErrStatus *st) {
    return grid_setup_pp(g, tp, 1, st);
}

int grid_setup_pp(Grid *g, int tp, int pp, ErrStatus *st) {
    err_status_ok(st);
    if (tp < 1)
        return err_status_set(st, "--tp %d: the tensor-parallel size must be at least 1", tp);
    if (pp < 1)
        return err_status_set(st, "--pp %d: the pipeline-parallel size must be at least 1", pp);
    /* pp = 1 keeps the message of the dp x tp grid word for word */
    if (pp == 1 && g->world_size % tp != 0)
        return err_status_set(st,
                              "--tp %d does not divide the %d MPI ranks (world = dp x tp); "
                              "launch a multiple of %d ranks",
                              tp, g->world_size, tp);
    /* tp * pp in 64 bits: both are ints, their product need not be */
    const int64_t block = (int64_t)tp * pp;
    if (pp > 1 && g->world_size % block != 0)
        return err_status_set(st,
                              "--tp %d x --pp %d = %lld does not divide the %d MPI ranks "
                              "(world = dp x pp x tp); launch a multiple of %lld ranks",
                              tp, pp, (long long)block, g->world_size, (long long)block);
    g->tp = tp;
    g->pp = pp;
    g->dp = (int)(g->world_size / block);
    g->tp_rank = g->world_rank % tp;
    g->pp_rank = (g->world_rank / tp) % pp;
    g->dp_rank = (int)(g->world_rank / block);
    /* colours: tp_comm = the block world_rank / tp, i.e. (dp_rank, pp_rank); dp_comm =
     * (pp_rank, tp_rank); pp_comm = (dp_rank, tp_rank). Keys order each by its own rank. */
    MPI_Comm_split(g->world, g->world_rank / tp, g->tp_rank, &g->tp_comm);
    MPI_Comm_split(g->world, g->pp_rank * tp + g->tp_rank, g->dp_rank, &g->dp_comm);
    if (pp > 1) MPI_Comm_split(g->world, g->dp_rank * tp + g->tp_rank, g->pp_rank, &g->pp_comm);
    return 1;
}

void grid_finalize(Grid *g) {
    if (g->tp_comm != MPI_COMM_SELF && g->tp_comm != MPI_COMM_NULL) MPI_Comm_free(&g->tp_comm);
    if (g->dp_comm != MPI_COMM_WORLD && g->dp_comm != MPI_COMM_NULL) MPI_Comm_free(&g->dp_comm);
    if (g->pp_comm != MPI_COMM_SELF && g->pp_comm != MPI_COMM_NULL) MPI_Comm_free(&g->pp_comm);
    if (g->mpi_owned) {
        int down = 0;
        MPI_Finalized(&down);
        if (!down) MPI_Finalize();
    }
}

int grid_comm_size(MPI_Comm c) {
    int n = 1;
    MPI_Comm_size(c, &n);
    return n;
}

int grid_comm_rank(MPI_Comm c) {
    int r = 0;
    MPI_Comm_rank(c, &r);
    return r;
}

void grid_comm_free(MPI_Comm *c) {
    if (*c != MPI_COMM_SELF && *c != MPI_COMM_WORLD && *c != MPI_COMM_NULL) MPI_Comm_free(c);
    *c = MPI_COMM_NULL;
}

const char *grid_mpi_version(char *buf, size_t n) {
    char v[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0;
    MPI_Get_library_version(v, &len);
    char *nl = strchr(v, '\n');
    if (nl) *nl = 0;
    snprintf(buf, n, "%s", v);
    return buf;
}

static void grid_allreduce(Grid *g, MPI_Comm comm, void *buf, size_t n, MPI_Datatype type,
                           size_t elem, MPI_Op op, GridBytes cat) {
    if (n == 0 || grid_comm_size(comm) == 1) return;
    /* MPI counts are int: split very large buffers. */
    const size_t max_chunk = (size_t)1 << 30;
    char *p = buf;
    for (size_t off = 0; off < n; off += max_chunk) {
        size_t cnt = n - off < max_chunk ? n - off : max_chunk;
        MPI_Allreduce(MPI_IN_PLACE, p + off * elem, (int)cnt, type, op, comm);
    }
    g->bytes[cat] += n * elem;
    g->calls[cat]++;
}

/* The typed all-reduces of grid.h, one line each. */
#define GRID_ALLREDUCE_FN(name, T, type, op)                                                       \
    void name(Grid *g, MPI_Comm comm, T *buf, size_t n, GridBytes cat) {                           \
        grid_allreduce(g, comm, buf, n, type, sizeof(T), op, cat);                                 \
    }
GRID_ALLREDUCE_FN(grid_allreduce_sum_f32, float, MPI_FLOAT, MPI_SUM)
GRID_ALLREDUCE_FN(grid_allreduce_max_f32, float, MPI_FLOAT, MPI_MAX)
GRID_ALLREDUCE_FN(grid_allreduce_sum_f64, double, MPI_DOUBLE, MPI_SUM)
GRID_ALLREDUCE_FN(grid_allreduce_max_f64, double, MPI_DOUBLE, MPI_MAX)
GRID_ALLREDUCE_FN(grid_allreduce_sum_i64, int64_t, MPI_INT64_T, MPI_SUM)
GRID_ALLREDUCE_FN(grid_allreduce_max_int, int, MPI_INT, MPI_MAX)
GRID_ALLREDUCE_FN(grid_allreduce_maxloc, GridMaxLoc, MPI_FLOAT_INT, MPI_MAXLOC)
#undef GRID_ALLREDUCE_FN

/* MPI counts are int: byte-wise messages are bounded (2 GiB) and checked, never wrapped. */
static int grid_count(size_t bytes) {
    SL_CHECK(bytes <= (size_t)INT32_MAX, "a %zu-byte message exceeds MPI's int count", bytes);
    return (int)bytes;
}

void grid_bcast(Grid *g, MPI_Comm comm, void *buf, size_t bytes, int root, GridBytes cat) {
    if (grid_comm_size(comm) == 1) return;
    MPI_Bcast(buf, grid_count(bytes), MPI_BYTE, root, comm);
    g->bytes[cat] += bytes;
    g->calls[cat]++;
}

void grid_gather(Grid *g, MPI_Comm comm, const void *send, size_t bytes, void *recv, int root,
                 GridBytes cat) {
    MPI_Gather(send, grid_count(bytes), MPI_BYTE, recv, grid_count(bytes), MPI_BYTE, root, comm);
    g->bytes[cat] += bytes;
    g->calls[cat]++;
}

void grid_gatherv(Grid *g, MPI_Comm comm, const void *send, size_t bytes, void *recv,
                  const size_t *lens, int root, GridBytes cat) {
    const int n = grid_comm_size(comm), me = grid_comm_rank(comm);
    /* the common case (a TP group, a node) needs no allocation: sampling gathers per token */
    enum { GRID_SMALL = 64 };
    int small[2 * GRID_SMALL], *counts = NULL, *displs = NULL;
    if (me == root) {
        counts = n <= GRID_SMALL ? small : malloc(2 * (size_t)n * sizeof *counts);
        SL_CHECK(counts, "out of memory");
        displs = counts + n;
        size_t off = 0;
        for (int r = 0; r < n; r++) {
            counts[r] = grid_count(lens[r]);
            displs[r] = grid_count(off);
            off += lens[r];
        }
    }
    MPI_Gatherv(send, grid_count(bytes), MPI_BYTE, recv, counts, displs, MPI_BYTE, root, comm);
    if (counts != small) free(counts);
    g->bytes[cat] += bytes;
    g->calls[cat]++;
}

void grid_send(Grid *g, MPI_Comm comm, const void *buf, size_t bytes, int dest, int tag,
               GridBytes cat) {
    MPI_Send(buf, grid_count(bytes), MPI_BYTE, dest, tag, comm);
    g->bytes[cat] += bytes;
    g->calls[cat]++;
}

void grid_recv(Grid *g, MPI_Comm comm, void *buf, size_t bytes, int src, int tag) {
    (void)g;
    MPI_Recv(buf, grid_count(bytes), MPI_BYTE, src, tag, comm, MPI_STATUS_IGNORE);
}

void grid_isend(Grid *g, MPI_Comm comm, const void *buf, size_t bytes, int dest, int tag,
                GridBytes cat, MPI_Request *req) {
    MPI_Isend(buf, grid_count(bytes), MPI_BYTE, dest, tag, comm, req);
    g->bytes[cat] += bytes;
    g->calls[cat]++;
}

void grid_irecv(MPI_Comm comm, void *buf, size_t bytes, int src, int tag, MPI_Request *req) {
    MPI_Irecv(buf, grid_count(bytes), MPI_BYTE, src, tag, comm, req);
}

double grid_wait(MPI_Request *req) {
    if (*req == MPI_REQUEST_NULL) return 0;
    const double t0 = MPI_Wtime();
    MPI_Wait(req, MPI_STATUS_IGNORE);
    return MPI_Wtime() - t0;
}

void grid_part(size_t n, int parts, int r, size_t *off, size_t *len) {
    const size_t base = n / (size_t)parts, extra = n % (size_t)parts, ur = (size_t)r;
    *off = ur * base + (ur < extra ? ur : extra);
    *len = base + (ur < extra);
}

void grid_allgather_f32(Grid *g, MPI_Comm comm, float *full, size_t n, GridBytes cat) {
    const int size = grid_comm_size(comm), me = grid_comm_rank(comm);
    if (size == 1) return;
    int *counts = malloc((size_t)size * 2 * sizeof *counts);
    SL_CHECK(counts, "out of memory");
    for (int r = 0; r < size; r++) {
        size_t off, len;
        grid_part(n, size, r, &off, &len);
        SL_CHECK(off + len <= (size_t)INT_MAX, "all-gather of %zu floats", n);
        counts[r] = (int)len;
        counts[size + r] = (int)off;
    }
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, full, counts, counts + size, MPI_FLOAT,
                   comm);
    g->bytes[cat] += (uint64_t)counts[me] * sizeof(float);
    g->calls[cat]++;
    free(counts);
}

int grid_all_ok(Grid *g, int ok) {
    int v = ok ? 1 : 0;
    if (g->world_size > 1) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_LAND, g->world);
    return v;
}

void grid_barrier(Grid *g) {
    MPI_Barrier(g->world);
}

int grid_first_failed(Grid *g, int ok) {
    int v = ok ? g->world_size : g->world_rank;
    if (g->world_size > 1) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MIN, g->world);
    return v < g->world_size ? v : -1;
}

int grid_agree(Grid *g, int ok, const char *prefix, const ErrStatus *st) {
    int first = grid_first_failed(g, ok);
    if (first >= 0 && first == g->world_rank) fprintf(stderr, "%s: %s\n", prefix, st->msg);
    return first < 0;
}

int grid_agree_code(Grid *g, int ok, int code, const char *prefix, const ErrStatus *st) {
    int first = grid_first_failed(g, ok);
    if (first < 0) return 0;
    if (first == g->world_rank) fprintf(stderr, "%s: %s\n", prefix, st->msg);
    grid_bcast(g, g->world, &code, sizeof code, first, GRID_BYTES_OTHER);
    return code;
}

MPI_Comm grid_split_world(Grid *g, int color) {
    MPI_Comm c = MPI_COMM_NULL;
    MPI_Comm_split(g->world, color, g->world_rank, &c);
    return c;
}

int grid_node_ranks(Grid *g) {
    MPI_Comm shm;
    MPI_Comm_split_type(g->world, MPI_COMM_TYPE_SHARED, g->world_rank, MPI_INFO_NULL, &shm);
    int n = 1;
    MPI_Comm_size(shm, &n);
    MPI_Comm_free(&shm);
    return n;
}

int grid_tp_nodes(Grid *g) {
    if (g->tp == 1) return 1;
    MPI_Comm shm;
    MPI_Comm_split_type(g->tp_comm, MPI_COMM_TYPE_SHARED, g->tp_rank, MPI_INFO_NULL, &shm);
    int n = 0, leader = 0, nodes = 0;
    MPI_Comm_rank(shm, &n);
    leader = n == 0;
    MPI_Allreduce(&leader, &nodes, 1, MPI_INT, MPI_SUM, g->tp_comm);
    MPI_Comm_free(&shm);
    return nodes;
}
