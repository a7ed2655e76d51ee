/* `shardlora plan`: which tp x pp x dp layouts of a model fit a cluster of N nodes, from
 * config.json alone (no weight is read), and the bytes each rank sends per optimizer step on
 * the links inside a node and between nodes. One process, no MPI.
 *
 * Memory per rank: memplan_frozen (exact frozen bytes of TP rank 0, the one with the most
 * vocabulary rows, of each pipeline stage) + memplan_estimate on a LlamaModel holding only the
 * dimensions (llama_shape) and the stage's layers, with train's defaults for what the flags do
 * not set (LoRA on all seven modules, AdamW, no dropout, the MFU probe); a layout fits when its
 * hungriest stage does. Stages split as train splits them (stage_split over stage_cost_model).
 * Communication per rank per step, counted as model/llama.c, train/pipe.c and train/trainer.c
 * issue it (summary-rank{R}.json comm_bytes counts the same payloads), then times a ring
 * all-reduce's 2(n-1)/n (an all-gather's n-1 parts) for what a rank sends (Patarasuk & Yuan,
 * "Bandwidth optimal all-reduce algorithms for clusters of workstations", 2009). A stage
 * boundary carries each micro-batch's [N, C] activation forward and its gradient back (F32):
 * 2 x m x N x C x 4 bytes per step over all TP ranks (m micro-batches per pipeline).
 * Legend as model/llama.h: N = B*T rows of a micro-batch, C hidden, L layers, P stages. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/adapter.h"
#include "../model/llama.h"
#include "../model/stage.h"
#include "../runtime/sizes.h"
#include "../runtime/str.h"
#include "../train/memplan.h"
#include "args.h"
#include "cmds.h"
#include "mpicmd.h"

typedef struct {
    const char *model, *base_dtype, *recompute;
    int64_t nodes, ranks_per_node, seq_len, micro_batch, global_batch, r, threads;
    int64_t tp, pp;      /* only the layouts with this tp / pp (0: every one) */
    double mem_per_node; /* GiB */
    int json;
} PlanOpts;

/* The collectives of a step, by communicator. */
typedef enum {
    PLAN_TP = 0, /* activation all-reduces (and a stage input's all-gather) over tp_comm */
    PLAN_DP,     /* gradients of sharded factors over dp_comm */
    PLAN_WORLD,  /* gradients of replicated factors over the stage's ranks (world at pp 1) */
    PLAN_KV,     /* gradients of factors replicated within a kv-head group */
    PLAN_PP,     /* stage-boundary activations and their gradients over pp_comm */
    PLAN_NCOMM
} PlanComm;

typedef struct {
    int64_t payload; /* bytes per rank per step handed to the collectives (comm_bytes) */
    int64_t sent;    /* bytes a rank sends for them: payload x 2(n-1)/n, gathers x (n-1) */
    int n;           /* ranks in the communicator */
    int spans;       /* a group of this communicator spans nodes */
} PlanTraffic;

/* One pipeline stage of a layout: TP rank 0's memory and traffic. */
typedef struct {
    int64_t l0, l1; /* its decoder layers [l0, l1) */
    MemPlan mem;    /* mem.bytes[MEM_FROZEN] exact */
    PlanTraffic t[PLAN_NCOMM];
    int64_t intra, inter; /* bytes a rank sends per step inside its node / to other nodes */
} PlanStage;

/* One layout and its costs per rank: the largest over its stages. */
typedef struct {
    int tp, pp, dp;
    char refused[1024]; /* why the layout cannot run ("" if it can) */
    PlanStage *st;      /* [pp] */
    int heavy;          /* the stage whose rank needs the most memory */
    int64_t frozen;     /* the largest frozen bytes per rank over the stages */
    int64_t budget;     /* bytes per rank: --mem-per-node / --ranks-per-node */
    int fits;
    int64_t nmicro;            /* micro-batches per pipeline per step */
    int64_t boundary;          /* bytes over one stage boundary per step, both ways: 2 m N C 4 */
    PlanTraffic t[PLAN_NCOMM]; /* per class, the largest over the stages */
    int64_t intra, inter;      /* the largest over the stages */
} PlanLayout;

