/* The training step and the shared evaluation (see trainer.h). */
#include "trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Gradient sync: one bucket per (layer, sync class), started as the layer's backward ends in
 * the last micro-batch (DESIGN.md §4). Factors replicated on the TP ranks sharing a kv head
 * (kv-heads < tp) sync over the world ranks holding that kv head. */
static void trainer_buckets_init(Trainer *t) {
    Grid *g = t->s->g;
    LlamaModel *m = &t->s->m;
    /* replicated factors sync over the ranks of their stage (all of them at pp = 1) */
    t->stage_comm = g->pp > 1 ? grid_split_world(g, g->pp_rank) : g->world;
    t->kv_comm = MPI_COMM_SELF;
    if (g->tp > 1 && m->KV < g->tp)
        t->kv_comm = grid_split_world(g, (int)(g->pp_rank * m->KV + m->kv0));
    const MPI_Comm comm[PARAM_NSYNC] = {g->dp_comm, t->stage_comm, t->kv_comm};
    const GridBytes cat[PARAM_NSYNC] = {GRID_BYTES_DP, GRID_BYTES_WORLD, GRID_BYTES_KV};
    gsync_init(&t->gs, (int)m->L * PARAM_NSYNC);
    t->bucket = calloc((size_t)(m->L * PARAM_NSYNC), sizeof *t->bucket);
    SL_CHECK(t->bucket, "out of memory");
    for (int64_t l = m->l0; l < m->l1; l++)
        for (int c = 0; c < PARAM_NSYNC; c++) {
            size_t b0, b1;
            params_layer_range(&m->params, (ParamSync)c, (int)l, &b0, &b1);
            t->bucket[l * PARAM_NSYNC + c] =
                gsync_add(&t->gs, comm[c], m->params.grads + b0, b1 - b0, cat[c]);
        }
}

void trainer_init(Trainer *t, Session *s, const TrainerCfg *cfg, const OptimCfg *ocfg) {
    memset(t, 0, sizeof *t);
    t->s = s;
    t->cfg = *cfg;
    t->rows_per_dp = cfg->G / s->g->dp;
    t->nmicro = t->rows_per_dp / s->B;
    SL_CHECK(t->nmicro * s->B * s->g->dp == cfg->G,
             "global batch %lld is not a multiple of micro-batch %lld x dp %d", (long long)cfg->G,
             (long long)s->B, s->g->dp);
    optim_init(&t->opt, ocfg, s->m.params.trainable, &s->mem);
    trainer_buckets_init(t);
    t->env = (AdapterEnv){&s->gc, cfg->seed, 0, 0, 1};
    if (s->g->pp > 1) pipe_init(&t->pipe, s, t->nmicro);
}

int trainer_sets(const Grid *g, int64_t G, int64_t B) {
    return pipe_sets(g, G / ((int64_t)g->dp * B));
}

void trainer_free(Trainer *t) {
    pipe_free(&t->pipe);
    gsync_free(&t->gs);
    free(t->bucket);
    grid_comm_free(&t->kv_comm);
    if (t->stage_comm != t->s->g->world) grid_comm_free(&t->stage_comm);
    optim_free(&t->opt, &t->s->mem);
    memset(t, 0, sizeof *t);
}

/* llama_backward's hook: a layer's gradients are complete (last micro-batch), so its
 * buckets can start while the layers below run. */
static void trainer_layer_done(void *ctx, int layer) {
    Trainer *t = ctx;
    if (!t->sync_active) return;
    for (int c = 0; c < PARAM_NSYNC; c++)
        gsync_start(&t->gs, t->s->g, t->bucket[layer * PARAM_NSYNC + c]);
}

/* Counted label tokens of this DP rank's rows (Hugging Face shift: position t predicts
 * labels[t+1]), summed over dp: the global batch's count. */
static int64_t trainer_count_labels(Trainer *t, const RowSource *src, int64_t base) {
    Session *s = t->s;
    const int64_t B = s->B, T = s->T;
    int64_t count = 0;
    for (int64_t mb = 0; mb < t->nmicro; mb++) {
        for (int64_t j = 0; j < B; j++)
            src->row(src->ctx, base + mb * B + j, T, s->batch.ids + j * T, s->labels + j * T,
                     s->batch.pos + j * T);
        for (int64_t j = 0; j < B; j++)
            for (int64_t k = 1; k < T; k++)
                count += s->labels[j * T + k] != -100;
    }
    grid_allreduce_sum_i64(s->g, s->g->dp_comm, &count, 1, GRID_BYTES_OTHER);
    return count;
}

