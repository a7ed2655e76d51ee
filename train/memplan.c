/* The memory estimate before allocating (see memplan.h). */
#include "memplan.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "../model/kvcache.h"
#include "../runtime/kernels.h"
#include "../runtime/log.h"
#include "../runtime/quant.h"
#include "../runtime/sizes.h"

/* Saturating: a + b * c (an estimate of absurd sizes stays huge instead of wrapping). */
static int64_t mp_fma(int64_t a, int64_t b, int64_t c) {
    return sizes_add_sat(a, sizes_mul_sat(b, c));
}

/* This rank's output and input widths of a module's shard (DESIGN.md §2: column layers
 * split outputs, row layers inputs). */
static void mp_slot_dims(const LlamaModel *m, int module, int64_t *no, int64_t *ni) {
    const int64_t QD = m->Hl * m->D, KD = m->KVl * m->D;
    switch (module) {
    case MOD_Q:
        *no = QD, *ni = m->C;
        break;
    case MOD_K:
    case MOD_V:
        *no = KD, *ni = m->C;
        break;
    case MOD_O:
        *no = m->C, *ni = QD;
        break;
    case MOD_GATE:
    case MOD_UP:
        *no = m->Fl, *ni = m->C;
        break;
    default:
        *no = m->C, *ni = m->Fl;
        break;
    }
}

/* One slot of a kind: its parameter floats and the activation floats it adds for N rows
 * (besides LoRA's h, dh [N, r] and, with dropout, xd, tmp [N, ni]).
 * LoRA: A [r, ni], B [no, r]. DoRA (model/dora.c): + magnitude [no]; u and dys [N, no].
 * VeRA (model/vera.c): lambda_d [r], lambda_b [no]; g [N, r], Bl and M [no, r]; its shared
 * projections are counted once, by the caller. */
typedef struct {
    int64_t params, acts;
} MpSlot;

static MpSlot mp_slot(const char *kind, int64_t r, int64_t no, int64_t ni, int64_t N) {
    if (strcmp(kind, "vera") == 0)
        return (MpSlot){r + no, sizes_add_sat(sizes_mul_sat(N, r), sizes_mul_sat(2 * no, r))};
    MpSlot s = {sizes_mul_sat(r, sizes_add_sat(no, ni)), 0};
    if (strcmp(kind, "dora") == 0) {
        s.params = sizes_add_sat(s.params, no);
        s.acts = sizes_mul_sat(2 * N, no);
    }
    return s;
}

static int mp_threads(int threads) {
    if (threads > 0) return threads;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    const int n = CPU_COUNT(&set);
    return n > 0 ? n : 1;
}

/* Floats saved by forward and used by backward for N rows (llama_acts_init) of this stage's
 * layers, with `sets` sets of the per-layer buffers (its layers, or 1 with recompute) and
 * `inputs` sets of layer inputs (micro-batches in flight on a pipeline stage). */
static int64_t mp_train_acts(const LlamaModel *m, int64_t N, int64_t sets, int64_t inputs) {
    const int64_t C = m->C, QD = m->Hl * m->D, KD = m->KVl * m->D, Fl = m->Fl, L = m->l1 - m->l0;
    const int64_t per_layer = 3 * C + 2 + 2 * QD + 2 * KD + m->Hl + 3 * Fl;
    const int64_t fixed = 5 * C + 1 + 2 * QD + 2 * KD + 3 * Fl;
    const int64_t per_row = sizes_add_sat(mp_fma(fixed, sizes_mul_sat(L + 1, inputs), C),
                                          sizes_mul_sat(sets, per_layer));
    const int64_t chunk = N < 256 ? N : 256;
    return mp_fma(sizes_mul_sat(N, per_row), chunk, m->Vl + 4);
}

/* Floats of the inference buffers for R rows, S slots of Tmax positions (llama_infer_init),
 * the KV cache included. */
static int64_t mp_infer_acts(const LlamaModel *m, int64_t S, int64_t Tmax, int64_t R) {
    const int64_t C = m->C, QD = m->Hl * m->D, KD = m->KVl * m->D, Fl = m->Fl;
    const int64_t per_row = m->D + 3 * C + 1 + 2 * QD + 2 * KD + m->Hl + 3 * Fl;
    int64_t f = sizes_mul_sat(R, per_row);
    f = sizes_add_sat(f, (int64_t)kvc_scores_floats(R, Tmax, m->Hl, m->KVl));
    /* the stage's layers' cache; the logits on the last stage only */
    f = mp_fma(f, S, 2 * C + 1 + (m->last ? m->Vl : 0));
    const int64_t cache =
        sizes_mul_sat(sizes_mul_sat(2 * (m->l1 - m->l0), S), sizes_mul_sat(Tmax, KD));
    return sizes_add_sat(f, cache);
}