static int plan_parse(PlanOpts *o, int argc, char **argv, int *rc) {
    *o = (PlanOpts){.base_dtype = "file",
                    .recompute = "none",
                    .ranks_per_node = 1,
                    .seq_len = 512,
                    .micro_batch = 1,
                    .r = 8,
                    .threads = 1};
    /* one option per line: name, type, destination, metavar, help, required, seen */
    // clang-format off
    ArgSpec specs[] = {
        {.type = ARG_GROUP, .group = ARGG_MODEL},
        {"model", ARG_STR, &o->model, "DIR", "Hugging Face model directory: only its config.json is read (the weights need not be there)", 1, 0},
        {"base-dtype", ARG_STR, &o->base_dtype, "DTYPE", "file | fp32 | bf16 | int8 | nf4: how the frozen weights will be held, as train's --base-dtype (file: as config.json's torch_dtype says, float32 / float16 as F32, else BF16)", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_PARALLEL},
        {"nodes", ARG_INT, &o->nodes, "N", "nodes of the cluster", 1, 0},
        {"mem-per-node", ARG_FLOAT, &o->mem_per_node, "GIB", "memory per node the ranks may use, in GiB (shared equally by its ranks)", 1, 0},
        {"ranks-per-node", ARG_INT, &o->ranks_per_node, "K", "MPI ranks per node of the cluster (world = nodes x K); give it: the default is 1, not the NUMA domains of this machine as shardlora-run assumes, since a plan is for other nodes. A TP group of consecutive ranks stays inside a node when tp divides K", 0, 0},
        {"threads", ARG_INT, &o->threads, "N", "threads per rank (each has its own attention scratch)", 0, 0},
        {"tp", ARG_INT, &o->tp, "T", "only the layouts of this tensor-parallel size (0: every tp dividing the world)", 0, 0},
        {"pp", ARG_INT, &o->pp, "P", "only the layouts of this many pipeline stages (0: every pp dividing world / tp, up to the layer count)", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_DATA},
        {"seq-len", ARG_INT, &o->seq_len, "T", "tokens per sequence", 0, 0},
        {"micro-batch", ARG_INT, &o->micro_batch, "B", "sequences per micro-batch per data-parallel rank", 0, 0},
        {"global-batch", ARG_INT, &o->global_batch, "G", "sequences per optimizer step (0: micro-batch x dp of each layout); a multiple of micro-batch x dp; G / (micro-batch x dp) micro-batches go through a pipeline per step", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_ADAPTER},
        {"lora-r", ARG_INT, &o->r, "R", "LoRA rank (on all seven modules, as train's default)", 0, 0},
        {"recompute", ARG_STR, &o->recompute, "MODE", "none | layer: as train's --recompute (layer: one layer's activations, and one more o_proj all-reduce per layer in backward)", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_LOGGING},
        {"json", ARG_BOOL, &o->json, NULL, "print one JSON object (the layouts array) instead of the table", 0, 0},
    };
    // clang-format on
    const int nspecs = (int)(sizeof specs / sizeof specs[0]);
    return args_command(
        specs, nspecs, argc, argv, 2, "plan",
        "shardlora plan --model DIR --nodes N --mem-per-node GIB [--ranks-per-node K] "
        "[--base-dtype DTYPE] [--json] [options]",
        "Which tp x pp x dp layouts of the model fit N nodes, from config.json alone: the "
        "frozen bytes per rank (exact; with pipeline stages, the largest stage's), the estimate "
        "of activations, adapter and optimizer state (as train's start-up check), and the "
        "bytes each rank sends per optimizer step inside a node and between nodes (a ring "
        "all-reduce over n ranks sends 2(n-1)/n of its buffer; a stage boundary carries 2 x "
        "micro-batches x tokens x hidden x 4 bytes). Ranks fill a node in world-rank order, TP "
        "innermost, then PP, then DP: a TP group stays in a node when tp divides "
        "--ranks-per-node, and stages go to other nodes when tp x pp exceeds it. Fitting "
        "layouts first, fewest bytes between nodes first. Runs without mpirun.",
        rc);
}

/* The options' ranges and choices; 0 with st set to refuse. */
static int plan_check(const PlanOpts *o, int *base, int *recompute, ErrStatus *st) {
    int compute = 0;
    mpicmd_bound("nodes", o->nodes, 1, 1 << 16, st);
    mpicmd_bound("ranks-per-node", o->ranks_per_node, 1, 1 << 12, st);
    mpicmd_bound("threads", o->threads, 1, MPICMD_MAX_THREADS, st);
    mpicmd_bound("tp", o->tp, 0, 1 << 16, st);
    mpicmd_bound("pp", o->pp, 0, MPICMD_MAX_PP, st);
    mpicmd_bound("seq-len", o->seq_len, 1, MPICMD_MAX_SEQ_LEN, st);
    mpicmd_bound("micro-batch", o->micro_batch, 1, MPICMD_MAX_BATCH, st);
    mpicmd_bound("global-batch", o->global_batch, 0, (int64_t)1 << 30, st);
    mpicmd_bound("lora-r", o->r, 1, 1 << 16, st);
    if (st->ok && o->micro_batch * o->seq_len > MPICMD_MAX_ROWS)
        err_status_set(st, "--micro-batch x --seq-len %lld: expected at most %lld",
                       (long long)(o->micro_batch * o->seq_len), (long long)MPICMD_MAX_ROWS);
    if (st->ok && !(o->mem_per_node > 0 && o->mem_per_node < 1e9))
        err_status_set(st, "--mem-per-node %g: expected a positive number of GiB", o->mem_per_node);
    if (st->ok && (int64_t)o->nodes * o->ranks_per_node > (1 << 16))
        err_status_set(st, "--nodes x --ranks-per-node %lld: expected at most %d",
                       (long long)(o->nodes * o->ranks_per_node), 1 << 16);
    const int64_t world = o->nodes * o->ranks_per_node, tp = o->tp ? o->tp : 1;
    if (st->ok && world % (tp * (o->pp ? o->pp : 1)) != 0)
        err_status_set(
            st, "--tp %lld x --pp %lld does not divide the %lld ranks (--nodes x --ranks-per-node)",
            (long long)tp, (long long)(o->pp ? o->pp : 1), (long long)world);
    mpicmd_dtype_opts(o->base_dtype, "auto", base, &compute, st);
    if (st->ok && (*recompute = llama_recompute_parse(o->recompute)) < 0)
        err_status_set(st, "--recompute '%s': expected none or layer", o->recompute);
    return st->ok;
}

