/* MPI tests of parallel/grid and parallel/gsync on 4 ranks (mpiexec -n 4): grid_setup at
 * tp = 2 (ranks, sizes and members of tp_comm / dp_comm as DESIGN.md §2 says; tp = 4, 1 and
 * refused layouts), grid_setup_pp at (tp, pp, dp) = (1,2,2), (2,2,1), (1,4,1) against tables
 * written out by hand (every rank's coordinates and the members of tp_comm, pp_comm and
 * dp_comm; stage-boundary bytes counted as pp), at pp = 1 the same communicators as
 * grid_setup and pp_comm = SELF, and its refusals; every counted collective's values and the bytes
 * / calls it adds to its category (and to no other), grid_agree / grid_agree_code (one rank prints,
 * every rank gets the verdict and the first failing rank's code), grid_split_world, grid_node_ranks
 * (4 on one machine), and gsync buckets over dp_comm, tp_comm and world started out of order: the
 * same sums as MPI_Allreduce, the bytes counted once per bucket, twice in a row. Every rank checks;
 * rank 0 prints the verdict and the exit status is non-zero on any rank's failure. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpi.h>

#include "parallel/grid.h"
#include "parallel/gsync.h"

static int g_fail, g_count;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        g_count++;                                                                                 \
        if (!(cond)) {                                                                             \
            g_fail++;                                                                              \
            printf("FAIL rank %d %s:%d: %s: ", g_rank, __FILE__, __LINE__, #cond);                 \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            fflush(stdout);                                                                        \
        }                                                                                          \
    } while (0)

static int g_rank;

/* The counters before an operation, to check what it added. */
typedef struct {
    uint64_t bytes[GRID_NBYTES], calls[GRID_NBYTES];
} Counts;

static Counts counts_of(const Grid *g) {
    Counts c;
    memcpy(c.bytes, g->bytes, sizeof c.bytes);
    memcpy(c.calls, g->calls, sizeof c.calls);
    return c;
}

/* g's counters = before + (bytes, calls) in category cat, unchanged elsewhere. */
static void check_counted(const char *what, const Grid *g, const Counts *before, GridBytes cat,
                          uint64_t bytes, uint64_t calls) {
    for (int k = 0; k < GRID_NBYTES; k++) {
        uint64_t db = g->bytes[k] - before->bytes[k], dc = g->calls[k] - before->calls[k];
        uint64_t wb = k == (int)cat ? bytes : 0, wc = k == (int)cat ? calls : 0;
        CHECK(db == wb && dc == wc,
              "%s: category %d counted %llu bytes in %llu calls, want %llu in %llu", what, k,
              (unsigned long long)db, (unsigned long long)dc, (unsigned long long)wb,
              (unsigned long long)wc);
    }
}

/* World ranks of the members of comm, in comm's rank order, into out [size]. */
static int members(MPI_Comm comm, int *out) {
    int n = grid_comm_size(comm);
    MPI_Allgather(&g_rank, 1, MPI_INT, out, 1, MPI_INT, comm);
    return n;
}

