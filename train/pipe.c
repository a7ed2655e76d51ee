/* The 1F1B pipeline schedule and the forward-only pipeline of an evaluation (see pipe.h). */
#include "pipe.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

int pipe_sets(const Grid *g, int64_t nmicro) {
    const int64_t k = g->pp - g->pp_rank;
    return (int)(k < nmicro ? k : nmicro < 1 ? 1 : nmicro);
}

/* The tag of micro-batch mb's forward (dir 0) or backward (dir 1) message. MPI promises tags
 * up to 32767 only, so mb counts modulo 16384: at most P micro-batches are in flight between
 * two stages and messages of one tag arrive in order, so no two pending ones share a tag. */
static int pipe_tag(int64_t mb, int dir) {
    return (int)(2 * (mb % 16384) + dir);
}

static float **pipe_parts(Pipe *p, int n) {
    float **v = calloc((size_t)p->K, sizeof *v);
    SL_CHECK(v, "out of memory");
    for (int k = 0; k < p->K && n; k++)
        v[k] = mem_alloc(&p->s->mem, MEM_ACTIVATION, (p->len ? p->len : 1) * sizeof(float));
    return v;
}

static MPI_Request *pipe_reqs(int K) {
    MPI_Request *r = malloc((size_t)K * sizeof *r);
    SL_CHECK(r, "out of memory");
    for (int k = 0; k < K; k++)
        r[k] = MPI_REQUEST_NULL;
    return r;
}

void pipe_init(Pipe *p, Session *s, int64_t nmicro) {
    memset(p, 0, sizeof *p);
    Grid *g = s->g;
    p->s = s;
    p->P = g->pp;
    p->stage = g->pp_rank;
    p->nmicro = nmicro;
    p->K = pipe_sets(g, nmicro);
    SL_CHECK(s->acts.nsets >= p->K, "%d sets of layer inputs for %d in flight", s->acts.nsets,
             p->K);
    p->n = (size_t)(s->B * s->T * s->m.C);
    grid_part(p->n, g->tp, g->tp_rank, &p->off, &p->len);
    p->batch = calloc((size_t)p->K, sizeof *p->batch);
    p->token0 = calloc((size_t)p->K, sizeof *p->token0);
    SL_CHECK(p->batch && p->token0, "out of memory");
    for (int k = 0; k < p->K; k++)
        llama_batch_init(&p->batch[k], &s->m, s->B, s->T, &s->mem);
    const int has_next = p->stage<p->P - 1, has_prev = p->stage> 0;
    p->fsend = pipe_parts(p, has_next);
    p->brecv = pipe_parts(p, has_next);
    p->bsend = pipe_parts(p, has_prev);
    p->fs = pipe_reqs(p->K);
    p->fr = pipe_reqs(p->K);
    p->bs = pipe_reqs(p->K);
    p->br = pipe_reqs(p->K);
}

void pipe_free(Pipe *p) {
    if (!p->s) return;
    for (int k = 0; k < p->K; k++) {
        grid_wait(&p->fs[k]);
        grid_wait(&p->bs[k]);
        llama_batch_free(&p->batch[k], &p->s->m, &p->s->mem);
        float *parts[3] = {p->fsend[k], p->brecv[k], p->bsend[k]};
        for (int i = 0; i < 3; i++)
            if (parts[i])
                mem_free(&p->s->mem, MEM_ACTIVATION, parts[i],
                         (p->len ? p->len : 1) * sizeof(float));
    }
    free(p->batch);
    free(p->token0);
    free(p->fsend);
    free(p->brecv);
    free(p->bsend);
    free(p->fs);
    free(p->fr);
    free(p->bs);
    free(p->br);
    memset(p, 0, sizeof *p);
}

/* Posts the receive of micro-batch mb's input (this TP rank's part, into its place in set k's
 * res[l0]) from the stage before. */
static void pipe_post_input(Pipe *p, int64_t mb) {
    if (p->stage == 0) return;
    const int k = (int)(mb % p->K);
    LlamaActs *a = &p->s->acts;
    float *dst = a->res_set[k][p->s->m.l0] + p->off;
    grid_irecv(p->s->g->pp_comm, dst, p->len * sizeof(float), p->stage - 1, pipe_tag(mb, 0),
               &p->fr[k]);
}

/* Posts the receive of the gradient of micro-batch mb's output from the next stage. */
static void pipe_post_grad(Pipe *p, int64_t mb) {
    if (p->stage == p->P - 1) return;
    const int k = (int)(mb % p->K);
    grid_irecv(p->s->g->pp_comm, p->brecv[k], p->len * sizeof(float), p->stage + 1, pipe_tag(mb, 1),
               &p->br[k]);
}

/* Waits for micro-batch mb's input part and all-gathers the parts over the TP group. */
static void pipe_take_input(Pipe *p, int64_t mb) {
    if (p->stage == 0) return;
    Grid *g = p->s->g;
    const int k = (int)(mb % p->K);
    p->idle += grid_wait(&p->fr[k]);
    grid_allgather_f32(g, g->tp_comm, p->s->acts.res_set[k][p->s->m.l0], p->n, GRID_BYTES_TP);
}