/* The communicator a world rank belongs to under class c: its key (equal keys, one group),
 * in [0, world). Ranks as parallel/grid.h numbers them: tp_rank = w % tp, pp_rank =
 * (w / tp) % pp, dp_rank = w / (tp pp). kv: the ranks of a stage holding the same kv head
 * (trainer_init's split by pp_rank x KV + kv0). */
static int64_t plan_comm_key(PlanComm c, const LlamaModel *m, int tp, int pp, int64_t w) {
    const int64_t tp_rank = w % tp, pp_rank = (w / tp) % pp, dp_rank = w / ((int64_t)tp * pp);
    switch (c) {
    case PLAN_TP:
        return w / tp;
    case PLAN_DP:
        return pp_rank * tp + tp_rank;
    case PLAN_WORLD:
        return pp_rank;
    case PLAN_PP:
        return dp_rank * tp + tp_rank;
    default: /* kv heads replicated (KV < tp): kv0; else no group (MPI_COMM_SELF) */
        return m->KV < tp ? pp_rank * m->KV + tp_rank * m->KV / tp : w;
    }
}

/* n (ranks in rank 0's group) and spans (a group with ranks on two nodes) of class c, for
 * ranks placed K per node in world-rank order (shardlora-run's --map-by ppr:K:node fills a node
 * first; DESIGN.md §2). */
static void plan_comm_shape(PlanTraffic *t, PlanComm c, const LlamaModel *m, int tp, int pp,
                            int64_t world, int64_t K) {
    int64_t *first_node = malloc((size_t)world * sizeof *first_node);
    SL_CHECK(first_node, "out of memory");
    for (int64_t k = 0; k < world; k++)
        first_node[k] = -1;
    t->n = 0;
    t->spans = 0;
    const int64_t key0 = plan_comm_key(c, m, tp, pp, 0);
    for (int64_t w = 0; w < world; w++) {
        const int64_t key = plan_comm_key(c, m, tp, pp, w), node = w / K;
        if (first_node[key] < 0) first_node[key] = node;
        if (first_node[key] != node) t->spans = 1;
        if (key == key0) t->n++;
    }
    free(first_node);
}

/* Floats of TP rank 0's part of a stage boundary's [N, C] (grid_part: the first parts take the
 * remainder). */
static int64_t plan_part(int64_t N, int64_t C, int tp) {
    const int64_t n = N * C;
    return n / tp + (n % tp != 0);
}

/* The tensor-parallel collectives of stage s of P over a step of nmicro micro-batches at
 * tp > 1, as llama_forward / llama_backward / pipe.c issue them: *reduce, payload bytes of the
 * all-reduces: o_proj and down_proj [N, C] per layer, the input gradients of qkv and gate/up
 * [N, C] per layer, on the first stage the embedding [N, C] (vocab-parallel rows), on the last
 * the cross-entropy's max, sum and target logit [N] each and the lm_head input gradient
 * [N, C]; a layer run again in backward (recompute) all-reduces its o_proj (down_proj's is
 * skipped) with --recompute layer: every layer but the last, every layer on a stage holding
 * several micro-batches (another micro-batch ran forward before each backward); without it
 * a stage keeps each micro-batch's saves and runs nothing again. *gather, payload bytes of the
 * all-gathers of the stage's received parts (input from the stage before, gradient from the stage
 * after). F32. */
static void plan_tp_stage(const LlamaModel *m, int64_t N, int64_t nmicro, int recompute, int s,
                          int P, int64_t Ls, int64_t *reduce, int64_t *gather) {
    *reduce = *gather = 0;
    if (m->tp == 1) return;
    const int first = s == 0, last = s == P - 1, vp = m->Vl < m->V;
    const int64_t sets = P - s < nmicro ? P - s : nmicro;   /* pipe_sets */
    int64_t rows_c = 4 * Ls + (first && vp) + (last && vp); /* all-reduces of [N, C] */
    if (recompute == LLAMA_RECOMPUTE_LAYER) /* the last layer is fresh only at one set */
        rows_c += sets > 1 ? Ls : Ls - 1;
    const int64_t micro = sizes_mul_sat(sizes_add_sat(sizes_mul_sat(rows_c, m->C), last ? 3 : 0),
                                        sizes_mul_sat(N, 4));
    *reduce = sizes_mul_sat(nmicro, micro);
    *gather = sizes_mul_sat(nmicro, plan_part(N, m->C, m->tp) * 4 * (!first + !last));
}