void trainer_grads(Trainer *t, const RowSource *src, int64_t first, int64_t step,
                   TrainerStep *out) {
    Session *s = t->s;
    Grid *g = s->g;
    LlamaModel *m = &s->m;
    const int64_t B = s->B, T = s->T, row_base = (int64_t)g->dp_rank * t->rows_per_dp;
    memset(out, 0, sizeof *out);
    out->step = step;
    /* every token's loss is scaled by 1 / (counted tokens of the global batch) */
    out->counted = trainer_count_labels(t, src, first + row_base);
    const float scale = out->counted > 0 ? 1.0f / (float)out->counted : 0.0f;
    memset(m->params.grads, 0, m->params.trainable * sizeof(float));
    t->env.step = step;
    llama_adapters_step_begin(m, &t->env); /* once per optimizer step, before the first forward */
    double loss = 0;
    if (g->pp > 1)
        loss = pipe_grads(&t->pipe, src, first, row_base, scale, &t->env, trainer_layer_done, t,
                          &t->sync_active);
    for (int64_t mb = 0; g->pp == 1 && mb < t->nmicro; mb++) {
        const int64_t row0 = row_base + mb * B;
        session_fill_batch(s, src, first + row0, INT64_MAX);
        t->env.token0 = row0 * T; /* global token index within the step keys dropout */
        t->sync_active = mb == t->nmicro - 1;
        loss += llama_forward(m, &s->acts, &s->batch, scale, 1, &t->env, s->kops, &s->kc, g, NULL);
        llama_backward(m, &s->acts, &s->batch, &t->env, s->kops, &s->kc, g, trainer_layer_done, t);
    }
    gsync_wait(&t->gs, g);
    /* the loss of the last stage, the norm of every stage's gradients (pp_comm: SELF at
     * pp = 1, where these are the calls they always were) */
    double v[2] = {loss, params_sumsq(&m->params, m->params.grads)};
    grid_allreduce_sum_f64(g, g->dp_comm, &v[0], 1, GRID_BYTES_OTHER);
    grid_allreduce_sum_f64(g, g->tp_comm, &v[1], 1, GRID_BYTES_OTHER);
    if (g->pp > 1) grid_allreduce_sum_f64(g, g->pp_comm, v, 2, GRID_BYTES_OTHER);
    loss = v[0];
    const double ss = v[1];
    out->loss = loss;
    out->grad_norm = sqrt(ss);
    out->finite = isfinite(out->loss) && isfinite(out->grad_norm);
}

void trainer_update(Trainer *t, float lr, TrainerStep *out) {
    ParamTable *p = &t->s->m.params;
    if (t->cfg.max_grad_norm > 0) {
        /* torch.nn.utils.clip_grad_norm_: scale by min(1, max / (norm + 1e-6)) */
        float coef = (float)(t->cfg.max_grad_norm / (out->grad_norm + 1e-6));
        if (coef < 1.0f)
            for (size_t i = 0; i < p->trainable; i++)
                p->grads[i] *= coef;
    }
    llama_adapters_grad_post(&t->s->m, &t->env); /* LoRA-FA: PEFT's projected B gradient */
    optim_step_params(&t->opt, p, lr);
    out->updated = 1;
}

void trainer_step(Trainer *t, const RowSource *src, int64_t first, int64_t step, float lr,
                  TrainerStep *out) {
    trainer_grads(t, src, first, step, out);
    if (out->finite) trainer_update(t, lr, out);
}

double trainer_eval(Session *s, const RowSource *src, int64_t nrows, uint64_t seed,
                    TrainerEvalRound round, void *round_ctx, int64_t *tokens) {
    Grid *g = s->g;
    const int64_t B = s->B, per_round = B * g->dp, rounds = (nrows + per_round - 1) / per_round;
    AdapterEnv env = {&s->gc, seed, 0, 0, 0};
    llama_adapters_step_begin(&s->m, &env); /* DoRA: norms of the current adapter */
    double sum[2] = {0, 0};                 /* loss sum, counted tokens: this DP rank's */
    Pipe pipe = {0};
    if (g->pp > 1) pipe_init(&pipe, s, 1);
    for (int64_t k = 0; k < rounds; k++) {
        const int64_t row0 = k * per_round + (int64_t)g->dp_rank * B;
        int64_t counted = 0;
        if (g->pp > 1) {
            sum[0] += pipe_eval(&pipe, src, row0, nrows, &env, &counted);
        } else {
            session_fill_batch(s, src, row0, nrows);
            sum[0] += llama_forward(&s->m, &s->acts, &s->batch, 1.0f, 0, &env, s->kops, &s->kc, g,
                                    &counted);
        }
        sum[1] += (double)counted;
        if (round) round(round_ctx, k, rounds, sum);
    }
    pipe_free(&pipe);
    grid_allreduce_sum_f64(g, g->dp_comm, sum, 2, GRID_BYTES_OTHER);
    /* the last stage's sums (the others' are 0) */
    if (g->pp > 1) grid_allreduce_sum_f64(g, g->pp_comm, sum, 2, GRID_BYTES_OTHER);
    *tokens = (int64_t)sum[1];
    return sum[1] > 0 ? sum[0] / sum[1] : NAN;
}
