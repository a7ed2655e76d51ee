/* `shardlora plan`: which tp x dp layouts of a model fit a cluster of N nodes, from
 * config.json alone (no weight is read), and the bytes each rank sends per optimizer step on
 * the links inside a node and between nodes. One process, no MPI.
 *
 * Memory per rank: memplan_frozen (exact frozen bytes of TP rank 0, the one with the most
 * vocabulary rows) + memplan_estimate on a LlamaModel holding only the dimensions
 * (llama_shape), with train's defaults for what the flags do not set (LoRA on all seven
 * modules, AdamW, no dropout, the MFU probe). Communication per rank per step, counted as
 * model/llama.c and train/trainer.c issue the all-reduces (summary-rank{R}.json comm_bytes
 * counts the same payloads), then times a ring all-reduce's 2(n-1)/n for what a rank sends
 * (Patarasuk & Yuan, "Bandwidth optimal all-reduce algorithms for clusters of workstations",
 * 2009). Legend as model/llama.h: N = B*T rows of a micro-batch, C hidden, L layers. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/adapter.h"
#include "../model/llama.h"
#include "../runtime/sizes.h"
#include "../runtime/str.h"
#include "../train/memplan.h"
#include "args.h"
#include "cmds.h"
#include "mpicmd.h"

typedef struct {
    const char *model, *base_dtype, *recompute;
    int64_t nodes, ranks_per_node, seq_len, micro_batch, global_batch, r, threads;
    double mem_per_node; /* GiB */
    int json;
} PlanOpts;

/* The collectives of a step, by communicator. */
typedef enum {
    PLAN_TP = 0, /* activation all-reduces over tp_comm */
    PLAN_DP,     /* gradients of sharded factors over dp_comm */
    PLAN_WORLD,  /* gradients of replicated factors over world */
    PLAN_KV,     /* gradients of factors replicated within a kv-head group */
    PLAN_NCOMM
} PlanComm;

typedef struct {
    int64_t payload; /* bytes per rank per step handed to the all-reduces (comm_bytes) */
    int64_t sent;    /* bytes a rank sends for them: payload x 2(n-1)/n */
    int n;           /* ranks in the communicator */
    int spans;       /* a group of this communicator spans nodes */
} PlanTraffic;

/* One layout and its costs per rank. pp (issue 19) becomes one more field here and one more
 * loop in plan_layouts, with its stage-boundary sends as one more PlanComm. */
typedef struct {
    int tp, dp;
    char refused[1024]; /* why the layout cannot run ("" if it can) */
    MemPlan mem;        /* TP rank 0's estimate; mem.bytes[MEM_FROZEN] exact */
    int64_t budget;     /* bytes per rank: --mem-per-node / --ranks-per-node */
    int fits;
    PlanTraffic t[PLAN_NCOMM];
    int64_t intra, inter; /* bytes a rank sends per step inside its node / to other nodes */
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
        {.type = ARG_GROUP, .group = ARGG_DATA},
        {"seq-len", ARG_INT, &o->seq_len, "T", "tokens per sequence", 0, 0},
        {"micro-batch", ARG_INT, &o->micro_batch, "B", "sequences per micro-batch per data-parallel rank", 0, 0},
        {"global-batch", ARG_INT, &o->global_batch, "G", "sequences per optimizer step (0: micro-batch x dp of each layout); a multiple of micro-batch x dp", 0, 0},
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
        "shardlora plan --model DIR --nodes N --mem-per-node GIB [--ranks-per-node K] [options]",
        "Which tp x dp layouts of the model fit N nodes, from config.json alone: the frozen "
        "bytes per rank (exact), the estimate of activations, adapter and optimizer state (as "
        "train's start-up check), and the bytes each rank sends per optimizer step inside a "
        "node and between nodes (a ring all-reduce over n ranks sends 2(n-1)/n of its "
        "buffer). Fitting layouts first, fewest bytes between nodes first. Runs without "
        "mpirun.",
        rc);
}

/* The options' ranges and choices; 0 with st set to refuse. */
static int plan_check(const PlanOpts *o, int *base, int *recompute, ErrStatus *st) {
    int compute = 0;
    mpicmd_bound("nodes", o->nodes, 1, 1 << 16, st);
    mpicmd_bound("ranks-per-node", o->ranks_per_node, 1, 1 << 12, st);
    mpicmd_bound("threads", o->threads, 1, MPICMD_MAX_THREADS, st);
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
    mpicmd_dtype_opts(o->base_dtype, "auto", base, &compute, st);
    if (st->ok && (*recompute = llama_recompute_parse(o->recompute)) < 0)
        err_status_set(st, "--recompute '%s': expected none or layer", o->recompute);
    return st->ok;
}