/* Floats of the trainable adapter per rank in each gradient sync class (PLAN_DP, PLAN_WORLD,
 * PLAN_KV) for Ls layers, as llama_init_adapters declares LoRA: per layer and module,
 * A [r, in] and B [out, r] of this rank's shard, each in the class of its copies over the TP
 * group. */
static void plan_grad_floats(const LlamaModel *m, int64_t r, int64_t Ls,
                             int64_t floats[PLAN_NCOMM]) {
    const int64_t C = m->C, QD = m->Hl * m->D, KD = m->KVl * m->D, Fl = m->Fl;
    const int64_t out[MOD_NMODULES] = {QD, KD, KD, C, Fl, Fl, C};
    const int64_t in[MOD_NMODULES] = {C, C, C, QD, C, C, Fl};
    const int tp = m->tp;
    memset(floats, 0, PLAN_NCOMM * sizeof *floats);
    for (int i = 0; i < MOD_NMODULES; i++) {
        const int row = i == MOD_O || i == MOD_DOWN, kv = i == MOD_K || i == MOD_V;
        const int in_copies = row ? 1 : tp;
        const int out_copies = row ? tp : (kv && m->KV < tp ? tp / (int)m->KV : 1);
        /* ParamSync order is PLAN_DP, PLAN_WORLD, PLAN_KV shifted by one */
        floats[1 + adapter_sync_class(in_copies, tp)] += Ls * r * in[i];
        floats[1 + adapter_sync_class(out_copies, tp)] += Ls * r * out[i];
    }
}

/* The traffic of stage s of layout p (shapes: the communicators' n and spans). */
static void plan_stage_traffic(PlanStage *ps, const PlanLayout *p, const PlanTraffic *shape,
                               const LlamaModel *m, const PlanOpts *o, int s, int recompute) {
    const int64_t N = o->micro_batch * o->seq_len, Ls = ps->l1 - ps->l0;
    int64_t grad[PLAN_NCOMM], reduce = 0, gather = 0;
    plan_grad_floats(m, o->r, Ls, grad);
    plan_tp_stage(m, N, p->nmicro, recompute, s, p->pp, Ls, &reduce, &gather);
    ps->intra = ps->inter = 0;
    for (int c = 0; c < PLAN_NCOMM; c++) {
        PlanTraffic *t = &ps->t[c];
        *t = shape[c];
        const double ring = t->n > 1 ? 2.0 * (t->n - 1) / t->n : 0;
        /* a communicator of one rank moves nothing (grid_allreduce, gsync_start) */
        if (t->n <= 1) {
            t->payload = t->sent = 0;
        } else if (c == PLAN_TP) {
            t->payload = sizes_add_sat(reduce, gather);
            t->sent = sizes_add_sat((int64_t)((double)reduce * ring), gather * (t->n - 1));
        } else if (c == PLAN_PP) {
            /* point to point: the input forward to rank w + tp (stage s + 1), the gradient
             * back to w - tp (stage s - 1), each between nodes or not; w = s tp: the first
             * pipeline's TP rank 0 */
            const int64_t one = sizes_mul_sat(p->nmicro, plan_part(N, m->C, p->tp) * 4);
            const int64_t w = (int64_t)s * p->tp, K = o->ranks_per_node;
            const int to[2] = {s<p->pp - 1, s> 0};
            const int64_t peer[2] = {w + p->tp, w - p->tp};
            t->payload = t->sent = 0;
            for (int d = 0; d < 2; d++) {
                if (!to[d]) continue;
                t->payload = t->sent = sizes_add_sat(t->sent, one);
                if (peer[d] / K != w / K)
                    ps->inter = sizes_add_sat(ps->inter, one);
                else
                    ps->intra = sizes_add_sat(ps->intra, one);
            }
            continue;
        } else {
            t->payload = sizes_mul_sat(grad[c], 4);
            t->sent = (int64_t)((double)t->payload * ring);
        }
        if (t->spans)
            ps->inter = sizes_add_sat(ps->inter, t->sent);
        else
            ps->intra = sizes_add_sat(ps->intra, t->sent);
    }
}

/* The split of layout p's stages into p->st[s].l0 / l1, as train's mpicmd_stages makes it
 * (stage_split over stage_cost_model at --seq-len); 0 with p->refused set. */
static int plan_split(PlanLayout *p, const HfcConfig *c, const PlanOpts *o) {
    int64_t *first = calloc((size_t)p->pp + 1, sizeof *first);
    double *cost = calloc((size_t)(c->num_layers > 0 ? c->num_layers : 1), sizeof *cost);
    SL_CHECK(first && cost, "out of memory");
    StageCost sc;
    stage_cost_model(&sc, c, o->seq_len);
    for (int64_t l = 0; l < c->num_layers; l++)
        cost[l] = sc.layer;
    ErrStatus st;
    err_status_ok(&st);
    int ok = 1;
    if (p->pp == 1) {
        first[1] = c->num_layers;
    } else if (!stage_split(c->num_layers, p->pp, cost, sc.first, sc.last, first, &st)) {
        snprintf(p->refused, sizeof p->refused, "%s", st.msg);
        ok = 0;
    }
    for (int s = 0; ok && s < p->pp; s++) {
        p->st[s].l0 = first[s];
        p->st[s].l1 = first[s + 1];
    }
    free(first);
    free(cost);
    return ok;
}