void memplan_estimate(MemPlan *p, const LlamaModel *m, const MemplanIn *in) {
    memset(p, 0, sizeof *p);
    const int64_t rows = in->B > 0 ? sizes_mul_sat(in->B, in->T) : in->R;
    const char *kind = in->kind ? in->kind : "lora";
    /* sets of per-layer activations and adapter scratch: every kind shares its scratch
     * across layers under recompute (AdapterKind.share) */
    /* a pipeline stage's micro-batches in flight: each its own saves (sets of all of them
     * without recompute, of the layer inputs with it) */
    const int64_t Ls = m->l1 - m->l0, inputs = in->sets > 1 ? in->sets : 1;
    const int64_t sets = in->B > 0 && in->recompute == LLAMA_RECOMPUTE_LAYER ? 1 : Ls * inputs;
    int64_t adapter = 0, scratch = 0, max_no = 0, max_ni = 0;
    for (int i = 0; in->r > 0 && i < MOD_NMODULES; i++) {
        if (!(in->targets & (1u << i))) continue;
        int64_t no = 0, ni = 0;
        mp_slot_dims(m, i, &no, &ni);
        max_no = no > max_no ? no : max_no;
        max_ni = ni > max_ni ? ni : max_ni;
        const MpSlot s = mp_slot(kind, in->r, no, ni, rows);
        adapter = mp_fma(adapter, Ls, s.params);
        /* h and dh [N, r]; with dropout the dropped input and a temporary [N, ni] */
        const int64_t per_row = 2 * (int64_t)in->r + (in->dropout ? 2 * ni : 0);
        scratch = mp_fma(scratch, sets, sizes_add_sat(sizes_mul_sat(rows, per_row), s.acts));
    }
    /* VeRA's shared frozen projections A [r, max ni], B [max no, r], once per rank */
    const int64_t shared =
        strcmp(kind, "vera") == 0 ? sizes_mul_sat(in->r, sizes_add_sat(max_no, max_ni)) : 0;
    int64_t acts = scratch, other = 0;
    int64_t max_cols = m->C > m->F ? m->C : m->F;
    if (in->B > 0) {
        const int64_t N = rows;
        acts = sizes_add_sat(acts, mp_train_acts(m, N, sets, inputs));
        /* ids, targets, pos, doc_start, cos, sin (llama_batch_init) and labels */
        other = sizes_mul_sat(N, 4 + 4 + 8 + 4 + 8 + 4 * m->D);
    } else {
        acts = sizes_add_sat(acts, mp_infer_acts(m, in->S, in->Tmax, in->R));
        if (m->H * m->D > max_cols) max_cols = m->H * m->D;
        /* positions, document starts, cached lengths; the sampler's candidates and the
         * gathered logits on the ranks that sample */
        other = sizes_add_sat(sizes_mul_sat(in->R, 12), sizes_mul_sat(in->S, 8));
        other = mp_fma(other, m->V, 16 + 8 + 1 + sizes_mul_sat(in->S, 8));
    }
    const int64_t attn_rows = in->B > 0 ? in->T : in->R;
    acts = sizes_add_sat(
        acts, (int64_t)kern_scratch_floats(attn_rows, m->Hl, m->D, mp_threads(in->threads)));
    acts = mp_fma(acts, 512, max_cols); /* runtime/gemm.c: a BF16 tile of 512 rows */
    if (in->mfu_probe) other = mp_fma(other, 3 * 1536 * 1536, 4);
    p->bytes[MEM_FROZEN] = mp_fma((int64_t)m->frozen_bytes, shared, 4);
    p->bytes[MEM_ADAPTER] = sizes_mul_sat(adapter, 2 * 4); /* values and gradients */
    p->bytes[MEM_OPTIMIZER] = in->training ? sizes_mul_sat(adapter, 4 * in->optim_states) : 0;
    p->bytes[MEM_ACTIVATION] = sizes_mul_sat(acts, 4);
    p->bytes[MEM_OTHER] = other;
    for (int c = 0; c < MEM_NCATEGORY; c++)
        p->total = sizes_add_sat(p->total, p->bytes[c]);
}

/* Bytes of one [nr, nc] frozen matrix held as dt (as runtime/gemm.c's gemm_weight_bytes
 * counts the loaded one), or -1 when dt cannot store that shape (nf4: nc % 64). */
static int64_t mp_matrix_bytes(GemmDtype dt, int64_t nr, int64_t nc) {
    if (dt == GEMM_F32 || dt == GEMM_BF16)
        return sizes_mul_sat(sizes_mul_sat(nr, nc), dt == GEMM_F32 ? 4 : 2);
    const QuantFormat f = dt == GEMM_INT8 ? QUANT_INT8 : QUANT_NF4;
    ErrStatus st;
    err_status_ok(&st);
    return quant_check_shape(f, nr, nc, &st) ? (int64_t)quant_bytes(f, nr, nc) : -1;
}