/* The communicator a world rank belongs to under class c: its key (equal keys, one group).
 * kv: the ranks holding the same kv head (trainer_buckets_init's split by kv0). */
static int64_t plan_comm_key(PlanComm c, const LlamaModel *m, int tp, int64_t w) {
    const int64_t tp_rank = w % tp, dp_rank = w / tp;
    switch (c) {
    case PLAN_TP:
        return dp_rank;
    case PLAN_DP:
        return tp_rank;
    case PLAN_WORLD:
        return 0;
    default: /* kv heads replicated (KV < tp): kv0; else no group (MPI_COMM_SELF) */
        return m->KV < tp ? tp_rank * m->KV / tp : w;
    }
}

/* n (ranks in rank 0's group) and spans (a group with ranks on two nodes) of class c, for
 * ranks placed K per node in world-rank order (shardlora-run's --map-by ppr:K:node fills a node
 * first; DESIGN.md §2). */
static void plan_comm_shape(PlanTraffic *t, PlanComm c, const LlamaModel *m, int tp, int64_t world,
                            int64_t K) {
    int64_t *first_node = malloc((size_t)world * sizeof *first_node);
    SL_CHECK(first_node, "out of memory");
    for (int64_t k = 0; k < world; k++)
        first_node[k] = -1;
    t->n = 0;
    t->spans = 0;
    const int64_t key0 = plan_comm_key(c, m, tp, 0);
    for (int64_t w = 0; w < world; w++) {
        const int64_t key = plan_comm_key(c, m, tp, w), node = w / K;
        if (first_node[key] < 0) first_node[key] = node;
        if (first_node[key] != node) t->spans = 1;
        if (key == key0) t->n++;
    }
    free(first_node);
}

/* Payload bytes of the tensor-parallel all-reduces of one micro-batch at tp > 1, as
 * llama_forward / llama_backward issue them: the embedding [N, C] (vocab-parallel rows),
 * o_proj and down_proj [N, C] per layer, the cross-entropy's max, sum and target logit
 * [N] each, the lm_head input gradient [N, C], and the input gradients of qkv and gate/up
 * [N, C] per layer; recompute layer runs each layer's forward but the last's again in
 * backward, with its o_proj all-reduce (down_proj's is skipped). F32: 4 bytes. */
static int64_t plan_tp_micro(const LlamaModel *m, int64_t N, int recompute) {
    if (m->tp == 1) return 0;
    int64_t rows_c = 4 * m->L + (m->Vl < m->V ? 2 : 0); /* all-reduces of [N, C] */
    if (recompute == LLAMA_RECOMPUTE_LAYER) rows_c += m->L - 1;
    return sizes_mul_sat(sizes_add_sat(sizes_mul_sat(rows_c, m->C), 3), sizes_mul_sat(N, 4));
}

/* Floats of the trainable adapter per rank in each gradient sync class (PLAN_DP, PLAN_WORLD,
 * PLAN_KV), as llama_init_adapters declares LoRA: per layer and module, A [r, in] and
 * B [out, r] of this rank's shard, each in the class of its copies over the TP group. */
static void plan_grad_floats(const LlamaModel *m, int64_t r, int64_t floats[PLAN_NCOMM]) {
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
        floats[1 + adapter_sync_class(in_copies, tp)] += m->L * r * in[i];
        floats[1 + adapter_sync_class(out_copies, tp)] += m->L * r * out[i];
    }
}