/* Stage s of layout p: its memory (TP rank 0) and traffic; 0 with p->refused set. */
static int plan_stage(PlanLayout *p, int s, const HfcConfig *c, const PlanOpts *o, GemmDtype dt,
                      int recompute, const PlanTraffic *shape) {
    PlanStage *ps = &p->st[s];
    LlamaModel m;
    ErrStatus st;
    if (!llama_shape(&m, c, p->tp, 0, &st)) {
        snprintf(p->refused, sizeof p->refused, "%s", st.msg);
        return 0;
    }
    m.pp = p->pp;
    m.pp_rank = s;
    m.l0 = ps->l0;
    m.l1 = ps->l1;
    m.first = s == 0;
    m.last = s == p->pp - 1;
    m.frozen_bytes = (uint64_t)memplan_frozen(c, p->tp, 0, ps->l0, ps->l1, dt);
    if (m.frozen_bytes == 0) {
        snprintf(p->refused, sizeof p->refused,
                 "--base-dtype %s cannot store a shard at --tp %d (nf4: columns must be a "
                 "multiple of 64)",
                 mpicmd_base_name(dt), p->tp);
        return 0;
    }
    const int64_t sets = p->pp - s < p->nmicro ? p->pp - s : p->nmicro; /* pipe_sets */
    MemplanIn in = {.B = o->micro_batch,
                    .T = o->seq_len,
                    .training = 1,
                    .r = (int)o->r,
                    .kind = "lora",
                    .targets = (1u << MOD_NMODULES) - 1,
                    .recompute = recompute,
                    .sets = (int)sets,
                    .optim_states = 2,
                    .threads = (int)o->threads,
                    .mfu_probe = 1};
    memplan_estimate(&ps->mem, &m, &in);
    plan_stage_traffic(ps, p, shape, &m, o, s, recompute);
    return 1;
}

/* Layout tp x pp x (world / (tp pp)): refused (p->refused), or its memory and traffic. */
static void plan_layout(PlanLayout *p, const HfcConfig *c, const PlanOpts *o, GemmDtype dt,
                        int recompute, int tp, int pp) {
    memset(p, 0, sizeof *p);
    const int64_t world = o->nodes * o->ranks_per_node;
    p->tp = tp;
    p->pp = pp;
    p->dp = (int)(world / ((int64_t)tp * pp));
    p->budget = (int64_t)(o->mem_per_node * 1073741824.0 / (double)o->ranks_per_node);
    p->st = calloc((size_t)pp, sizeof *p->st);
    SL_CHECK(p->st, "out of memory");
    LlamaModel m;
    ErrStatus st;
    if (!llama_shape(&m, c, tp, 0, &st)) {
        snprintf(p->refused, sizeof p->refused, "%s", st.msg);
        return;
    }
    const int64_t G = o->global_batch > 0 ? o->global_batch : o->micro_batch * p->dp;
    if (G % (o->micro_batch * p->dp) != 0) {
        snprintf(p->refused, sizeof p->refused,
                 "--global-batch %lld is not a multiple of micro-batch %lld x dp %d", (long long)G,
                 (long long)o->micro_batch, p->dp);
        return;
    }
    p->nmicro = G / ((int64_t)p->dp * o->micro_batch);
    const int64_t N = o->micro_batch * o->seq_len;
    p->boundary = pp > 1 ? sizes_mul_sat(2 * p->nmicro, sizes_mul_sat(N, m.C * 4)) : 0;
    if (!plan_split(p, c, o)) return;
    PlanTraffic shape[PLAN_NCOMM];
    for (int k = 0; k < PLAN_NCOMM; k++)
        plan_comm_shape(&shape[k], (PlanComm)k, &m, tp, pp, world, o->ranks_per_node);
    for (int s = 0; s < pp; s++) {
        if (!plan_stage(p, s, c, o, dt, recompute, shape)) return;
        const PlanStage *ps = &p->st[s];
        if (ps->mem.total > p->st[p->heavy].mem.total) p->heavy = s;
        if (ps->mem.bytes[MEM_FROZEN] > p->frozen) p->frozen = ps->mem.bytes[MEM_FROZEN];
        for (int k = 0; k < PLAN_NCOMM; k++) {
            PlanTraffic *t = &p->t[k];
            const int64_t pay = t->payload, sent = t->sent;
            *t = ps->t[k];
            if (pay > t->payload) t->payload = pay;
            if (sent > t->sent) t->sent = sent;
        }
        if (ps->intra > p->intra) p->intra = ps->intra;
        if (ps->inter > p->inter) p->inter = ps->inter;
    }
    p->fits = p->st[p->heavy].mem.total <= p->budget;
}