static void test_setup(Grid *g) {
    ErrStatus st;
    CHECK(grid_setup(g, 2, &st), "grid_setup tp=2 on 4 ranks: %s", st.msg);
    CHECK(g->world_size == 4 && g->tp == 2 && g->dp == 2, "sizes %d %d %d", g->world_size, g->tp,
          g->dp);
    CHECK(g->tp_rank == g_rank % 2 && g->dp_rank == g_rank / 2, "tp_rank %d dp_rank %d", g->tp_rank,
          g->dp_rank);
    int m[4];
    /* tp_comm: the consecutive block of my dp_rank, ordered by tp_rank */
    CHECK(members(g->tp_comm, m) == 2 && m[0] == 2 * g->dp_rank && m[1] == 2 * g->dp_rank + 1,
          "tp_comm members %d %d", m[0], m[1]);
    CHECK(grid_comm_rank(g->tp_comm) == g->tp_rank, "rank in tp_comm %d",
          grid_comm_rank(g->tp_comm));
    /* dp_comm: the ranks with my tp_rank, ordered by dp_rank */
    CHECK(members(g->dp_comm, m) == 2 && m[0] == g->tp_rank && m[1] == g->tp_rank + 2,
          "dp_comm members %d %d", m[0], m[1]);
    CHECK(grid_comm_rank(g->dp_comm) == g->dp_rank, "rank in dp_comm %d",
          grid_comm_rank(g->dp_comm));
    CHECK(members(g->world, m) == 4 && m[3] == 3, "world");
    /* the test runs its 4 ranks on one machine */
    CHECK(grid_node_ranks(g) == 4, "grid_node_ranks %d, expected 4", grid_node_ranks(g));

    /* other layouts on fresh Grids (MPI is up: grid_init does not own it) */
    Grid h;
    grid_init(&h, NULL, NULL);
    CHECK(!h.mpi_owned, "second grid_init owns MPI");
    CHECK(grid_setup(&h, 4, &st) && h.dp == 1 && h.tp_rank == g_rank && h.dp_rank == 0 &&
              grid_comm_size(h.tp_comm) == 4 && grid_comm_size(h.dp_comm) == 1,
          "tp=4: dp %d tp_rank %d dp_rank %d", h.dp, h.tp_rank, h.dp_rank);
    grid_finalize(&h);
    grid_init(&h, NULL, NULL);
    CHECK(grid_setup(&h, 1, &st) && h.dp == 4 && h.tp_rank == 0 && h.dp_rank == g_rank &&
              grid_comm_size(h.tp_comm) == 1 && grid_comm_size(h.dp_comm) == 4,
          "tp=1: dp %d tp_rank %d dp_rank %d", h.dp, h.tp_rank, h.dp_rank);
    grid_finalize(&h);
    grid_init(&h, NULL, NULL);
    CHECK(!grid_setup(&h, 3, &st) && strstr(st.msg, "--tp 3") && strstr(st.msg, "4"),
          "tp=3 of 4 ranks refused: '%s'", st.msg);
    CHECK(!grid_setup(&h, 0, &st) && strstr(st.msg, "at least 1"), "tp=0 refused: '%s'", st.msg);
    CHECK(h.tp == 1 && h.tp_comm == MPI_COMM_SELF, "a refused grid_setup changed the grid");
    grid_finalize(&h);
}

/* One (tp, pp) layout of 4 ranks written out by hand (TP innermost, then PP, then DP):
 * each rank's (tp_rank, pp_rank, dp_rank) and the world ranks of its tp_comm, pp_comm and
 * dp_comm in communicator order (-1 ends a list). */
typedef struct {
    int tp, pp, dp;
    int coord[4][3];
    int tpm[4][5], ppm[4][5], dpm[4][5];
} PpLayout;

static const PpLayout pp_layouts[] = {
    /* (tp, pp, dp) = (1, 2, 2): two pipelines {0, 1} and {2, 3}; stage s of both in dp_comm */
    {1,
     2,
     2,
     {{0, 0, 0}, {0, 1, 0}, {0, 0, 1}, {0, 1, 1}},
     {{0, -1}, {1, -1}, {2, -1}, {3, -1}},
     {{0, 1, -1}, {0, 1, -1}, {2, 3, -1}, {2, 3, -1}},
     {{0, 2, -1}, {1, 3, -1}, {0, 2, -1}, {1, 3, -1}}},
    /* (2, 2, 1): stage 0 = TP group {0, 1}, stage 1 = {2, 3}; shard t's pipeline {t, t + 2} */
    {2,
     2,
     1,
     {{0, 0, 0}, {1, 0, 0}, {0, 1, 0}, {1, 1, 0}},
     {{0, 1, -1}, {0, 1, -1}, {2, 3, -1}, {2, 3, -1}},
     {{0, 2, -1}, {1, 3, -1}, {0, 2, -1}, {1, 3, -1}},
     {{0, -1}, {1, -1}, {2, -1}, {3, -1}}},
    /* (1, 4, 1): one pipeline of four stages */
    {1,
     4,
     1,
     {{0, 0, 0}, {0, 1, 0}, {0, 2, 0}, {0, 3, 0}},
     {{0, -1}, {1, -1}, {2, -1}, {3, -1}},
     {{0, 1, 2, 3, -1}, {0, 1, 2, 3, -1}, {0, 1, 2, 3, -1}, {0, 1, 2, 3, -1}},
     {{0, -1}, {1, -1}, {2, -1}, {3, -1}}},
};