/* The traffic of layout p: payloads per step, ring factors, links. */
static void plan_traffic(PlanLayout *p, const LlamaModel *m, const PlanOpts *o, int64_t G,
                         int recompute) {
    const int64_t world = (int64_t)p->tp * p->dp, N = o->micro_batch * o->seq_len;
    const int64_t nmicro = G / ((int64_t)p->dp * o->micro_batch);
    int64_t grad[PLAN_NCOMM];
    plan_grad_floats(m, o->r, grad);
    p->intra = p->inter = 0;
    for (int c = 0; c < PLAN_NCOMM; c++) {
        PlanTraffic *t = &p->t[c];
        plan_comm_shape(t, (PlanComm)c, m, p->tp, world, o->ranks_per_node);
        /* a communicator of one rank moves nothing (grid_allreduce, gsync_start) */
        if (t->n <= 1)
            t->payload = 0;
        else if (c == PLAN_TP)
            t->payload = sizes_mul_sat(nmicro, plan_tp_micro(m, N, recompute));
        else
            t->payload = sizes_mul_sat(grad[c], 4);
        t->sent = t->n > 1 ? (int64_t)((double)t->payload * 2.0 * (t->n - 1) / t->n) : 0;
        if (t->spans)
            p->inter = sizes_add_sat(p->inter, t->sent);
        else
            p->intra = sizes_add_sat(p->intra, t->sent);
    }
}

/* Layout tp x (world / tp): refused (p->refused), or its memory and traffic. */
static void plan_layout(PlanLayout *p, const HfcConfig *c, const PlanOpts *o, GemmDtype dt,
                        int recompute, int tp) {
    memset(p, 0, sizeof *p);
    const int64_t world = o->nodes * o->ranks_per_node;
    p->tp = tp;
    p->dp = (int)(world / tp);
    p->budget = (int64_t)(o->mem_per_node * 1073741824.0 / (double)o->ranks_per_node);
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
    m.frozen_bytes = (uint64_t)memplan_frozen(c, tp, 0, 0, -1, dt);
    if (m.frozen_bytes == 0) {
        snprintf(p->refused, sizeof p->refused,
                 "--base-dtype %s cannot store a shard at --tp %d (nf4: columns must be a "
                 "multiple of 64)",
                 mpicmd_base_name(dt), tp);
        return;
    }
    MemplanIn in = {.B = o->micro_batch,
                    .T = o->seq_len,
                    .training = 1,
                    .r = (int)o->r,
                    .kind = "lora",
                    .targets = (1u << MOD_NMODULES) - 1,
                    .recompute = recompute,
                    .optim_states = 2,
                    .threads = (int)o->threads,
                    .mfu_probe = 1};
    memplan_estimate(&p->mem, &m, &in);
    p->fits = p->mem.total <= p->budget;
    plan_traffic(p, &m, o, G, recompute);
}

/* Fitting first, then fewest bytes between nodes, then least memory; refused last. */
static int plan_cmp(const void *a, const void *b) {
    const PlanLayout *x = a, *y = b;
    if ((x->refused[0] != 0) != (y->refused[0] != 0)) return x->refused[0] ? 1 : -1;
    if (x->fits != y->fits) return x->fits ? -1 : 1;
    if (x->inter != y->inter) return x->inter < y->inter ? -1 : 1;
    if (x->mem.total != y->mem.total) return x->mem.total < y->mem.total ? -1 : 1;
    return x->tp - y->tp;
}

/* Every tp dividing world = nodes x ranks-per-node, sorted; returns the count.
 * With pipeline parallelism (issue 19) a loop over pp dividing world / tp goes inside this
 * one (dp = world / (tp pp)), and plan_layout takes pp. */