/* Fitting first, then fewest bytes between nodes, then least memory; refused last. */
static int plan_cmp(const void *a, const void *b) {
    const PlanLayout *x = a, *y = b;
    if ((x->refused[0] != 0) != (y->refused[0] != 0)) return x->refused[0] ? 1 : -1;
    if (x->refused[0]) return x->tp != y->tp ? x->tp - y->tp : x->pp - y->pp;
    if (x->fits != y->fits) return x->fits ? -1 : 1;
    if (x->inter != y->inter) return x->inter < y->inter ? -1 : 1;
    const int64_t mx = x->st[x->heavy].mem.total, my = y->st[y->heavy].mem.total;
    if (mx != my) return mx < my ? -1 : 1;
    return x->tp != y->tp ? x->tp - y->tp : x->pp - y->pp;
}

/* Every tp dividing world = nodes x ranks-per-node and pp dividing world / tp, up to the
 * layer count (a stage holds at least one layer), sorted; returns the count. */
static int plan_layouts(PlanLayout **out, const HfcConfig *c, const PlanOpts *o, GemmDtype dt,
                        int recompute) {
    const int64_t world = o->nodes * o->ranks_per_node;
    const int64_t maxpp = c->num_layers < MPICMD_MAX_PP ? c->num_layers : MPICMD_MAX_PP;
    int n = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            *out = calloc((size_t)n, sizeof **out);
            SL_CHECK(*out, "out of memory");
            n = 0;
        }
        for (int64_t tp = 1; tp <= world; tp++)
            for (int64_t pp = 1; world % tp == 0 && pp <= world / tp; pp++) {
                if ((world / tp) % pp != 0 || (pp > 1 && pp > maxpp && pp != o->pp)) continue;
                if ((o->tp && tp != o->tp) || (o->pp && pp != o->pp)) continue;
                if (pass == 1) plan_layout(&(*out)[n], c, o, dt, recompute, (int)tp, (int)pp);
                n++;
            }
    }
    qsort(*out, (size_t)n, sizeof **out, plan_cmp);
    return n;
}

static void plan_free(PlanLayout *p, int n) {
    for (int i = 0; i < n; i++)
        free(p[i].st);
    free(p);
}

/* bytes as "12.3 GiB" / "456.0 MiB" / "7.0 KiB" / "12 B" into buf. */
static const char *plan_size(char *buf, size_t n, int64_t b) {
    const double v = (double)b;
    if (v >= 1073741824.0)
        snprintf(buf, n, "%.2f GiB", v / 1073741824.0);
    else if (v >= 1048576.0)
        snprintf(buf, n, "%.1f MiB", v / 1048576.0);
    else if (v >= 1024.0)
        snprintf(buf, n, "%.1f KiB", v / 1024.0);
    else
        snprintf(buf, n, "%lld B", (long long)b);
    return buf;
}

/* "inside a node", "between nodes" or "-" for the classes in [c0, c1). */
static const char *plan_link(const PlanLayout *p, int c0, int c1) {
    int intra = 0, inter = 0;
    for (int c = c0; c < c1; c++) {
        if (!p->t[c].sent) continue;
        inter |= p->t[c].spans;
        intra |= !p->t[c].spans;
    }
    return inter && intra ? "both" : inter ? "between nodes" : intra ? "inside a node" : "-";
}

/* The share of a step a stage idles under 1F1B with m micro-batches: (P - 1) / (m + P - 1)
 * (Narayanan et al., "Efficient large-scale language model training on GPU clusters using
 * Megatron-LM", 2021, section 2.2; backward ~ forward for a frozen base). */
static double plan_bubble(const PlanLayout *x) {
    return (double)(x->pp - 1) / (double)(x->nmicro + x->pp - 1);
}

/* "TP in a node, PP across nodes" and the like: where layout x's groups run. */
static const char *plan_placement(char *buf, size_t n, const PlanLayout *x) {
    const char *tp = x->tp == 1 ? "" : x->t[PLAN_TP].spans ? "TP across nodes" : "TP in a node";
    const char *pp = x->pp == 1 ? "" : x->t[PLAN_PP].spans ? "PP across nodes" : "PP in a node";
    snprintf(buf, n, "%s%s%s", tp, tp[0] && pp[0] ? ", " : "", tp[0] || pp[0] ? pp : "-");
    return buf;
}