int64_t memplan_frozen(const HfcConfig *c, int tp, int tp_rank, int64_t l0, int64_t l1,
                       GemmDtype dt) {
    LlamaModel m;
    ErrStatus st;
    if (!llama_shape(&m, c, tp, tp_rank, &st)) return 0;
    if (l1 < 0) l1 = m.L;
    const int first = l0 == 0, last = l1 == m.L, tied = c->tie_word_embeddings;
    const int64_t Ls = l1 - l0, mats = (first || (last && tied)) + (last && !tied);
    const int64_t C = m.C, QD = m.Hl * m.D, KD = m.KVl * m.D, Fl = m.Fl;
    /* this rank's q, k, v, o, gate, up, down shards (llama_load's ShardDescs) */
    const int64_t rows[MOD_NMODULES] = {QD, KD, KD, C, Fl, Fl, C};
    const int64_t cols[MOD_NMODULES] = {C, C, C, QD, C, C, Fl};
    int64_t layer = 0, e = mp_matrix_bytes(dt, m.Vl, C);
    for (int i = 0; i < MOD_NMODULES; i++) {
        const int64_t b = mp_matrix_bytes(dt, rows[i], cols[i]);
        if (b < 0) return 0;
        layer = sizes_add_sat(layer, b);
    }
    if (e < 0) return 0;
    /* the embedding (first stage; and the last when tied) and lm_head (last, untied) */
    e = sizes_add_sat(sizes_mul_sat(e, mats), sizes_mul_sat(Ls, layer));
    /* F32: norms (2 per layer and the final one), the RoPE table, and the biases: column
     * layers' sharded [rows], row layers' replicated [C] */
    int64_t f = sizes_mul_sat(2 * Ls + last, C) + m.D / 2;
    const int64_t bias =
        (c->qkv_bias ? QD + 2 * KD : 0) + (c->o_bias ? C : 0) + (c->mlp_bias ? 2 * Fl + C : 0);
    f = mp_fma(f, Ls, bias);
    return sizes_add_sat(e, sizes_mul_sat(f, 4));
}

/* The first integer of a file (e.g. "max" -> -1), or -1. */
static int64_t mp_read_num(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long long v = -1;
    if (fscanf(f, "%lld", &v) != 1) v = -1;
    fclose(f);
    return v;
}

/* The cgroup path of controller `ctrl` in /proc/self/cgroup ("" for v2's unified line "0::"),
 * into rel; 0 if absent. */
static int mp_cgroup_path(const char *ctrl, char *rel, size_t n) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return 0;
    char line[1200], want[64];
    snprintf(want, sizeof want, ":%s:", ctrl);
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, want);
        if (!p || (!ctrl[0] && strncmp(line, "0::", 3) != 0)) continue;
        p += strlen(want);
        snprintf(rel, n, "%.*s", (int)strcspn(p, "\n"), p);
        if (strcmp(rel, "/") == 0) rel[0] = 0;
        found = 1;
    }
    fclose(f);
    return found;
}

/* limit - usage of the files lim_name and use_name in dir (-1: no limit or unknown). */
static int64_t mp_room_in(const char *dir, const char *lim_name, const char *use_name) {
    char path[1400];
    snprintf(path, sizeof path, "%s/%s", dir, lim_name);
    const int64_t lim = mp_read_num(path);
    snprintf(path, sizeof path, "%s/%s", dir, use_name);
    const int64_t use = mp_read_num(path);
    if (lim < 0 || lim >= ((int64_t)1 << 60)) return -1; /* "max", or v1's unlimited */
    return use >= 0 && lim > use ? lim - use : 0;
}

/* The cgroup's room: limit - usage of this process's group (v2 memory.max / memory.current,
 * else v1's memory.limit_in_bytes / memory.usage_in_bytes), looked up at the group's path and,
 * inside a container whose cgroup namespace hides it, at the mount's root; -1 if unlimited or
 * unknown. */
static int64_t mp_cgroup_room(void) {
    char rel[1024] = "", dir[1200];
    int64_t room = -1;
    if (mp_cgroup_path("", rel, sizeof rel)) {
        snprintf(dir, sizeof dir, "/sys/fs/cgroup%s", rel);
        room = mp_room_in(dir, "memory.max", "memory.current");
    }
    if (room < 0 && mp_cgroup_path("memory", rel, sizeof rel)) {
        snprintf(dir, sizeof dir, "/sys/fs/cgroup/memory%s", rel);
        room = mp_room_in(dir, "memory.limit_in_bytes", "memory.usage_in_bytes");
        if (room < 0)
            room = mp_room_in("/sys/fs/cgroup/memory", "memory.limit_in_bytes",
                              "memory.usage_in_bytes");
    }
    return room;
}

int64_t memplan_node_available(void) {
    int64_t avail = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) avail = (int64_t)kb * 1024;
        fclose(f);
    }
    const int64_t room = mp_cgroup_room();
    if (room >= 0 && (avail < 0 || room < avail)) avail = room;
    return avail;
}

void memplan_print(const MemPlan *p, const char *title) {
    log_info("memory estimate %s:", title);
    for (int c = 0; c < MEM_NCATEGORY; c++)
        log_info("  %-10s %12.1f MiB", mem_category_name((MemCategory)c),
                 (double)p->bytes[c] / 1048576.0);
    log_info("  %-10s %12.1f MiB", "total", (double)p->total / 1048576.0);
}