/* comm's members (world ranks, comm order) = want (-1 terminated) and my rank in comm = me. */
static void check_members(const char *what, const PpLayout *l, MPI_Comm comm, const int *want,
                          int me) {
    int m[4] = {-1, -1, -1, -1}, n = members(comm, m), wn = 0;
    while (want[wn] >= 0)
        wn++;
    int same = n == wn;
    for (int i = 0; same && i < n; i++)
        same = m[i] == want[i];
    CHECK(same && grid_comm_rank(comm) == me,
          "(tp %d pp %d dp %d) %s: %d members %d %d %d %d, my rank %d; want %d members "
          "starting %d, my rank %d",
          l->tp, l->pp, l->dp, what, n, m[0], m[1], m[2], m[3], grid_comm_rank(comm), wn, want[0],
          me);
}

/* Stage-boundary traffic of one pipeline: stage s sends to s + 1 over pp_comm, counted as pp. */
static void check_pp_send(Grid *h) {
    Counts c = counts_of(h);
    double x = 100.0 * h->dp_rank + 10.0 * h->tp_rank + h->pp_rank, got = -1;
    if (h->pp_rank + 1 < h->pp) {
        grid_send(h, h->pp_comm, &x, sizeof x, h->pp_rank + 1, 3, GRID_BYTES_PP);
        check_counted("pp send", h, &c, GRID_BYTES_PP, sizeof x, 1);
    }
    if (h->pp_rank > 0) {
        grid_recv(h, h->pp_comm, &got, sizeof got, h->pp_rank - 1, 3);
        CHECK(got == x - 1, "stage %d received %g from the stage before, want %g", h->pp_rank, got,
              x - 1);
    }
}