static void plan_print_table(const PlanLayout *p, int n, const HfcConfig *c, const PlanOpts *o,
                             GemmDtype dt) {
    char a[32], b[32], d[32], e[32], f[32], g[32], h[32], k[32];
    printf("plan for %s: %s, %lld layers, hidden %lld, ffn %lld, %lld heads (%lld kv), vocab "
           "%lld\n",
           o->model, c->architecture, (long long)c->num_layers, (long long)c->hidden_size,
           (long long)c->intermediate_size, (long long)c->num_heads, (long long)c->num_kv_heads,
           (long long)c->vocab_size);
    printf("%lld nodes x %lld ranks per node = %lld ranks, %g GiB per node; base %s, seq %lld x "
           "micro-batch %lld, global batch %s, LoRA r %lld on all modules, recompute %s\n\n",
           (long long)o->nodes, (long long)o->ranks_per_node,
           (long long)(o->nodes * o->ranks_per_node), o->mem_per_node, mpicmd_base_name(dt),
           (long long)o->seq_len, (long long)o->micro_batch,
           o->global_batch ? (snprintf(a, sizeof a, "%lld", (long long)o->global_batch), a)
                           : "micro-batch x dp",
           (long long)o->r, o->recompute);
    printf("%-20s %-4s %11s %11s %11s %11s  %-30s %-26s %-26s %-14s %-6s %s\n", "layout", "fits",
           "frozen", "+act/adapt", "total", "budget", "placement", "TP sent/step",
           "gradient sent/step", "stage boundary", "bubble", "between nodes/step");
    int spans = 0, refused = 0;
    for (int i = 0; i < n; i++) {
        const PlanLayout *x = &p[i];
        if (x->refused[0]) {
            refused++;
            continue;
        }
        const PlanStage *hs = &x->st[x->heavy];
        const int64_t grad = x->t[PLAN_DP].sent + x->t[PLAN_WORLD].sent + x->t[PLAN_KV].sent;
        char lay[48], tpc[48], grc[48], place[48];
        snprintf(lay, sizeof lay, "tp %d x pp %d x dp %d%s", x->tp, x->pp, x->dp,
                 x->t[PLAN_TP].spans ? "*" : "");
        spans |= x->t[PLAN_TP].spans;
        snprintf(tpc, sizeof tpc, "%s (%s)", plan_size(a, sizeof a, x->t[PLAN_TP].sent),
                 plan_link(x, PLAN_TP, PLAN_DP));
        snprintf(grc, sizeof grc, "%s (%s)", plan_size(b, sizeof b, grad),
                 plan_link(x, PLAN_DP, PLAN_PP));
        char bub[16] = "-";
        if (x->pp > 1) snprintf(bub, sizeof bub, "%.0f%%", 100.0 * plan_bubble(x));
        printf("%-20s %-4s %11s %11s %11s %11s  %-30s %-26s %-26s %-14s %-6s %s\n", lay,
               x->fits ? "yes" : "no", plan_size(d, sizeof d, x->frozen),
               plan_size(e, sizeof e, hs->mem.total - hs->mem.bytes[MEM_FROZEN]),
               plan_size(f, sizeof f, hs->mem.total), plan_size(g, sizeof g, x->budget),
               plan_placement(place, sizeof place, x), tpc, grc,
               x->pp > 1 ? plan_size(k, sizeof k, x->boundary) : "-", bub,
               plan_size(h, sizeof h, x->inter));
    }
    if (spans)
        printf("* the TP group spans nodes: its activation all-reduces cross the link between "
               "nodes (prefer a tp that divides --ranks-per-node, and pp for more nodes)\n");
    printf("memory per rank: frozen weights (exact; the largest stage's) + activations, adapter, "
           "optimizer state (estimate, as train's start-up check; total: the hungriest stage's "
           "rank); bytes a rank sends per optimizer step (the largest over the stages; a ring "
           "all-reduce over n ranks sends 2(n-1)/n of its buffer; all of it counts as between "
           "nodes when its group spans nodes); stage boundary: what one boundary carries per "
           "step, both ways, over its TP ranks (2 x micro-batches x micro-batch x seq-len x "
           "hidden x 4 B); bubble: the share of a step a stage idles under 1F1B, (pp - 1) / "
           "(micro-batches + pp - 1): raise --global-batch to shrink it\n");
    if (refused) {
        printf("not possible:\n");
        for (int i = 0; i < n; i++)
            if (p[i].refused[0])
                printf("  tp %d x pp %d x dp %d: %s\n", p[i].tp, p[i].pp, p[i].dp, p[i].refused);
    }
}

static json_t *plan_traffic_json(const PlanTraffic *t, int c0, int c1) {
    int64_t payload = 0, sent = 0;
    int intra = 0, inter = 0;
    for (int c = c0; c < c1; c++) {
        payload += t[c].payload;
        sent += t[c].sent;
        inter |= t[c].sent && t[c].spans;
        intra |= t[c].sent && !t[c].spans;
    }
    return json_pack("{sI sI ss}", "payload", (json_int_t)payload, "sent", (json_int_t)sent, "link",
                     inter && intra ? "both"
                     : inter        ? "between nodes"
                     : intra        ? "inside a node"
                                    : "-");
}

static json_t *plan_memory_json(const MemPlan *mp) {
    json_t *mem = json_object();
    for (int k = 0; k < MEM_NCATEGORY; k++)
        json_object_set_new(mem, mem_category_name((MemCategory)k),
                            json_integer((json_int_t)mp->bytes[k]));
    return mem;
}