static int plan_layouts(PlanLayout **out, const HfcConfig *c, const PlanOpts *o, GemmDtype dt,
                        int recompute) {
    const int64_t world = o->nodes * o->ranks_per_node;
    int n = 0;
    for (int64_t tp = 1; tp <= world; tp++)
        n += world % tp == 0;
    PlanLayout *p = calloc((size_t)n, sizeof *p);
    SL_CHECK(p, "out of memory");
    n = 0;
    for (int64_t tp = 1; tp <= world; tp++)
        if (world % tp == 0) plan_layout(&p[n++], c, o, dt, recompute, (int)tp);
    qsort(p, (size_t)n, sizeof *p, plan_cmp);
    *out = p;
    return n;
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

static void plan_print_table(const PlanLayout *p, int n, const HfcConfig *c, const PlanOpts *o,
                             GemmDtype dt) {
    char a[32], b[32], d[32], e[32], f[32], g[32], h[32];
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
    printf("%-14s %-4s %11s %11s %11s %11s  %-26s %-26s %s\n", "layout", "fits", "frozen",
           "+act/adapt", "total", "budget", "TP sent/step", "gradient sent/step",
           "between nodes/step");
    int spans = 0, refused = 0;
    for (int i = 0; i < n; i++) {
        const PlanLayout *x = &p[i];
        if (x->refused[0]) {
            refused++;
            continue;
        }
        const int64_t grad = x->t[PLAN_DP].sent + x->t[PLAN_WORLD].sent + x->t[PLAN_KV].sent;
        char lay[32], tpc[48], grc[48];
        snprintf(lay, sizeof lay, "tp %d x dp %d%s", x->tp, x->dp, x->t[PLAN_TP].spans ? "*" : "");
        spans |= x->t[PLAN_TP].spans;
        snprintf(tpc, sizeof tpc, "%s (%s)", plan_size(a, sizeof a, x->t[PLAN_TP].sent),
                 plan_link(x, PLAN_TP, PLAN_DP));
        snprintf(grc, sizeof grc, "%s (%s)", plan_size(b, sizeof b, grad),
                 plan_link(x, PLAN_DP, PLAN_NCOMM));
        printf("%-14s %-4s %11s %11s %11s %11s  %-26s %-26s %s\n", lay, x->fits ? "yes" : "no",
               plan_size(d, sizeof d, x->mem.bytes[MEM_FROZEN]),
               plan_size(e, sizeof e, x->mem.total - x->mem.bytes[MEM_FROZEN]),
               plan_size(f, sizeof f, x->mem.total), plan_size(g, sizeof g, x->budget), tpc, grc,
               plan_size(h, sizeof h, x->inter));
    }
    if (spans)
        printf("* the TP group spans nodes: its activation all-reduces cross the link between "
               "nodes (prefer a tp that divides --ranks-per-node)\n");
    printf("memory per rank: frozen weights (exact) + activations, adapter, optimizer state "
           "(estimate, as train's start-up check); bytes a rank sends per optimizer step (a "
           "ring all-reduce over n ranks sends 2(n-1)/n of its buffer; all of it counts as "
           "between nodes when its group spans nodes)\n");
    if (refused) {
        printf("not possible:\n");
        for (int i = 0; i < n; i++)
            if (p[i].refused[0]) printf("  tp %d x dp %d: %s\n", p[i].tp, p[i].dp, p[i].refused);
    }
}

static json_t *plan_traffic_json(const PlanLayout *x, int c0, int c1) {
    int64_t payload = 0, sent = 0;
    for (int c = c0; c < c1; c++) {
        payload += x->t[c].payload;
        sent += x->t[c].sent;
    }
    return json_pack("{sI sI ss}", "payload", (json_int_t)payload, "sent", (json_int_t)sent, "link",
                     plan_link(x, c0, c1));
}

static void plan_print_json(const PlanLayout *p, int n, const PlanOpts *o, GemmDtype dt) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        const PlanLayout *x = &p[i];
        json_t *j = json_pack("{si si si}", "tp", x->tp, "dp", x->dp, "world", x->tp * x->dp);
        if (x->refused[0]) {
            json_object_set_new(j, "fits", json_false());
            json_object_set_new(j, "refused", json_string(x->refused));
            json_array_append_new(arr, j);
            continue;
        }
        json_t *mem = json_object();
        for (int k = 0; k < MEM_NCATEGORY; k++)
            json_object_set_new(mem, mem_category_name((MemCategory)k),
                                json_integer((json_int_t)x->mem.bytes[k]));
        json_object_set_new(j, "fits", json_boolean(x->fits));
        json_object_set_new(j, "tp_spans_nodes", json_boolean(x->t[PLAN_TP].spans));
        json_object_set_new(j, "frozen_bytes", json_integer((json_int_t)x->mem.bytes[MEM_FROZEN]));
        json_object_set_new(j, "total_bytes", json_integer((json_int_t)x->mem.total));
        json_object_set_new(j, "budget_bytes", json_integer((json_int_t)x->budget));
        json_object_set_new(j, "memory_bytes", mem);
        json_object_set_new(j, "tp_bytes", plan_traffic_json(x, PLAN_TP, PLAN_DP));
        json_object_set_new(j, "grad_bytes", plan_traffic_json(x, PLAN_DP, PLAN_NCOMM));
        json_object_set_new(j, "intra_node_bytes", json_integer((json_int_t)x->intra));
        json_object_set_new(j, "inter_node_bytes", json_integer((json_int_t)x->inter));
        json_array_append_new(arr, j);
    }
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
    free(p);
    return 0;
}