static void test_setup_pp(void) {
    ErrStatus st;
    Grid h;
    for (size_t i = 0; i < sizeof pp_layouts / sizeof *pp_layouts; i++) {
        const PpLayout *l = &pp_layouts[i];
        const int *want = l->coord[g_rank];
        grid_init(&h, NULL, NULL);
        CHECK(grid_setup_pp(&h, l->tp, l->pp, &st), "grid_setup_pp tp %d pp %d: %s", l->tp, l->pp,
              st.msg);
        CHECK(h.tp == l->tp && h.pp == l->pp && h.dp == l->dp, "(tp %d pp %d) sizes %d %d %d",
              l->tp, l->pp, h.tp, h.pp, h.dp);
        CHECK(h.tp_rank == want[0] && h.pp_rank == want[1] && h.dp_rank == want[2],
              "(tp %d pp %d) rank %d: tp_rank %d pp_rank %d dp_rank %d, want %d %d %d", l->tp,
              l->pp, g_rank, h.tp_rank, h.pp_rank, h.dp_rank, want[0], want[1], want[2]);
        check_members("tp_comm", l, h.tp_comm, l->tpm[g_rank], want[0]);
        check_members("pp_comm", l, h.pp_comm, l->ppm[g_rank], want[1]);
        check_members("dp_comm", l, h.dp_comm, l->dpm[g_rank], want[2]);
        /* only when every rank's pp_comm is ordered by pp_rank (else it would hang, not fail) */
        int ordered = grid_comm_rank(h.pp_comm) == h.pp_rank && h.pp_rank + 1 <= h.pp;
        MPI_Allreduce(MPI_IN_PLACE, &ordered, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
        if (ordered) check_pp_send(&h);
        grid_finalize(&h);
    }

    /* pp = 1: the communicators of grid_setup (congruent: same members, same order) */
    for (int tp = 1; tp <= 4; tp *= 2) {
        Grid a, b;
        grid_init(&a, NULL, NULL);
        grid_init(&b, NULL, NULL);
        CHECK(grid_setup(&a, tp, &st) && grid_setup_pp(&b, tp, 1, &st), "tp %d pp 1: %s", tp,
              st.msg);
        int ct = -1, cd = -1;
        MPI_Comm_compare(a.tp_comm, b.tp_comm, &ct);
        MPI_Comm_compare(a.dp_comm, b.dp_comm, &cd);
        CHECK((ct == MPI_CONGRUENT || ct == MPI_IDENT) && (cd == MPI_CONGRUENT || cd == MPI_IDENT),
              "tp %d: grid_setup_pp(pp 1) communicators differ from grid_setup's (%d %d)", tp, ct,
              cd);
        CHECK(a.pp == 1 && a.pp_rank == 0 && a.pp_comm == MPI_COMM_SELF && b.pp == 1 &&
                  b.pp_rank == 0 && b.pp_comm == MPI_COMM_SELF && a.tp_rank == b.tp_rank &&
                  a.dp_rank == b.dp_rank && a.dp == b.dp,
              "tp %d pp 1: pp %d/%d pp_rank %d/%d", tp, a.pp, b.pp, a.pp_rank, b.pp_rank);
        grid_finalize(&a);
        grid_finalize(&b);
    }

    /* refusals: the same verdict on every rank, the grid untouched */
    grid_init(&h, NULL, NULL);
    CHECK(!grid_setup_pp(&h, 1, 0, &st) && strstr(st.msg, "--pp 0") && strstr(st.msg, "at least 1"),
          "pp=0 refused: '%s'", st.msg);
    CHECK(!grid_setup_pp(&h, 1, 3, &st) && strstr(st.msg, "--pp 3") && strstr(st.msg, "4 MPI"),
          "pp=3 of 4 ranks refused: '%s'", st.msg);
    CHECK(!grid_setup_pp(&h, 2, 4, &st) && strstr(st.msg, "= 8") && strstr(st.msg, "4 MPI"),
          "tp=2 x pp=4 of 4 ranks refused: '%s'", st.msg);
    CHECK(!grid_setup_pp(&h, 0, 2, &st) && strstr(st.msg, "--tp 0"), "tp=0 refused: '%s'", st.msg);
    CHECK(!grid_setup_pp(&h, 3, 1, &st) &&
              strcmp(st.msg, "--tp 3 does not divide the 4 MPI ranks (world = dp x tp); launch a "
                             "multiple of 3 ranks") == 0,
          "pp=1 keeps grid_setup's message: '%s'", st.msg);
    CHECK(h.pp == 1 && h.tp == 1 && h.pp_comm == MPI_COMM_SELF && h.tp_comm == MPI_COMM_SELF,
          "a refused grid_setup_pp changed the grid");
    grid_finalize(&h);
}

static void test_allreduce(Grid *g) {
    Counts c;
    /* sum f32 over tp_comm: ranks 2d, 2d+1 */
    float f[5];
    for (int i = 0; i < 5; i++)
        f[i] = (float)(g_rank * 10 + i) + 0.5f;
    c = counts_of(g);
    grid_allreduce_sum_f32(g, g->tp_comm, f, 5, GRID_BYTES_TP);
    int ok = 1;
    for (int i = 0; i < 5; i++)
        ok &= f[i] == (float)((2 * g->dp_rank) * 10 + i + (2 * g->dp_rank + 1) * 10 + i) + 1.0f;
    CHECK(ok, "sum_f32 over tp_comm: %g", (double)f[0]);
    check_counted("sum_f32", g, &c, GRID_BYTES_TP, 5 * sizeof(float), 1);

    /* max f32 over dp_comm: ranks t, t+2 */
    float mx[3] = {(float)-g_rank, (float)g_rank, g_rank == 1 ? 100.0f : -1.0f};
    c = counts_of(g);
    grid_allreduce_max_f32(g, g->dp_comm, mx, 3, GRID_BYTES_DP);
    CHECK(mx[0] == (float)-g->tp_rank && mx[1] == (float)(g->tp_rank + 2) &&
              mx[2] == (g->tp_rank == 1 ? 100.0f : -1.0f),
          "max_f32 over dp_comm: %g %g %g", (double)mx[0], (double)mx[1], (double)mx[2]);
    check_counted("max_f32", g, &c, GRID_BYTES_DP, 3 * sizeof(float), 1);

    /* sum / max f64, sum i64 (beyond 32 bits), max int over world */
    double d[2] = {0.25 * g_rank, 1e300 * (g_rank == 2)};
    c = counts_of(g);
    grid_allreduce_sum_f64(g, g->world, d, 2, GRID_BYTES_WORLD);
    CHECK(d[0] == 1.5 && d[1] == 1e300, "sum_f64: %g %g", d[0], d[1]);
    check_counted("sum_f64", g, &c, GRID_BYTES_WORLD, 2 * sizeof(double), 1);
    double dm[1] = {g_rank == 3 ? -0.5 : -1.5 - g_rank};
    c = counts_of(g);
    grid_allreduce_max_f64(g, g->world, dm, 1, GRID_BYTES_OTHER);
    CHECK(dm[0] == -0.5, "max_f64: %g", dm[0]);
    check_counted("max_f64", g, &c, GRID_BYTES_OTHER, sizeof(double), 1);
    int64_t li[3] = {((int64_t)1 << 40) + g_rank, -(int64_t)g_rank, 3000000000LL};
    c = counts_of(g);
    grid_allreduce_sum_i64(g, g->world, li, 3, GRID_BYTES_KV);
    CHECK(li[0] == ((int64_t)4 << 40) + 6 && li[1] == -6 && li[2] == 12000000000LL,
          "sum_i64: %lld %lld %lld", (long long)li[0], (long long)li[1], (long long)li[2]);
    check_counted("sum_i64", g, &c, GRID_BYTES_KV, 3 * sizeof(int64_t), 1);
    int im[2] = {g_rank * 7 % 4, -g_rank};
    c = counts_of(g);
    grid_allreduce_max_int(g, g->world, im, 2, GRID_BYTES_OTHER);
    CHECK(im[0] == 3 && im[1] == 0, "max_int: %d %d", im[0], im[1]);
    check_counted("max_int", g, &c, GRID_BYTES_OTHER, 2 * sizeof(int), 1);

    /* maxloc: the largest value, the lowest index among equal ones */
    GridMaxLoc ml[2] = {{g_rank % 2 ? 1.0f : 2.0f, 10 + g_rank},
                        {(float)(g_rank == 2), 20 + g_rank}};
    c = counts_of(g);
    grid_allreduce_maxloc(g, g->world, ml, 2, GRID_BYTES_OTHER);
    CHECK(ml[0].v == 2.0f && ml[0].i == 10 && ml[1].v == 1.0f && ml[1].i == 22,
          "maxloc: (%g, %d) (%g, %d)", (double)ml[0].v, ml[0].i, (double)ml[1].v, ml[1].i);
    check_counted("maxloc", g, &c, GRID_BYTES_OTHER, 2 * sizeof(GridMaxLoc), 1);

    /* a communicator of one rank: no-op, not counted; zero elements: not counted */
    float one = 3.0f;
    c = counts_of(g);
    grid_allreduce_sum_f32(g, MPI_COMM_SELF, &one, 1, GRID_BYTES_TP);
    grid_allreduce_sum_f32(g, g->world, &one, 0, GRID_BYTES_TP);
    CHECK(one == 3.0f, "SELF sum changed the value");
    check_counted("sum over SELF / zero elements", g, &c, GRID_BYTES_TP, 0, 0);
}

static void test_bytewise(Grid *g) {
    Counts c;
    /* bcast from tp rank 1 inside each TP group: every rank counts the payload */
    int32_t b[3] = {g_rank, g_rank * 2, -1};
    c = counts_of(g);
    grid_bcast(g, g->tp_comm, b, sizeof b, 1, GRID_BYTES_TP);
    int src = 2 * g->dp_rank + 1;
    CHECK(b[0] == src && b[1] == 2 * src && b[2] == -1, "bcast: %d %d", b[0], b[1]);
    check_counted("bcast", g, &c, GRID_BYTES_TP, sizeof b, 1);

    /* gather of 2 ints from every rank into world rank 2, rank-major */
    int32_t send[2] = {g_rank, 100 + g_rank}, recv[8];
    memset(recv, 0xff, sizeof recv);
    c = counts_of(g);
    grid_gather(g, g->world, send, sizeof send, recv, 2, GRID_BYTES_OTHER);
    if (g_rank == 2) {
        int ok = 1;
        for (int r = 0; r < 4; r++)
            ok &= recv[2 * r] == r && recv[2 * r + 1] == 100 + r;
        CHECK(ok, "gather on root: %d %d %d %d", recv[0], recv[1], recv[2], recv[3]);
    }
    check_counted("gather", g, &c, GRID_BYTES_OTHER, sizeof send, 1);

    /* gatherv with uneven lengths (rank r sends 3 - r ints; rank 3 none) into world rank 1 */
    int32_t vs[3] = {g_rank * 10, g_rank * 10 + 1, g_rank * 10 + 2}, vr[6];
    size_t lens[4];
    for (int r = 0; r < 4; r++)
        lens[r] = (size_t)(3 - r) * sizeof(int32_t);
    memset(vr, 0xff, sizeof vr);
    c = counts_of(g);
    grid_gatherv(g, g->world, vs, lens[g_rank], vr, lens, 1, GRID_BYTES_OTHER);
    if (g_rank == 1) {
        const int32_t want[6] = {0, 1, 2, 10, 11, 20};
        CHECK(memcmp(vr, want, sizeof want) == 0, "gatherv on root: %d %d %d %d %d %d", vr[0],
              vr[1], vr[2], vr[3], vr[4], vr[5]);
    }
    check_counted("gatherv", g, &c, GRID_BYTES_OTHER, lens[g_rank], 1);

    /* send / recv inside each TP group: rank 0 of the group sends first, rank 1 answers;
     * only the sender counts */
    double msg[4] = {g_rank + 0.5, 1, 2, 3}, got[4] = {0};
    const int peer = 1 - g->tp_rank;
    if (g->tp_rank == 0) {
        c = counts_of(g);
        grid_send(g, g->tp_comm, msg, sizeof msg, peer, 7, GRID_BYTES_TP);
        check_counted("send", g, &c, GRID_BYTES_TP, sizeof msg, 1);
        c = counts_of(g);
        grid_recv(g, g->tp_comm, got, sizeof got, peer, 8);
        check_counted("recv", g, &c, GRID_BYTES_TP, 0, 0);
    } else {
        c = counts_of(g);
        grid_recv(g, g->tp_comm, got, sizeof got, peer, 7);
        check_counted("recv", g, &c, GRID_BYTES_TP, 0, 0);
        c = counts_of(g);
        grid_send(g, g->tp_comm, msg, sizeof msg, peer, 8, GRID_BYTES_TP);
        check_counted("send", g, &c, GRID_BYTES_TP, sizeof msg, 1);
    }
    int from = g_rank ^ 1;
    CHECK(got[0] == from + 0.5 && got[3] == 3, "recv from %d: %g", from, got[0]);
}

/* Runs grid_agree / grid_agree_code with stderr redirected to a file; returns the verdict
 * and the number of lines this rank wrote into *lines, the first into line. */
static int agree_captured(Grid *g, int ok, int code, int want_code, int *lines, char *line,
                          size_t n) {
    ErrStatus st;
    err_status_ok(&st);
    if (!ok) err_status_set(&st, "broken on rank %d", g_rank);
    FILE *tmp = tmpfile();
    if (!tmp) {
        perror("tmpfile");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    int v = want_code ? grid_agree_code(g, ok, code, "test prefix", &st)
                      : grid_agree(g, ok, "test prefix", &st);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    *lines = 0;
    line[0] = 0;
    char buf[512];
    while (fgets(buf, sizeof buf, tmp)) {
        if (*lines == 0) snprintf(line, n, "%s", buf);
        (*lines)++;
    }
    fclose(tmp);
    return v;
}

static void test_agree(Grid *g) {
    int lines, total;
    char line[512];
    /* all ok: verdict 1 everywhere, nobody prints */
    int v = agree_captured(g, 1, 0, 0, &lines, line, sizeof line);
    MPI_Allreduce(&lines, &total, 1, MPI_INT, MPI_SUM, g->world);
    CHECK(v == 1 && total == 0, "grid_agree all ok: verdict %d, %d lines", v, total);
    /* ranks 1 and 3 fail: verdict 0 everywhere, exactly one line, from rank 1 */
    v = agree_captured(g, g_rank != 1 && g_rank != 3, 0, 0, &lines, line, sizeof line);
    MPI_Allreduce(&lines, &total, 1, MPI_INT, MPI_SUM, g->world);
    CHECK(v == 0 && total == 1, "grid_agree ranks 1, 3 failing: verdict %d, %d lines", v, total);
    if (g_rank == 1)
        CHECK(lines == 1 && strcmp(line, "test prefix: broken on rank 1\n") == 0, "printed '%s'",
              line);

    /* grid_agree_code: 0 when all are ok; the first failing rank's code otherwise */
    Counts c = counts_of(g);
    v = agree_captured(g, 1, 40 + g_rank, 1, &lines, line, sizeof line);
    MPI_Allreduce(&lines, &total, 1, MPI_INT, MPI_SUM, g->world);
    CHECK(v == 0 && total == 0, "grid_agree_code all ok: %d, %d lines", v, total);
    check_counted("grid_agree_code all ok", g, &c, GRID_BYTES_OTHER, 0, 0);
    c = counts_of(g);
    v = agree_captured(g, g_rank < 2, 40 + g_rank, 1, &lines, line, sizeof line);
    check_counted("grid_agree_code's bcast of the code", g, &c, GRID_BYTES_OTHER, sizeof(int), 1);
    MPI_Allreduce(&lines, &total, 1, MPI_INT, MPI_SUM, g->world);
    CHECK(v == 42 && total == 1, "grid_agree_code ranks 2, 3 failing: code %d, %d lines", v, total);
    if (g_rank == 2)
        CHECK(lines == 1 && strcmp(line, "test prefix: broken on rank 2\n") == 0, "printed '%s'",
              line);

    CHECK(grid_all_ok(g, 1) == 1 && grid_all_ok(g, g_rank != 3) == 0, "grid_all_ok");
    CHECK(grid_first_failed(g, 1) == -1 && grid_first_failed(g, g_rank == 0) == 1,
          "grid_first_failed");
}

static void test_split(Grid *g) {
    MPI_Comm c = grid_split_world(g, g_rank % 2);
    int m[4];
    CHECK(members(c, m) == 2 && m[0] == g_rank % 2 && m[1] == g_rank % 2 + 2,
          "split color %d: %d %d", g_rank % 2, m[0], m[1]);
    grid_comm_free(&c);
    CHECK(c == MPI_COMM_NULL, "grid_comm_free");
    c = grid_split_world(g, 0); /* one color: the whole world, world order */
    CHECK(members(c, m) == 4 && m[0] == 0 && m[3] == 3, "split one color");
    grid_comm_free(&c);
    MPI_Comm self = MPI_COMM_SELF;
    grid_comm_free(&self); /* a no-op on SELF */
    CHECK(self == MPI_COMM_NULL, "grid_comm_free(SELF)");
}

/* gsync: buckets over dp_comm, tp_comm, world, SELF and a zero-length one, started in an
 * order unlike their declaration, some left for gsync_wait: the same sums as MPI_Allreduce
 * on copies, each bucket's bytes counted once in its category, and the same again on a
 * second step (the started flags reset). */
static void test_gsync(Grid *g) {
    enum { NB = 5 };
    const MPI_Comm comm[NB] = {g->dp_comm, g->world, g->tp_comm, MPI_COMM_SELF, g->world};
    const GridBytes cat[NB] = {GRID_BYTES_DP, GRID_BYTES_WORLD, GRID_BYTES_TP, GRID_BYTES_KV,
                               GRID_BYTES_OTHER};
    const size_t len[NB] = {5, 7, 3, 4, 0};
    float *buf[NB], *want[NB];
    Gsync s;
    gsync_init(&s, NB);
    for (int b = 0; b < NB; b++) {
        buf[b] = calloc(len[b] + 1, sizeof(float));
        want[b] = calloc(len[b] + 1, sizeof(float));
        CHECK(gsync_add(&s, comm[b], buf[b], len[b], cat[b]) == b, "gsync_add index");
    }
    static const int order[2][3] = {{1, 0, 3}, {4, 2, 1}}; /* the rest started by gsync_wait */
    for (int step = 0; step < 2; step++) {
        for (int b = 0; b < NB; b++)
            for (size_t i = 0; i < len[b]; i++) {
                /* integers: the sum is exact in any order */
                buf[b][i] = (float)((g_rank + 1) * (int)(i + 1) + 100 * b + step);
                want[b][i] = buf[b][i];
            }
        for (int b = 0; b < NB; b++)
            if (len[b])
                MPI_Allreduce(MPI_IN_PLACE, want[b], (int)len[b], MPI_FLOAT, MPI_SUM, comm[b]);
        Counts c = counts_of(g);
        for (int k = 0; k < 3; k++)
            gsync_start(&s, g, order[step][k]);
        gsync_wait(&s, g);
        for (int b = 0; b < NB; b++)
            CHECK(memcmp(buf[b], want[b], len[b] * sizeof(float)) == 0,
                  "step %d bucket %d: %g, want %g", step, b, (double)buf[b][0], (double)want[b][0]);
        /* bytes once per bucket of a communicator larger than one rank */
        for (int b = 0; b < NB; b++) {
            uint64_t wb = grid_comm_size(comm[b]) > 1 ? len[b] * sizeof(float) : 0;
            uint64_t wc = grid_comm_size(comm[b]) > 1 && len[b] ? 1 : 0;
            uint64_t db = g->bytes[cat[b]] - c.bytes[cat[b]];
            uint64_t dc = g->calls[cat[b]] - c.calls[cat[b]];
            CHECK(db == wb && dc == wc,
                  "step %d bucket %d: %llu bytes in %llu calls, want %llu in %llu", step, b,
                  (unsigned long long)db, (unsigned long long)dc, (unsigned long long)wb,
                  (unsigned long long)wc);
        }
    }
    gsync_free(&s);
    for (int b = 0; b < NB; b++)
        free(buf[b]), free(want[b]);
}

int main(int argc, char **argv) {
    Grid g;
    grid_init(&g, &argc, &argv);
    g_rank = g.world_rank;
    if (g.world_size != 4) {
        if (g_rank == 0)
            fprintf(stderr, "test_grid: run under mpiexec -n 4 (got %d ranks)\n", g.world_size);
        grid_finalize(&g);
        return 2;
    }
    CHECK(g.tp == 1 && g.dp == 4 && g.dp_rank == g_rank && g.tp_comm == MPI_COMM_SELF &&
              g.pp == 1 && g.pp_rank == 0 && g.pp_comm == MPI_COMM_SELF,
          "grid_init's default layout");
    test_setup(&g);
    test_setup_pp();
    test_allreduce(&g);
    test_bytewise(&g);
    test_agree(&g);
    test_split(&g);
    test_gsync(&g);
    int fails = g_fail, all = 0, count = g_count;
    MPI_Allreduce(&fails, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (g_rank == 0)
        printf("%s test_grid: %d checks per rank, %d failed over 4 ranks\n", all ? "FAIL" : "PASS",
               count, all);
    grid_finalize(&g);
    return all ? 1 : 0;
}
