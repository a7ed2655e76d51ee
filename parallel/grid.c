/* Process grid and counted collectives (see grid.h). */
#include "grid.h"

#include <stdio.h>
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
    g->dp = g->world_size;
    g->tp_rank = 0;
    g->dp_rank = g->world_rank;
    g->tp_comm = MPI_COMM_SELF;
    g->dp_comm = MPI_COMM_WORLD;
}

int grid_setup(Grid *g, int tp, ErrStatus *st) {
    err_status_ok(st);
    if (tp < 1)
        return err_status_set(st, "--tp %d: the tensor-parallel size must be at least 1", tp);
    if (g->world_size % tp != 0)
        return err_status_set(st,
                              "--tp %d does not divide the %d MPI ranks (world = dp x tp); "
                              "launch a multiple of %d ranks",
                              tp, g->world_size, tp);
    g->tp = tp;
    g->dp = g->world_size / tp;
    g->tp_rank = g->world_rank % tp;
    g->dp_rank = g->world_rank / tp;
    MPI_Comm_split(g->world, g->dp_rank, g->tp_rank, &g->tp_comm);
    MPI_Comm_split(g->world, g->tp_rank, g->dp_rank, &g->dp_comm);
    return 1;
}

void grid_finalize(Grid *g) {
    if (g->tp_comm != MPI_COMM_SELF && g->tp_comm != MPI_COMM_NULL) MPI_Comm_free(&g->tp_comm);
    if (g->dp_comm != MPI_COMM_WORLD && g->dp_comm != MPI_COMM_NULL) MPI_Comm_free(&g->dp_comm);
    if (g->mpi_owned) {
        int down = 0;
        MPI_Finalized(&down);
        if (!down) MPI_Finalize();
    }
}

const char *grid_bytes_name(GridBytes b) {
    static const char *names[GRID_NBYTES] = {"tp-activations", "dp-gradients", "world-gradients",
                                             "kv-gradients", "other"};
    return b < GRID_NBYTES ? names[b] : "?";
}

static int grid_comm_size(MPI_Comm c) {
    int n = 1;
    MPI_Comm_size(c, &n);
    return n;
}

static void grid_allreduce(Grid *g, MPI_Comm comm, void *buf, size_t n, MPI_Datatype type,
                           size_t elem, MPI_Op op, GridBytes cat) {
    if (n == 0 || grid_comm_size(comm) == 1) return;
    /* MPI counts are int: split very large buffers. */
    const size_t max_chunk = (size_t)1 << 30;
    char *p = buf;
    for (size_t off = 0; off < n; off += max_chunk) {
        size_t cnt = n - off < max_chunk ? n - off : max_chunk;
        int rc = MPI_Allreduce(MPI_IN_PLACE, p + off * elem, (int)cnt, type, op, comm);
        SL_CHECK(rc == MPI_SUCCESS, "MPI_Allreduce failed (%d)", rc);
    }
    g->bytes[cat] += n * elem;
    g->calls[cat]++;
}

void grid_allreduce_sum_f32(Grid *g, MPI_Comm comm, float *buf, size_t n, GridBytes cat) {
    grid_allreduce(g, comm, buf, n, MPI_FLOAT, sizeof(float), MPI_SUM, cat);
}

void grid_allreduce_max_f32(Grid *g, MPI_Comm comm, float *buf, size_t n, GridBytes cat) {
    grid_allreduce(g, comm, buf, n, MPI_FLOAT, sizeof(float), MPI_MAX, cat);
}

void grid_allreduce_sum_f64(Grid *g, MPI_Comm comm, double *buf, size_t n, GridBytes cat) {
    grid_allreduce(g, comm, buf, n, MPI_DOUBLE, sizeof(double), MPI_SUM, cat);
}

void grid_allreduce_sum_i64(Grid *g, MPI_Comm comm, int64_t *buf, size_t n, GridBytes cat) {
    grid_allreduce(g, comm, buf, n, MPI_INT64_T, sizeof(int64_t), MPI_SUM, cat);
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

MPI_Comm grid_split_world(Grid *g, int color) {
    MPI_Comm c = MPI_COMM_NULL;
    MPI_Comm_split(g->world, color, g->world_rank, &c);
    return c;
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