/* One layout as JSON: the figures of its hungriest stage and largest traffic, and each stage's. */
static json_t *plan_layout_json(const PlanLayout *x) {
    json_t *j = json_pack("{si si si si}", "tp", x->tp, "pp", x->pp, "dp", x->dp, "world",
                          x->tp * x->pp * x->dp);
    if (x->refused[0]) {
        json_object_set_new(j, "fits", json_false());
        json_object_set_new(j, "refused", json_string(x->refused));
        return j;
    }
    const PlanStage *hs = &x->st[x->heavy];
    char place[48];
    json_object_set_new(j, "fits", json_boolean(x->fits));
    json_object_set_new(j, "tp_spans_nodes", json_boolean(x->t[PLAN_TP].spans));
    json_object_set_new(j, "pp_spans_nodes", json_boolean(x->t[PLAN_PP].spans));
    json_object_set_new(j, "tp_in_node_pp_across_nodes",
                        json_boolean(!x->t[PLAN_TP].spans && x->t[PLAN_PP].spans));
    json_object_set_new(j, "placement", json_string(plan_placement(place, sizeof place, x)));
    json_object_set_new(j, "frozen_bytes", json_integer((json_int_t)x->frozen));
    json_object_set_new(j, "total_bytes", json_integer((json_int_t)hs->mem.total));
    json_object_set_new(j, "budget_bytes", json_integer((json_int_t)x->budget));
    json_object_set_new(j, "memory_bytes", plan_memory_json(&hs->mem));
    json_object_set_new(j, "heaviest_stage", json_integer(x->heavy));
    json_object_set_new(j, "micro_batches", json_integer((json_int_t)x->nmicro));
    json_object_set_new(j, "expected_bubble", json_real(plan_bubble(x)));
    json_object_set_new(j, "tp_bytes", plan_traffic_json(x->t, PLAN_TP, PLAN_DP));
    json_object_set_new(j, "grad_bytes", plan_traffic_json(x->t, PLAN_DP, PLAN_PP));
    json_t *pp = plan_traffic_json(x->t, PLAN_PP, PLAN_NCOMM);
    json_object_set_new(pp, "boundary", json_integer((json_int_t)x->boundary));
    json_object_set_new(j, "pp_bytes", pp);
    json_object_set_new(j, "intra_node_bytes", json_integer((json_int_t)x->intra));
    json_object_set_new(j, "inter_node_bytes", json_integer((json_int_t)x->inter));
    json_t *stages = json_array();
    for (int s = 0; s < x->pp; s++) {
        const PlanStage *ps = &x->st[s];
        json_t *o = json_pack("{s[II] sI sI}", "layers", (json_int_t)ps->l0, (json_int_t)ps->l1,
                              "frozen_bytes", (json_int_t)ps->mem.bytes[MEM_FROZEN], "total_bytes",
                              (json_int_t)ps->mem.total);
        json_object_set_new(o, "memory_bytes", plan_memory_json(&ps->mem));
        json_object_set_new(o, "tp_bytes", plan_traffic_json(ps->t, PLAN_TP, PLAN_DP));
        json_object_set_new(o, "grad_bytes", plan_traffic_json(ps->t, PLAN_DP, PLAN_PP));
        json_object_set_new(o, "pp_bytes", plan_traffic_json(ps->t, PLAN_PP, PLAN_NCOMM));
        json_object_set_new(o, "intra_node_bytes", json_integer((json_int_t)ps->intra));
        json_object_set_new(o, "inter_node_bytes", json_integer((json_int_t)ps->inter));
        json_array_append_new(stages, o);
    }
    json_object_set_new(j, "stages", stages);
    return j;
}

static void plan_print_json(const PlanLayout *p, int n, const PlanOpts *o, GemmDtype dt) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, plan_layout_json(&p[i]));
    json_t *root = json_pack(
        "{ss sI sI sI sf ss sI sI sI sI ss so}", "model", o->model, "nodes", (json_int_t)o->nodes,
        "ranks_per_node", (json_int_t)o->ranks_per_node, "world",
        (json_int_t)(o->nodes * o->ranks_per_node), "mem_per_node_gib", o->mem_per_node,
        "base_dtype", mpicmd_base_name(dt), "seq_len", (json_int_t)o->seq_len, "micro_batch",
        (json_int_t)o->micro_batch, "global_batch", (json_int_t)o->global_batch, "lora_r",
        (json_int_t)o->r, "recompute", o->recompute, "layouts", arr);
    char *s = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    SL_CHECK(s, "out of memory");
    printf("%s\n", s);
    free(s);
    json_decref(root);
}

int cmd_plan(int argc, char **argv) {
    PlanOpts o;
    int rc = 0, base = LLAMA_BASE_FILE, recompute = 0;
    if (!plan_parse(&o, argc, argv, &rc)) return rc;
    ErrStatus st;
    err_status_ok(&st);
    if (!plan_check(&o, &base, &recompute, &st)) {
        fprintf(stderr, "shardlora plan: %s\n", st.msg);
        return EXIT_USAGE;
    }
    char *path = str_join_path(o.model, "config.json");
    HfcConfig c;
    const int have = hfc_load(&c, path, &st);
    free(path);
    if (!have) {
        fprintf(stderr, "shardlora plan: %s\n", st.msg);
        return EXIT_BAD_INPUT;
    }
    const GemmDtype dt = mpicmd_base_dtype(base, &c);
    PlanLayout *p = NULL;
    const int n = plan_layouts(&p, &c, &o, dt, recompute);
    if (o.json)
        plan_print_json(p, n, &o, dt);
    else
        plan_print_table(p, n, &c, &o, dt);
    plan_free(p, n);
    return 0;
}