/* Sends this TP rank's part of src ([n]) for micro-batch mb to the stage at `to` from the
 * send buffers `bufs` / requests `reqs` of set k (waiting for that set's previous send). */
static void pipe_send(Pipe *p, float **bufs, MPI_Request *reqs, int64_t mb, const float *src,
                      int to, int tag) {
    const int k = (int)(mb % p->K);
    p->idle += grid_wait(&reqs[k]);
    memcpy(bufs[k], src + p->off, p->len * sizeof(float));
    grid_isend(p->s->g, p->s->g->pp_comm, bufs[k], p->len * sizeof(float), to, tag, GRID_BYTES_PP,
               &reqs[k]);
}

/* Forward of micro-batch mb (rows first + row_base + mb*B) in set mb % K. */
static double pipe_forward(Pipe *p, const RowSource *src, int64_t first, int64_t row_base,
                           int64_t mb, float loss_scale, AdapterEnv *env) {
    Session *s = p->s;
    const int k = (int)(mb % p->K);
    const int64_t row0 = row_base + mb * s->B;
    session_fill(s, &p->batch[k], src, first + row0, INT64_MAX);
    p->token0[k] = row0 * s->T;
    pipe_take_input(p, mb);
    const double t0 = MPI_Wtime();
    env->token0 = p->token0[k];
    llama_acts_select(&s->acts, k);
    const double loss = llama_forward(&s->m, &s->acts, &p->batch[k], loss_scale, 1, env, s->kops,
                                      &s->kc, s->g, NULL);
    p->busy += MPI_Wtime() - t0;
    if (p->stage < p->P - 1) {
        pipe_post_grad(p, mb);
        pipe_send(p, p->fsend, p->fs, mb, s->acts.res[s->m.l1], p->stage + 1, pipe_tag(mb, 0));
    }
    return loss;
}

/* Backward of micro-batch mb; then set mb % K is free for micro-batch mb + K. */
static void pipe_backward(Pipe *p, int64_t mb, AdapterEnv *env, LlamaLayerDone layer_done,
                          void *done_ctx) {
    Session *s = p->s;
    Grid *g = s->g;
    const int k = (int)(mb % p->K);
    LlamaActs *a = &s->acts;
    if (p->stage < p->P - 1) {
        p->idle += grid_wait(&p->br[k]);
        memcpy(a->dres + p->off, p->brecv[k], p->len * sizeof(float));
        grid_allgather_f32(g, g->tp_comm, a->dres, p->n, GRID_BYTES_TP);
    }
    const double t0 = MPI_Wtime();
    env->token0 = p->token0[k];
    llama_acts_select(a, k);
    llama_backward(&s->m, a, &p->batch[k], env, s->kops, &s->kc, g, layer_done, done_ctx);
    p->busy += MPI_Wtime() - t0;
    if (p->stage > 0) pipe_send(p, p->bsend, p->bs, mb, a->dres, p->stage - 1, pipe_tag(mb, 1));
    if (mb + p->K < p->nmicro) pipe_post_input(p, mb + p->K);
}

double pipe_grads(Pipe *p, const RowSource *src, int64_t first, int64_t row_base, float loss_scale,
                  AdapterEnv *env, LlamaLayerDone layer_done, void *done_ctx, int *sync_active) {
    const int64_t m = p->nmicro;
    const int64_t w = p->P - 1 - p->stage < m ? p->P - 1 - p->stage : m; /* warm-up forwards */
    for (int64_t mb = 0; mb < p->K && mb < m; mb++)
        pipe_post_input(p, mb);
    double loss = 0;
    int64_t fwd = 0, bwd = 0;
    for (; fwd < w; fwd++)
        loss += pipe_forward(p, src, first, row_base, fwd, loss_scale, env);
    while (bwd < m) {
        if (fwd < m) {
            loss += pipe_forward(p, src, first, row_base, fwd, loss_scale, env);
            fwd++;
        }
        *sync_active = bwd == m - 1;
        pipe_backward(p, bwd, env, layer_done, done_ctx);
        bwd++;
    }
    *sync_active = 0;
    /* the last sends complete before the buffers are reused next step */
    for (int k = 0; k < p->K; k++) {
        p->idle += grid_wait(&p->fs[k]);
        p->idle += grid_wait(&p->bs[k]);
    }
    p->steps++;
    return loss;
}

double pipe_eval(Pipe *p, const RowSource *src, int64_t first, int64_t end, const AdapterEnv *env,
                 int64_t *counted) {
    Session *s = p->s;
    Grid *g = s->g;
    *counted = 0;
    session_fill(s, &p->batch[0], src, first, end);
    llama_acts_select(&s->acts, 0);
    if (p->stage > 0) {
        grid_irecv(g->pp_comm, s->acts.res[s->m.l0] + p->off, p->len * sizeof(float), p->stage - 1,
                   0, &p->fr[0]);
        pipe_take_input(p, 0);
    }
    const double loss =
        llama_forward(&s->m, &s->acts, &p->batch[0], 1.0f, 0, env, s->kops, &s->kc, g, counted);
    if (p->stage < p->P - 1)
        pipe_send(p, p->fsend, p->fs, 0, s->acts.res[s->m.l1], p->stage + 1, 0);
    return loss;
}
