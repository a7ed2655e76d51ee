/* The Llama-family decoder: loading this rank's shards, forward with a chunked
 * vocab-parallel cross-entropy, and backward (see llama.h; DESIGN.md §3). */
#include "llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/safetensors.h"
#include "../runtime/err.h"
#include "../runtime/log.h"
#include "../runtime/quant.h"

/* ---------------------------------------------------------------- loading */

/* mem_alloc, remembering the block in a growable list (ptrs, sizes, *n of *cap) so that a
 * _free function can release every block of a struct. */
static void *llama_tracked_alloc(MemCtx *mem, MemCategory cat, size_t bytes, void ***ptrs,
                                 size_t **sizes, int *n, int *cap) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        *ptrs = realloc(*ptrs, (size_t)*cap * sizeof **ptrs);
        *sizes = realloc(*sizes, (size_t)*cap * sizeof **sizes);
        SL_CHECK(*ptrs && *sizes, "out of memory");
    }
    void *p = mem_alloc(mem, cat, bytes);
    (*ptrs)[*n] = p;
    (*sizes)[*n] = bytes;
    (*n)++;
    return p;
}

static void *llama_frozen_alloc(LlamaModel *m, MemCtx *mem, size_t bytes) {
    m->frozen_bytes += bytes;
    return llama_tracked_alloc(mem, MEM_FROZEN, bytes, &m->blocks, &m->block_bytes, &m->nblocks,
                               &m->capblocks);
}

static void llama_shape_str(char *buf, size_t n, const StTensor *t) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* Finds `name` and checks its shape is [rows, cols] (cols = 0: 1-D [rows]). */
static const StTensor *llama_find(StDir *d, const char *name, int64_t rows, int64_t cols,
                                  StFile **f, ErrStatus *st) {
    const StTensor *t = st_dir_find(d, name, f);
    if (!t) {
        err_status_set(st, "%s: tensor '%s' is missing from the model files", d->dir, name);
        return NULL;
    }
    int ok = cols ? (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols)
                  : (t->ndim == 1 && t->shape[0] == rows);
    if (!ok) {
        char have[128];
        llama_shape_str(have, sizeof have, t);
        if (cols)
            err_status_set(st, "%s: tensor '%s' has shape %s but config.json implies [%lld, %lld]",
                           (*f)->path, name, have, (long long)rows, (long long)cols);
        else
            err_status_set(st, "%s: tensor '%s' has shape %s but config.json implies [%lld]",
                           (*f)->path, name, have, (long long)rows);
        return NULL;
    }
    if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16) {
        err_status_set(st, "%s: tensor '%s' has dtype %s; weights must be F32, BF16 or F16",
                       (*f)->path, name, st_dtype_name(t->dtype));
        return NULL;
    }
    return t;
}

/* Rows per tile when a shard is converted or quantised while it loads: tiles of about
 * LLAMA_TILE_BYTES of F32, so no rank holds more than that of a weight in full precision. */
#define LLAMA_TILE_BYTES ((int64_t)4 << 20)

/* Reads rows [r0, r0+nr) x cols [c0, c0+nc) of t ([rows, cols]) tile by tile as F32 and
 * stores them in w's format (BF16 rounded, INT8 or NF4 quantised, runtime/quant.h) in w->data /
 * w->scales (allocated by the caller). INT8's scale is per output channel over the whole row,
 * so a shard holding part of each row (o_proj / down_proj at tp > 1) reads whole rows and keeps
 * its columns: every layout stores the same codes. */
static int llama_quant_slice(LlamaModel *m, StFile *f, const StTensor *t, const char *name,
                             int64_t cols, int64_t r0, int64_t nr, int64_t c0, int64_t nc,
                             GemmWeight *w, ErrStatus *st) {
    const QuantFormat fmt = w->dtype == GEMM_BF16   ? QUANT_BF16
                            : w->dtype == GEMM_INT8 ? QUANT_INT8
                                                    : QUANT_NF4;
    const int whole = fmt == QUANT_INT8 && nc < cols; /* read whole rows, keep [c0, c0+nc) */
    const int64_t rc0 = whole ? 0 : c0, rnc = whole ? cols : nc;
    int64_t tr = LLAMA_TILE_BYTES / (rnc * (int64_t)sizeof(float));
    tr = tr < 1 ? 1 : tr > nr ? nr : tr;
    float *tile = malloc((size_t)(tr * rnc) * sizeof(float));
    /* whole rows: their codes [tr, cols] and scales [tr] before the slice is kept */
    int8_t *wcodes = whole ? malloc((size_t)(tr * cols)) : NULL;
    float *wscales = whole ? malloc((size_t)tr * sizeof(float)) : NULL;
    SL_CHECK(tile && (!whole || (wcodes && wscales)), "out of memory (a %lld x %lld tile)",
             (long long)tr, (long long)rnc);
    QuantWeight q = {fmt, nr, nc, (uint8_t *)(uintptr_t)w->data, (float *)(uintptr_t)w->scales};
    int ok = 1;
    for (int64_t r = 0; ok && r < nr; r += tr) {
        const int64_t n = nr - r < tr ? nr - r : tr;
        uint64_t before = f->bytes_read;
        ok = st_read_slice(f, t, r0 + r, n, rc0, rnc, ST_F32, tile, st);
        m->bytes_read += f->bytes_read - before;
        if (!ok) break;
        if (whole) {
            QuantWeight qw = {QUANT_INT8, n, cols, (uint8_t *)wcodes, wscales};
            ok = quant_rows_f32(&qw, 0, n, tile, cols, st);
            for (int64_t a = 0; ok && a < n; a++) {
                memcpy(q.codes + (r + a) * nc, wcodes + a * cols + c0, (size_t)nc);
                q.scales[r + a] = wscales[a];
            }
        } else {
            /* quant_rows_f32 takes row indices of q and src rows from tile */
            ok = quant_rows_f32(&q, r, r + n, tile, nc, st);
        }
        if (!ok) {
            ErrStatus why = *st;
            err_status_set(st, "%s: tensor '%s': %s", f->path, name, why.msg);
        }
    }
    free(tile);
    free(wcodes);
    free(wscales);
    return ok;
}

/* Reads rows [r0, r0+nr) x cols [c0, c0+nc) of a [rows, cols] matrix into frozen memory in
 * the storage dtype `base` (LLAMA_BASE_FILE: BF16 stays BF16, F32 and F16 become F32). */
static int llama_load_matrix(LlamaModel *m, StDir *d, MemCtx *mem, const char *name, int64_t rows,
                             int64_t cols, int64_t r0, int64_t nr, int64_t c0, int64_t nc,
                             GemmWeight *w, ErrStatus *st) {
    StFile *f = NULL;
    const StTensor *t = llama_find(d, name, rows, cols, &f, st);
    if (!t) return 0;
    GemmDtype dt = m->base == LLAMA_BASE_FILE ? (t->dtype == ST_BF16 ? GEMM_BF16 : GEMM_F32)
                                              : (GemmDtype)m->base;
    *w = (GemmWeight){dt, NULL, nr, nc, nc, NULL};
    if (dt == GEMM_INT8 || dt == GEMM_NF4) {
        const QuantFormat fmt = dt == GEMM_INT8 ? QUANT_INT8 : QUANT_NF4;
        ErrStatus why;
        err_status_ok(&why);
        if (!quant_check_shape(fmt, nr, nc, &why))
            return err_status_set(st,
                                  "%s: tensor '%s' (this rank's part [%lld, %lld]) cannot be "
                                  "stored as --base-dtype %s: %s",
                                  f->path, name, (long long)nr, (long long)nc, quant_name(fmt),
                                  why.msg);
        w->data = llama_frozen_alloc(m, mem, quant_codes_bytes(fmt, nr, nc));
        w->scales = llama_frozen_alloc(m, mem, quant_scales_count(fmt, nr, nc) * sizeof(float));
    } else {
        w->data = llama_frozen_alloc(m, mem, (size_t)(nr * nc) * (dt == GEMM_BF16 ? 2 : 4));
    }
    m->dtype_bytes[dt] += gemm_weight_bytes(w);
    if (dt == GEMM_F32 || (dt == GEMM_BF16 && t->dtype == ST_BF16)) {
        /* as stored (F32 from any file dtype; BF16 copied) */
        uint64_t before = f->bytes_read;
        int ok = st_read_slice(f, t, r0, nr, c0, nc, dt == GEMM_BF16 ? ST_BF16 : ST_F32,
                               (void *)(uintptr_t)w->data, st);
        m->bytes_read += f->bytes_read - before;
        return ok;
    }
    return llama_quant_slice(m, f, t, name, cols, r0, nr, c0, nc, w, st);
}

/* A replicated or sliced 1-D tensor as F32: elements [e0, e0+ne) of [n]. */
static float *llama_load_vector(LlamaModel *m, StDir *d, MemCtx *mem, const char *name, int64_t n,
                                int64_t e0, int64_t ne, ErrStatus *st) {
    StFile *f = NULL;
    const StTensor *t = llama_find(d, name, n, 0, &f, st);
    if (!t) return NULL;
    float *dst = llama_frozen_alloc(m, mem, (size_t)ne * sizeof(float));
    m->dtype_bytes[GEMM_F32] += (uint64_t)ne * sizeof(float);
    uint64_t before = f->bytes_read;
    if (!st_read_slice(f, t, 0, 1, e0, ne, ST_F32, dst, st)) return NULL;
    m->bytes_read += f->bytes_read - before;
    return dst;
}

/* What a tensor name the loader did not ask for means: 0 expected or harmless, 1 unknown
 * (warned), -1 a sign that config.json does not describe the file (refused, st set). */
static int llama_classify_extra(const LlamaModel *m, const HfcConfig *c, const char *file,
                                const char *name, ErrStatus *st) {
    if (!strcmp(name, "model.embed_tokens.weight") || !strcmp(name, "model.norm.weight") ||
        !strcmp(name, "lm_head.weight")) /* a tied model may still carry lm_head: unused */
        return 0;
    long long l = -1;
    int at = 0;
    if (sscanf(name, "model.layers.%lld.%n", &l, &at) != 1 || at == 0) return 1;
    if (l < 0 || l >= m->L) {
        err_status_set(st,
                       "%s: tensor '%s' is in layer %lld, but config.json has "
                       "num_hidden_layers %lld",
                       file, name, l, (long long)m->L);
        return -1;
    }
    const char *rest = name + at;
    /* older Llama checkpoints saved the RoPE table; transformers ignores it too */
    if (!strcmp(rest, "self_attn.rotary_emb.inv_freq") || !strcmp(rest, "input_layernorm.weight") ||
        !strcmp(rest, "post_attention_layernorm.weight"))
        return 0;
    char want[128];
    for (int i = 0; i < MOD_NMODULES; i++) {
        snprintf(want, sizeof want, "%s.%s.", adapter_module_group((ModuleId)i),
                 adapter_module_name((ModuleId)i));
        if (strncmp(rest, want, strlen(want)) != 0) continue;
        const char *leaf = rest + strlen(want);
        if (!strcmp(leaf, "weight")) return 0;
        if (strcmp(leaf, "bias") != 0) return 1;
        const int has_bias = (i <= MOD_V && c->qkv_bias) || (i == MOD_O && c->o_bias) ||
                             (i >= MOD_GATE && c->mlp_bias);
        if (has_bias) return 0;
        err_status_set(st,
                       "%s: tensor '%s' is a bias config.json does not enable (%s); the model "
                       "would run without it",
                       file, name, i >= MOD_GATE ? "mlp_bias" : "attention_bias");
        return -1;
    }
    return 1;
}

/* Every tensor of the files is one the model uses (or a known leftover). A layer past
 * num_hidden_layers or a bias the config does not enable is refused: the config does not
 * describe the weights. Anything else is named in one warning and not read. */
static int llama_check_extra(const LlamaModel *m, const HfcConfig *c, const StDir *d,
                             ErrStatus *st) {
    int64_t unknown = 0;
    const char *first = NULL, *first_file = NULL;
    for (int f = 0; f < d->nfiles; f++)
        for (int t = 0; t < d->files[f].ntensors; t++) {
            const char *name = d->files[f].tensors[t].name;
            const int k = llama_classify_extra(m, c, d->files[f].path, name, st);
            if (k < 0) return 0;
            if (k == 1 && unknown++ == 0) {
                first = name;
                first_file = d->files[f].path;
            }
        }
    if (unknown && err_rank() == 0)
        log_warn("%s: %lld tensor%s the model does not use, ignored (first: '%s')", first_file,
                 (long long)unknown, unknown == 1 ? "" : "s", first);
    return 1;
}

static int llama_check_layout(const HfcConfig *c, int tp, ErrStatus *st) {
    if (c->num_heads % tp)
        return err_status_set(st, "--tp %d does not divide num_attention_heads %lld", tp,
                              (long long)c->num_heads);
    if (c->num_kv_heads % tp && tp % c->num_kv_heads)
        return err_status_set(st, "--tp %d and num_key_value_heads %lld: one must divide the other",
                              tp, (long long)c->num_kv_heads);
    if (c->intermediate_size % tp)
        return err_status_set(st, "--tp %d does not divide intermediate_size %lld", tp,
                              (long long)c->intermediate_size);
    return 1;
}

int llama_shape(LlamaModel *m, const HfcConfig *c, int tp, int tp_rank, ErrStatus *st) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->tp = tp;
    m->tp_rank = tp_rank;
    m->pp = 1;
    m->first = m->last = 1;
    if (!llama_check_layout(c, m->tp, st)) return 0;
    m->C = c->hidden_size;
    m->F = c->intermediate_size;
    m->L = c->num_layers;
    m->l1 = m->L;
    m->H = c->num_heads;
    m->KV = c->num_kv_heads;
    m->D = c->head_dim;
    m->V = c->vocab_size;
    m->Hl = m->H / m->tp;
    m->Fl = m->F / m->tp;
    if (m->KV >= m->tp) {
        m->KVl = m->KV / m->tp;
        m->kv0 = m->KVl * m->tp_rank;
    } else { /* kv heads replicated: each rank keeps the one its q heads use */
        m->KVl = 1;
        m->kv0 = (int64_t)m->tp_rank * m->KV / m->tp;
    }
    /* vocabulary rows: an uneven split is fine (e.g. 32001 rows) */
    llama_vocab_range(m->V, m->tp, m->tp_rank, &m->V0, &m->Vl);
    return 1;
}

/* This rank's stage of g->pp: layers [stages[r], stages[r + 1]); refused (st) when the split
 * does not cover the model's layers. */
static int llama_set_stage(LlamaModel *m, const Grid *g, const int64_t *stages, ErrStatus *st) {
    m->pp = g->pp;
    m->pp_rank = g->pp_rank;
    if (g->pp == 1) return 1;
    SL_CHECK(stages, "pp %d without a stage split", g->pp);
    if (stages[0] != 0 || stages[g->pp] != m->L)
        return err_status_set(st,
                              "the %d pipeline stages cover layers [%lld, %lld), but "
                              "config.json has num_hidden_layers %lld",
                              g->pp, (long long)stages[0], (long long)stages[g->pp],
                              (long long)m->L);
    m->l0 = stages[g->pp_rank];
    m->l1 = stages[g->pp_rank + 1];
    SL_CHECK(m->l0 < m->l1, "stage %d holds no layer", g->pp_rank);
    m->first = g->pp_rank == 0;
    m->last = g->pp_rank == g->pp - 1;
    return 1;
}

int llama_load(LlamaModel *m, const char *dir, const Grid *g, int base, const int64_t *stages,
               MemCtx *mem, ErrStatus *st) {
    SL_CHECK(base >= LLAMA_BASE_FILE && base <= GEMM_NF4, "base dtype %d", base);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    HfcConfig cfg;
    memset(m, 0, sizeof *m);
    if (!hfc_load(&cfg, path, st) || !llama_shape(m, &cfg, g->tp, g->tp_rank, st) ||
        !llama_set_stage(m, g, stages, st))
        return 0;
    m->base = base;
    const HfcConfig *c = &m->cfg;

    StDir d;
    if (!st_dir_open(&d, dir, st)) return 0;
    int ok = 0;
    if (!llama_check_extra(m, c, &d, st)) goto done;
    const int64_t C = m->C, D = m->D, HD = m->H * m->D, KD = m->KV * m->D;
    char name[256];
    /* a tied lm_head is the embedding: the last stage holds its own copy (frozen, so the
     * two copies never need a gradient exchange) */
    const int tied = c->tie_word_embeddings;
    if ((m->first || (m->last && tied)) &&
        !llama_load_matrix(m, &d, mem, "model.embed_tokens.weight", m->V, C, m->V0, m->Vl, 0, C,
                           &m->embed, st))
        goto done;
    if (m->last && tied) {
        m->lm_head = m->embed;
    } else if (m->last && !llama_load_matrix(m, &d, mem, "lm_head.weight", m->V, C, m->V0, m->Vl, 0,
                                             C, &m->lm_head, st)) {
        goto done;
    }
    if (m->last && !(m->norm_w = llama_load_vector(m, &d, mem, "model.norm.weight", C, 0, C, st)))
        goto done;
    m->layers = calloc((size_t)m->L, sizeof *m->layers);
    SL_CHECK(m->layers, "out of memory");
    /* every layer's shards (the adapters' shapes); weights only for this stage's layers */
    for (int64_t l = 0; l < m->L; l++) {
        LlamaLayer *ly = &m->layers[l];
        ShardDesc sd[MOD_NMODULES];
        sd[MOD_Q] = shard_rows(HD, C, m->Hl * D * m->tp_rank, m->Hl * D);
        sd[MOD_K] = shard_rows(KD, C, m->kv0 * D, m->KVl * D);
        sd[MOD_V] = sd[MOD_K];
        sd[MOD_O] = shard_even(SHARD_ROW, C, HD, m->tp, m->tp_rank);
        sd[MOD_GATE] = shard_even(SHARD_COL, m->F, C, m->tp, m->tp_rank);
        sd[MOD_UP] = sd[MOD_GATE];
        sd[MOD_DOWN] = shard_even(SHARD_ROW, C, m->F, m->tp, m->tp_rank);
        if (m->tp == 1)
            for (int i = 0; i < MOD_NMODULES; i++)
                sd[i].kind = SHARD_NONE;
        for (int i = 0; i < MOD_NMODULES; i++)
            ly->lin[i].shard = sd[i];
        if (l < m->l0 || l >= m->l1) continue;
        for (int i = 0; i < MOD_NMODULES; i++) {
            Linear *lin = &ly->lin[i];
            snprintf(name, sizeof name, "model.layers.%lld.%s.%s.weight", (long long)l,
                     adapter_module_group((ModuleId)i), adapter_module_name((ModuleId)i));
            if (!llama_load_matrix(m, &d, mem, name, sd[i].out, sd[i].in, sd[i].o0, sd[i].no,
                                   sd[i].i0, sd[i].ni, &lin->w, st))
                goto done;
            int has_bias = (i <= MOD_V && c->qkv_bias) || (i == MOD_O && c->o_bias) ||
                           (i >= MOD_GATE && c->mlp_bias);
            if (has_bias) {
                snprintf(name, sizeof name, "model.layers.%lld.%s.%s.bias", (long long)l,
                         adapter_module_group((ModuleId)i), adapter_module_name((ModuleId)i));
                int row_layer = i == MOD_O || i == MOD_DOWN;
                /* row layers: the bias is replicated and added by TP rank 0 only */
                lin->bias =
                    row_layer
                        ? llama_load_vector(m, &d, mem, name, sd[i].out, 0, sd[i].out, st)
                        : llama_load_vector(m, &d, mem, name, sd[i].out, sd[i].o0, sd[i].no, st);
                if (!lin->bias) goto done;
                lin->add_bias = !row_layer || m->tp_rank == 0;
            }
        }
        if (l == m->l0) m->wdtype = ly->lin[MOD_Q].w.dtype;
        snprintf(name, sizeof name, "model.layers.%lld.input_layernorm.weight", (long long)l);
        if (!(ly->ln1_w = llama_load_vector(m, &d, mem, name, C, 0, C, st))) goto done;
        snprintf(name, sizeof name, "model.layers.%lld.post_attention_layernorm.weight",
                 (long long)l);
        if (!(ly->ln2_w = llama_load_vector(m, &d, mem, name, C, 0, C, st))) goto done;
    }
    m->inv_freq = llama_frozen_alloc(m, mem, (size_t)(D / 2) * sizeof(float));
    m->dtype_bytes[GEMM_F32] += (uint64_t)(D / 2) * sizeof(float);
    KernRopeScaling rs = {c->rope_scaling_type, c->rope_factor, c->rope_low_freq_factor,
                          c->rope_high_freq_factor, c->rope_original_max_position};
    kern_rope_inv_freq(m->inv_freq, D, c->rope_theta, &rs);
    {
        /* what tp does not divide (for the memory report and its test) */
        const uint64_t Ls = (uint64_t)(m->l1 - m->l0);
        uint64_t rep = (2 * Ls + (uint64_t)m->last) * (uint64_t)C * 4 + (uint64_t)(D / 2) * 4;
        if (c->o_bias) rep += Ls * (uint64_t)C * 4;
        if (c->mlp_bias) rep += Ls * (uint64_t)C * 4;
        if (m->KV < m->tp && m->tp > 1)
            rep += Ls * 2 *
                   (gemm_weight_bytes(&m->layers[m->l0].lin[MOD_K].w) +
                    (uint64_t)(m->KVl * D) * (c->qkv_bias ? 4 : 0));
        m->replicated_bytes = rep;
    }
    ok = 1;
done:
    st_dir_close(&d);
    if (!ok) llama_free(m, mem); /* the shards read before the refusal */
    return ok;
}

void llama_init_adapters(LlamaModel *m, const AdapterCfg *acfg, Grid *g, MemCtx *mem) {
    m->acfg = *acfg;
    const AdapterKind *kind = adapter_kind_by_name(acfg->kind);
    SL_CHECK(kind, "unknown adapter kind %s", acfg->kind);
    params_init(&m->params);
    for (int64_t l = m->l0; l < m->l1; l++) {
        for (int i = 0; i < MOD_NMODULES; i++) {
            if (!(acfg->targets & (1u << i))) continue;
            const int64_t k = l * MOD_NMODULES + i;
            const int r = acfg->slot_r ? acfg->slot_r[k] : acfg->r;
            if (r <= 0) continue;
            AdapterSlot *s = &m->layers[l].slot[i];
            s->r = r;
            s->alpha = acfg->slot_alpha ? acfg->slot_alpha[k] : acfg->alpha;
            s->kind = kind;
            s->cfg = &m->acfg;
            s->layer = (int)l;
            s->module = (ModuleId)i;
            s->shard = m->layers[l].lin[i].shard;
            s->lin = &m->layers[l].lin[i];
            s->grid = g;
            s->tp = m->tp;
            int row = i == MOD_O || i == MOD_DOWN, kv = i == MOD_K || i == MOD_V;
            s->in_copies = row ? 1 : m->tp;
            s->out_copies = row ? m->tp : (kv && m->KV < m->tp ? m->tp / (int)m->KV : 1);
            kind->declare(s, &m->params);
            m->layers[l].lin[i].adapter = s;
        }
    }
    if (kind->shared_new) {
        AdapterSlot **slots = calloc((size_t)(m->L * MOD_NMODULES), sizeof *slots);
        SL_CHECK(slots, "out of memory");
        int n = 0;
        for (int64_t l = m->l0; l < m->l1; l++)
            for (int i = 0; i < MOD_NMODULES; i++)
                if (m->layers[l].lin[i].adapter) slots[n++] = m->layers[l].lin[i].adapter;
        m->adapter_shared = kind->shared_new(&m->acfg, slots, n, mem);
        for (int k = 0; k < n; k++)
            slots[k]->shared = m->adapter_shared;
        free(slots);
    }
    params_finalize(&m->params, mem);
    for (int64_t l = m->l0; l < m->l1; l++)
        for (int i = 0; i < MOD_NMODULES; i++)
            if (m->layers[l].lin[i].adapter)
                m->layers[l].slot[i].kind->init(&m->layers[l].slot[i], &m->params);
}

void llama_adapters_step_begin(LlamaModel *m, const AdapterEnv *env) {
    for (int64_t l = m->l0; l < m->l1; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            AdapterSlot *s = m->layers[l].lin[i].adapter;
            if (s && s->kind->step_begin) s->kind->step_begin(s, env);
        }
}

void llama_adapters_grad_post(LlamaModel *m, const AdapterEnv *env) {
    for (int64_t l = m->l0; l < m->l1; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            AdapterSlot *s = m->layers[l].lin[i].adapter;
            if (s && s->kind->grad_post) s->kind->grad_post(s, env);
        }
}

void llama_free(LlamaModel *m, MemCtx *mem) {
    const AdapterKind *kind = NULL;
    for (int64_t l = 0; m->layers && l < m->L; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            AdapterSlot *s = m->layers[l].lin[i].adapter;
            if (!s) continue;
            kind = s->kind;
            if (kind->destroy) kind->destroy(s);
            s->ext = NULL;
        }
    if (kind && kind->shared_free && m->adapter_shared) kind->shared_free(m->adapter_shared, mem);
    if (m->params.e) params_free(&m->params, mem);
    for (int i = 0; i < m->nblocks; i++)
        mem_free(mem, MEM_FROZEN, m->blocks[i], m->block_bytes[i]);
    free(m->blocks);
    free(m->block_bytes);
    free(m->layers);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- buffers */

static float *acts_alloc(LlamaActs *a, MemCtx *mem, size_t floats) {
    size_t bytes = (floats ? floats : 1) * sizeof(float);
    a->bytes += bytes;
    return llama_tracked_alloc(mem, MEM_ACTIVATION, bytes, &a->allocs, &a->alloc_bytes, &a->nallocs,
                               &a->capallocs);
}

/* [L + extra] entries of which [l0, l1 + extra) get buffers of `floats` each, or (one = 1)
 * one buffer they all point at; the other layers' are NULL (another pipeline stage's). */
static float **acts_alloc_layers(LlamaActs *a, const LlamaModel *m, MemCtx *mem, int extra,
                                 size_t floats, int one) {
    float **p = calloc((size_t)(m->L + extra), sizeof *p);
    SL_CHECK(p, "out of memory");
    for (int64_t l = m->l0; l < m->l1 + extra; l++)
        p[l] = one && l > m->l0 ? p[m->l0] : acts_alloc(a, mem, floats);
    return p;
}

int llama_recompute_parse(const char *s) {
    if (strcmp(s, "none") == 0) return LLAMA_RECOMPUTE_NONE;
    if (strcmp(s, "layer") == 0) return LLAMA_RECOMPUTE_LAYER;
    return -1;
}

const char *llama_recompute_name(LlamaRecompute r) {
    return r == LLAMA_RECOMPUTE_LAYER ? "layer" : "none";
}

/* The adapter slots' buffers for N rows. With one (recompute), the slots of a module share
 * those of its slot with the largest rank (the first such layer) when the kind can share
 * (AdapterKind.share); otherwise every slot gets its own. */
static void acts_alloc_adapters(const LlamaModel *m, MemCtx *mem, int64_t N, int one) {
    for (int i = 0; i < MOD_NMODULES; i++) {
        AdapterSlot *owner = NULL;
        for (int64_t l = m->l0; one && l < m->l1; l++) {
            AdapterSlot *s = m->layers[l].lin[i].adapter;
            if (s && s->kind->share && (!owner || s->r > owner->r)) owner = s;
        }
        if (owner) owner->kind->alloc(owner, mem, N);
        for (int64_t l = m->l0; l < m->l1; l++) {
            AdapterSlot *s = m->layers[l].lin[i].adapter;
            if (!s || s == owner) continue;
            if (owner)
                s->kind->share(s, owner);
            else
                s->kind->alloc(s, mem, N);
        }
    }
}

/* The per-layer pointer lists of a (LlamaActs), in LLAMA_ACT_LISTS order: res first. */
static void acts_lists(LlamaActs *a, float ****out) {
    float ***l[LLAMA_ACT_LISTS] = {&a->res, &a->ln1,  &a->ln2, &a->rstd1, &a->rstd2,
                                   &a->q,   &a->k,    &a->v,   &a->att,   &a->lse,
                                   &a->mid, &a->gate, &a->up,  &a->act};
    memcpy(out, l, sizeof l);
}

/* Can every adapter slot of m say what its forward saves (AdapterKind.saves)? */
static int acts_adapters_swappable(const LlamaModel *m) {
    for (int64_t l = m->l0; l < m->l1; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            const AdapterSlot *s = m->layers[l].lin[i].adapter;
            if (s && !s->kind->saves) return 0;
        }
    return 1;
}

/* Sets 1 .. nsets-1 of the adapters' saves (set 0 is what alloc made), without recompute. */
static void acts_alloc_adapter_sets(LlamaActs *a, const LlamaModel *m, MemCtx *mem) {
    for (int64_t l = m->l0; l < m->l1; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            AdapterSlot *s = m->layers[l].lin[i].adapter;
            if (!s) continue;
            AdapterSave sv[ADAPTER_MAX_SAVES];
            const int n = s->kind->saves(s, sv);
            for (int j = 0; j < n; j++) {
                if (a->nswap == a->capswap) {
                    a->capswap = a->capswap ? 2 * a->capswap : 64;
                    a->swap = realloc(a->swap, (size_t)a->capswap * sizeof *a->swap);
                    SL_CHECK(a->swap, "out of memory");
                }
                LlamaSwap *w = &a->swap[a->nswap++];
                w->p = sv[j].p;
                w->buf = calloc((size_t)a->nsets, sizeof *w->buf);
                SL_CHECK(w->buf, "out of memory");
                w->buf[0] = *sv[j].p;
                for (int k = 1; k < a->nsets; k++)
                    w->buf[k] = acts_alloc(a, mem, (size_t)(a->N * sv[j].per_row));
            }
        }
}

void llama_acts_init(LlamaActs *a, const LlamaModel *m, int64_t B, int64_t T, LlamaRecompute rc,
                     int sets, MemCtx *mem) {
    memset(a, 0, sizeof *a);
    SL_CHECK(sets >= 1, "%d sets of activations", sets);
    const size_t N = (size_t)(B * T), C = (size_t)m->C, QD = (size_t)(m->Hl * m->D),
                 KD = (size_t)(m->KVl * m->D), Fl = (size_t)m->Fl;
    /* several micro-batches in flight keep every layer's saves each, unless an adapter kind
     * cannot swap its own (then each layer is recomputed) */
    if (sets > 1 && rc == LLAMA_RECOMPUTE_NONE && !acts_adapters_swappable(m))
        rc = LLAMA_RECOMPUTE_LAYER;
    const int one = rc == LLAMA_RECOMPUTE_LAYER; /* one set of the per-layer buffers */
    a->N = (int64_t)N;
    a->B = B;
    a->T = T;
    a->recompute = rc;
    a->chunk = a->N < 256 ? a->N : 256;
    a->nsets = sets;
    a->res_set = calloc((size_t)sets, sizeof *a->res_set);
    a->lists_set = calloc((size_t)sets, sizeof *a->lists_set);
    SL_CHECK(a->res_set && a->lists_set, "out of memory");
    /* floats per row of each per-layer list (LLAMA_ACT_LISTS order, res first) */
    const size_t per[LLAMA_ACT_LISTS] = {C, C,  C,  1, 1, QD, KD, KD, QD, (size_t)m->Hl,
                                         C, Fl, Fl, Fl};
    for (int k = 0; k < sets; k++) {
        float ***lists[LLAMA_ACT_LISTS];
        acts_lists(a, lists);
        for (int i = 0; i < LLAMA_ACT_LISTS; i++) /* with recompute only res per set */
            *lists[i] = k > 0 && i > 0 && one
                            ? a->lists_set[0][i]
                            : acts_alloc_layers(a, m, mem, i == 0, N * per[i], one && i > 0);
        for (int i = 0; i < LLAMA_ACT_LISTS; i++)
            a->lists_set[k][i] = *lists[i];
        a->res_set[k] = a->res;
    }
    const size_t NL = m->last ? N : 0; /* the final norm and the loss: last stage only */
    a->lnf = acts_alloc(a, mem, NL * C);
    a->rstdf = acts_alloc(a, mem, NL);
    a->dres = acts_alloc(a, mem, N * C);
    a->dmid = acts_alloc(a, mem, N * C);
    a->dln = acts_alloc(a, mem, N * C);
    a->tmpc = acts_alloc(a, mem, N * C);
    a->dq = acts_alloc(a, mem, N * QD);
    a->datt = acts_alloc(a, mem, N * QD);
    a->dk = acts_alloc(a, mem, N * KD);
    a->dv = acts_alloc(a, mem, N * KD);
    a->dgate = acts_alloc(a, mem, N * Fl);
    a->dup = acts_alloc(a, mem, N * Fl);
    a->dact = acts_alloc(a, mem, N * Fl);
    a->logits = acts_alloc(a, mem, m->last ? (size_t)a->chunk * (size_t)m->Vl : 0);
    a->ce_mx = acts_alloc(a, mem, (size_t)a->chunk);
    a->ce_se = acts_alloc(a, mem, (size_t)a->chunk);
    a->ce_tl = acts_alloc(a, mem, (size_t)a->chunk);
    a->ce_w = acts_alloc(a, mem, (size_t)a->chunk);
    acts_alloc_adapters(m, mem, a->N, one);
    if (sets > 1 && !one) acts_alloc_adapter_sets(a, m, mem);
    llama_acts_select(a, 0);
}

void llama_acts_free(LlamaActs *a, const LlamaModel *m, MemCtx *mem) {
    if (a->nsets > 0) llama_acts_select(a, 0); /* the adapters release their own buffers */
    for (int64_t l = m->l0; l < m->l1; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            AdapterSlot *s = m->layers[l].lin[i].adapter;
            if (s && s->acts_of)
                s->kind->share(s, NULL); /* its owner releases them */
            else if (s && s->h)
                s->kind->release(s, mem);
        }
    for (int i = 0; i < a->nallocs; i++)
        mem_free(mem, MEM_ACTIVATION, a->allocs[i], a->alloc_bytes[i]);
    for (int k = 0; k < a->nsets; k++)
        for (int i = 0; i < LLAMA_ACT_LISTS; i++)
            if (k == 0 || a->lists_set[k][i] != a->lists_set[0][i]) free(a->lists_set[k][i]);
    free(a->lists_set);
    free(a->res_set);
    for (int j = 0; j < a->nswap; j++)
        free(a->swap[j].buf);
    free(a->swap);
    free(a->allocs);
    free(a->alloc_bytes);
    memset(a, 0, sizeof *a);
}

void llama_acts_select(LlamaActs *a, int set) {
    SL_CHECK(set >= 0 && set < a->nsets, "set %d of %d", set, a->nsets);
    float ***lists[LLAMA_ACT_LISTS];
    acts_lists(a, lists);
    for (int i = 0; i < LLAMA_ACT_LISTS; i++)
        *lists[i] = a->lists_set[set][i];
    for (int j = 0; j < a->nswap; j++)
        *a->swap[j].p = a->swap[j].buf[set];
}

void llama_batch_init(LlamaBatch *b, const LlamaModel *m, int64_t B, int64_t T, MemCtx *mem) {
    const size_t N = (size_t)(B * T), half = (size_t)(m->D / 2);
    b->B = B;
    b->T = T;
    b->ids = mem_alloc(mem, MEM_OTHER, N * sizeof(int32_t));
    b->targets = mem_alloc(mem, MEM_OTHER, N * sizeof(int32_t));
    b->pos = mem_alloc(mem, MEM_OTHER, N * sizeof(int64_t));
    b->doc_start = mem_alloc(mem, MEM_OTHER, N * sizeof(int32_t));
    b->cos = mem_alloc(mem, MEM_OTHER, N * half * sizeof(float));
    b->sin = mem_alloc(mem, MEM_OTHER, N * half * sizeof(float));
}

void llama_batch_free(LlamaBatch *b, const LlamaModel *m, MemCtx *mem) {
    const size_t N = (size_t)(b->B * b->T), half = (size_t)(m->D / 2);
    mem_free(mem, MEM_OTHER, b->ids, N * sizeof(int32_t));
    mem_free(mem, MEM_OTHER, b->targets, N * sizeof(int32_t));
    mem_free(mem, MEM_OTHER, b->pos, N * sizeof(int64_t));
    mem_free(mem, MEM_OTHER, b->doc_start, N * sizeof(int32_t));
    mem_free(mem, MEM_OTHER, b->cos, N * half * sizeof(float));
    mem_free(mem, MEM_OTHER, b->sin, N * half * sizeof(float));
    memset(b, 0, sizeof *b);
}

void llama_batch_prepare(LlamaBatch *b, const LlamaModel *m, const int64_t *labels) {
    const int64_t T = b->T, half = m->D / 2;
    for (int64_t s = 0; s < b->B; s++) {
        const int64_t o = s * T;
        for (int64_t t = 0; t < T; t++) {
            int64_t lab = t + 1 < T ? labels[o + t + 1] : -100;
            b->targets[o + t] = lab < 0 ? -1 : (int32_t)lab;
        }
        kern_doc_starts(b->doc_start + o, b->pos + o, T);
    }
    kern_rope_tables(b->cos, b->sin, b->pos, b->B * T, m->inv_freq, half);
}

/* ---------------------------------------------------------------- forward */

static void add_into(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

/* Decoder layer l from a->res[l]: saves its activations (a->ln1[l], ...) and the adapters'
 * and, unless `again`, writes its output a->res[l + 1]. again (recompute, in backward): the
 * output exists already, so down_proj runs only for its adapter's saves, into a->tmpc, and
 * is not all-reduced. Every step as in the first run, so the saves are the same bits. */
static void llama_layer_forward(LlamaModel *m, LlamaActs *a, const LlamaBatch *b,
                                const AdapterEnv *env, const KernOps *k, KernCtx *kc, Grid *g,
                                int64_t l, int again) {
    const int64_t N = b->B * b->T, T = b->T, C = m->C, D = m->D;
    const int64_t QD = m->Hl * D, KD = m->KVl * D, Fl = m->Fl;
    const float eps = (float)m->cfg.rms_norm_eps;
    GemmCtx *gc = kc->gemm;
    LlamaLayer *ly = &m->layers[l];
    k->rmsnorm_forward(a->ln1[l], a->rstd1[l], a->res[l], ly->ln1_w, N, C, eps);
    lin_forward(gc, &ly->lin[MOD_Q], env, a->q[l], a->ln1[l], N);
    lin_forward(gc, &ly->lin[MOD_K], env, a->k[l], a->ln1[l], N);
    lin_forward(gc, &ly->lin[MOD_V], env, a->v[l], a->ln1[l], N);
    k->rope_forward(a->q[l], b->cos, b->sin, N, m->Hl, D);
    k->rope_forward(a->k[l], b->cos, b->sin, N, m->KVl, D);
    for (int64_t s = 0; s < b->B; s++)
        k->attention_forward(kc, a->att[l] + s * T * QD, a->lse[l] + s * m->Hl * T,
                             a->q[l] + s * T * QD, a->k[l] + s * T * KD, a->v[l] + s * T * KD,
                             b->doc_start + s * T, T, m->Hl, m->KVl, D);
    lin_forward(gc, &ly->lin[MOD_O], env, a->tmpc, a->att[l], N);
    grid_allreduce_sum_f32(g, g->tp_comm, a->tmpc, (size_t)(N * C), GRID_BYTES_TP);
    memcpy(a->mid[l], a->res[l], (size_t)(N * C) * sizeof(float));
    add_into(a->mid[l], a->tmpc, (size_t)(N * C));

    k->rmsnorm_forward(a->ln2[l], a->rstd2[l], a->mid[l], ly->ln2_w, N, C, eps);
    lin_forward(gc, &ly->lin[MOD_GATE], env, a->gate[l], a->ln2[l], N);
    lin_forward(gc, &ly->lin[MOD_UP], env, a->up[l], a->ln2[l], N);
    k->swiglu_forward(a->act[l], a->gate[l], a->up[l], N * Fl);
    if (again && !ly->lin[MOD_DOWN].adapter) return;
    lin_forward(gc, &ly->lin[MOD_DOWN], env, a->tmpc, a->act[l], N);
    if (again) return;
    grid_allreduce_sum_f32(g, g->tp_comm, a->tmpc, (size_t)(N * C), GRID_BYTES_TP);
    memcpy(a->res[l + 1], a->mid[l], (size_t)(N * C) * sizeof(float));
    add_into(a->res[l + 1], a->tmpc, (size_t)(N * C));
}

double llama_forward(LlamaModel *m, LlamaActs *a, const LlamaBatch *b, float loss_scale,
                     int want_grad, const AdapterEnv *env, const KernOps *k, KernCtx *kc, Grid *g,
                     int64_t *counted) {
    const int64_t N = b->B * b->T, C = m->C;
    const float eps = (float)m->cfg.rms_norm_eps;
    GemmCtx *gc = kc->gemm;
    SL_CHECK(N == a->N, "batch rows %lld != activation rows %lld", (long long)N, (long long)a->N);

    /* embedding: vocab-parallel rows, zeros elsewhere, summed over TP (first stage; the
     * others start from the input the stage before sent) */
    if (m->first) {
        k->embed_forward(a->res[0], &m->embed, b->ids, m->V0, N, C);
        if (m->Vl < m->V)
            grid_allreduce_sum_f32(g, g->tp_comm, a->res[0], (size_t)(N * C), GRID_BYTES_TP);
    }
    for (int64_t l = m->l0; l < m->l1; l++)
        llama_layer_forward(m, a, b, env, k, kc, g, l, 0);
    a->fresh = a->res;
    if (counted) *counted = 0;
    if (!m->last) return 0;
    k->rmsnorm_forward(a->lnf, a->rstdf, a->res[m->L], m->norm_w, N, C, eps);

    /* Chunked vocab-parallel cross-entropy (DESIGN.md §3): the [N, V] logits never exist;
     * each chunk is backpropagated at once into dln (dL/d lnf). */
    double loss = 0;
    int64_t cnt = 0;
    const int64_t Vl = m->Vl;
    for (int64_t c0 = 0; c0 < N; c0 += a->chunk) {
        const int64_t tc = N - c0 < a->chunk ? N - c0 : a->chunk;
        const int32_t *tg = b->targets + c0;
        gemm_xwt(gc, a->logits, a->lnf + c0 * C, &m->lm_head, tc, 0.0f);
        k->ce_max(a->ce_mx, a->logits, tc, Vl);
        grid_allreduce_max_f32(g, g->tp_comm, a->ce_mx, (size_t)tc, GRID_BYTES_TP);
        k->ce_sumexp(a->ce_se, a->logits, a->ce_mx, tc, Vl);
        k->ce_target(a->ce_tl, a->logits, tg, m->V0, tc, Vl);
        if (m->tp > 1) {
            /* one call for both vectors: se and tl are adjacent in a scratch of 2*tc */
            grid_allreduce_sum_f32(g, g->tp_comm, a->ce_se, (size_t)tc, GRID_BYTES_TP);
            grid_allreduce_sum_f32(g, g->tp_comm, a->ce_tl, (size_t)tc, GRID_BYTES_TP);
        }
        for (int64_t t = 0; t < tc; t++) {
            if (tg[t] < 0) {
                a->ce_w[t] = 0.0f;
                continue;
            }
            SL_CHECK(tg[t] < m->V, "label %d out of the vocabulary (%lld)", tg[t], (long long)m->V);
            loss += (double)loss_scale *
                    ((double)logf(a->ce_se[t]) + (double)a->ce_mx[t] - (double)a->ce_tl[t]);
            a->ce_w[t] = loss_scale;
            cnt++;
        }
        if (want_grad) {
            k->ce_backward(a->logits, tg, m->V0, a->ce_mx, a->ce_se, a->ce_w, tc, Vl);
            gemm_xw(gc, a->dln + c0 * C, a->logits, &m->lm_head, tc, 0.0f);
        }
    }
    if (counted) *counted = cnt;
    if (want_grad) {
        if (m->Vl < m->V)
            grid_allreduce_sum_f32(g, g->tp_comm, a->dln, (size_t)(N * C), GRID_BYTES_TP);
        memset(a->dres, 0, (size_t)(N * C) * sizeof(float));
        k->rmsnorm_backward(a->dres, a->dln, a->res[m->L], m->norm_w, a->rstdf, N, C);
    }
    return loss;
}

/* ---------------------------------------------------------------- backward */

void llama_backward(LlamaModel *m, LlamaActs *a, const LlamaBatch *b, const AdapterEnv *env,
                    const KernOps *k, KernCtx *kc, Grid *g, LlamaLayerDone layer_done,
                    void *done_ctx) {
    const int64_t N = b->B * b->T, T = b->T, C = m->C, D = m->D;
    const int64_t QD = m->Hl * D, KD = m->KVl * D, Fl = m->Fl;
    GemmCtx *gc = kc->gemm;
    for (int64_t l = m->l1 - 1; l >= m->l0; l--) {
        LlamaLayer *ly = &m->layers[l];
        /* recompute: the layer's saves again, from its input; the stage's last layer's are
         * still those of llama_forward when no other micro-batch ran forward since */
        if (a->recompute == LLAMA_RECOMPUTE_LAYER && (l < m->l1 - 1 || a->fresh != a->res))
            llama_layer_forward(m, a, b, env, k, kc, g, l, 1);
        /* MLP: a->dres holds dL/d res[l+1] */
        lin_backward(gc, &ly->lin[MOD_DOWN], env, a->dact, a->dres, a->act[l], N, 0.0f);
        memset(a->dgate, 0, (size_t)(N * Fl) * sizeof(float));
        memset(a->dup, 0, (size_t)(N * Fl) * sizeof(float));
        k->swiglu_backward(a->dgate, a->dup, a->dact, a->gate[l], a->up[l], N * Fl);
        lin_backward(gc, &ly->lin[MOD_GATE], env, a->dln, a->dgate, a->ln2[l], N, 0.0f);
        lin_backward(gc, &ly->lin[MOD_UP], env, a->dln, a->dup, a->ln2[l], N, 1.0f);
        grid_allreduce_sum_f32(g, g->tp_comm, a->dln, (size_t)(N * C), GRID_BYTES_TP);
        memcpy(a->dmid, a->dres, (size_t)(N * C) * sizeof(float));
        k->rmsnorm_backward(a->dmid, a->dln, a->mid[l], ly->ln2_w, a->rstd2[l], N, C);

        /* attention: a->dmid holds dL/d mid */
        lin_backward(gc, &ly->lin[MOD_O], env, a->datt, a->dmid, a->att[l], N, 0.0f);
        memset(a->dq, 0, (size_t)(N * QD) * sizeof(float));
        memset(a->dk, 0, (size_t)(N * KD) * sizeof(float));
        memset(a->dv, 0, (size_t)(N * KD) * sizeof(float));
        for (int64_t s = 0; s < b->B; s++)
            k->attention_backward(kc, a->dq + s * T * QD, a->dk + s * T * KD, a->dv + s * T * KD,
                                  a->datt + s * T * QD, a->att[l] + s * T * QD,
                                  a->lse[l] + s * m->Hl * T, a->q[l] + s * T * QD,
                                  a->k[l] + s * T * KD, a->v[l] + s * T * KD, b->doc_start + s * T,
                                  T, m->Hl, m->KVl, D);
        k->rope_backward(a->dq, b->cos, b->sin, N, m->Hl, D);
        k->rope_backward(a->dk, b->cos, b->sin, N, m->KVl, D);
        lin_backward(gc, &ly->lin[MOD_Q], env, a->dln, a->dq, a->ln1[l], N, 0.0f);
        lin_backward(gc, &ly->lin[MOD_K], env, a->dln, a->dk, a->ln1[l], N, 1.0f);
        lin_backward(gc, &ly->lin[MOD_V], env, a->dln, a->dv, a->ln1[l], N, 1.0f);
        grid_allreduce_sum_f32(g, g->tp_comm, a->dln, (size_t)(N * C), GRID_BYTES_TP);
        memcpy(a->dres, a->dmid, (size_t)(N * C) * sizeof(float));
        k->rmsnorm_backward(a->dres, a->dln, a->res[l], ly->ln1_w, a->rstd1[l], N, C);
        if (layer_done) layer_done(done_ctx, (int)l);
    }
    a->fresh = NULL; /* the recomputed layers overwrote the shared buffers */
}

double llama_flops_per_token(const LlamaModel *m, int64_t T, double *n_big, double *dense_attn) {
    const double C = (double)m->C, F = (double)m->F, HD = (double)(m->H * m->D),
                 KD = (double)(m->KV * m->D), V = (double)m->V, L = (double)m->L;
    double nb = L * (C * HD * 2 + C * KD * 2 + 3 * C * F) + V * C; /* + lm_head */
    if (n_big) *n_big = nb;
    double adapter = 0;
    for (int64_t l = m->l0; l < m->l1; l++)
        for (int i = 0; i < MOD_NMODULES; i++)
            if (m->layers[l].lin[i].adapter)
                adapter += m->layers[l].slot[i].kind->flops_per_token(&m->layers[l].slot[i]);
    if (dense_attn) *dense_attn = 12.0 * L * HD * (double)T;
    return 4.0 * nb + 6.0 * L * HD * (double)(T + 1) + adapter;
}

void llama_vocab_range(int64_t V, int tp, int r, int64_t *v0, int64_t *vl) {
    /* ceil(V / tp) without V + tp - 1, and vper * r only when it stays <= V: no overflow
     * even at V = INT64_MAX */
    const int64_t vper = V / tp + (V % tp != 0);
    *v0 = r > 0 && vper > V / r ? V : vper * r;
    *vl = vper <= V - *v0 ? vper : V - *v0;
}

/* ---------------------------------------------------------------- inference */

static float *infer_alloc(LlamaInfer *in, MemCtx *mem, size_t floats) {
    size_t bytes = (floats ? floats : 1) * sizeof(float);
    in->bytes += bytes;
    return llama_tracked_alloc(mem, MEM_ACTIVATION, bytes, &in->allocs, &in->alloc_bytes,
                               &in->nallocs, &in->capallocs);
}

void llama_infer_init(LlamaInfer *in, LlamaModel *m, int64_t S, int64_t Tmax, int64_t R,
                      MemCtx *mem) {
    memset(in, 0, sizeof *in);
    SL_CHECK(S >= 1 && Tmax >= 1 && R >= S, "inference buffers: S %lld, Tmax %lld, R %lld",
             (long long)S, (long long)Tmax, (long long)R);
    const size_t C = (size_t)m->C, QD = (size_t)(m->Hl * m->D), KD = (size_t)(m->KVl * m->D),
                 Fl = (size_t)m->Fl, half = (size_t)(m->D / 2), Rs = (size_t)R;
    in->R = R;
    in->S = S;
    in->Tmax = Tmax;
    /* the cache holds this stage's layers [l0, l1) only, at index l - l0 */
    kvc_init(&in->cache, m->l1 - m->l0, S, Tmax, m->KVl, m->D, mem);
    in->pos = mem_alloc(mem, MEM_OTHER, Rs * sizeof(int64_t));
    in->doc0 = mem_alloc(mem, MEM_OTHER, Rs * sizeof(int32_t)); /* zero-filled */
    in->cos = infer_alloc(in, mem, Rs * half);
    in->sin = infer_alloc(in, mem, Rs * half);
    in->x = infer_alloc(in, mem, Rs * C);
    in->ln = infer_alloc(in, mem, Rs * C);
    in->tmpc = infer_alloc(in, mem, Rs * C);
    in->rstd = infer_alloc(in, mem, Rs);
    in->q = infer_alloc(in, mem, Rs * QD);
    in->att = infer_alloc(in, mem, Rs * QD);
    in->k = infer_alloc(in, mem, Rs * KD);
    in->v = infer_alloc(in, mem, Rs * KD);
    in->lse = infer_alloc(in, mem, (size_t)m->Hl * Rs);
    in->gate = infer_alloc(in, mem, Rs * Fl);
    in->up = infer_alloc(in, mem, Rs * Fl);
    in->act = infer_alloc(in, mem, Rs * Fl);
    in->scores = infer_alloc(in, mem, kvc_scores_floats(R, Tmax, m->Hl, m->KVl));
    const size_t Sl = m->last ? (size_t)S : 0; /* the logits: last stage only */
    in->last = infer_alloc(in, mem, Sl * C);
    in->lastn = infer_alloc(in, mem, Sl * C);
    in->rstd_last = infer_alloc(in, mem, Sl);
    in->logits = infer_alloc(in, mem, Sl * (size_t)m->Vl);
    for (int64_t l = m->l0; l < m->l1; l++)
        for (int i = 0; i < MOD_NMODULES; i++)
            if (m->layers[l].lin[i].adapter) {
                m->layers[l].slot[i].kind->alloc(&m->layers[l].slot[i], mem, R);
                in->adapters_alloc = 1;
            }
}

void llama_infer_free(LlamaInfer *in, LlamaModel *m, MemCtx *mem) {
    for (int64_t l = m->l0; in->adapters_alloc && l < m->l1; l++)
        for (int i = 0; i < MOD_NMODULES; i++)
            if (m->layers[l].slot[i].h)
                m->layers[l].slot[i].kind->release(&m->layers[l].slot[i], mem);
    kvc_free(&in->cache, mem);
    mem_free(mem, MEM_OTHER, in->pos, (size_t)in->R * sizeof(int64_t));
    mem_free(mem, MEM_OTHER, in->doc0, (size_t)in->R * sizeof(int32_t));
    for (int i = 0; i < in->nallocs; i++)
        mem_free(mem, MEM_ACTIVATION, in->allocs[i], in->alloc_bytes[i]);
    free(in->allocs);
    free(in->alloc_bytes);
    memset(in, 0, sizeof *in);
}

void llama_infer_forward(LlamaModel *m, LlamaInfer *in, const LlamaSeg *segs, int nseg,
                         const int32_t *ids, const AdapterEnv *env, const KernOps *k, KernCtx *kc,
                         Grid *g) {
    const int64_t C = m->C, D = m->D, QD = m->Hl * D, KD = m->KVl * D, Fl = m->Fl;
    const float eps = (float)m->cfg.rms_norm_eps;
    GemmCtx *gc = kc->gemm;
    KvCache *cache = &in->cache;
    SL_CHECK(!env->training, "inference runs without dropout");
    SL_CHECK(nseg >= 1 && nseg <= in->S, "%d segments for %lld slots", nseg, (long long)in->S);
    int64_t N = 0;
    for (int i = 0; i < nseg; i++) {
        const LlamaSeg *sg = &segs[i];
        SL_CHECK(sg->slot >= 0 && sg->slot < in->S && sg->n >= 1 &&
                     sg->p0 == cache->len[sg->slot] && sg->p0 + sg->n <= in->Tmax,
                 "segment %d: slot %d positions [%lld, %lld), cached %lld, Tmax %lld", i, sg->slot,
                 (long long)sg->p0, (long long)(sg->p0 + sg->n),
                 (long long)(sg->slot >= 0 && sg->slot < in->S ? cache->len[sg->slot] : -1),
                 (long long)in->Tmax);
        for (int64_t t = 0; t < sg->n; t++)
            in->pos[N + t] = sg->p0 + t;
        N += sg->n;
        cache->len[sg->slot] = sg->p0 + sg->n; /* every layer writes these before reading */
    }
    SL_CHECK(N <= in->R, "%lld rows > %lld", (long long)N, (long long)in->R);
    kern_rope_tables(in->cos, in->sin, in->pos, N, m->inv_freq, D / 2);

    if (m->first) {
        k->embed_forward(in->x, &m->embed, ids, m->V0, N, C);
        if (m->Vl < m->V)
            grid_allreduce_sum_f32(g, g->tp_comm, in->x, (size_t)(N * C), GRID_BYTES_TP);
    }
    for (int64_t l = m->l0; l < m->l1; l++) {
        LlamaLayer *ly = &m->layers[l];
        const int64_t lc = l - m->l0; /* the layer's index in this stage's cache */
        k->rmsnorm_forward(in->ln, in->rstd, in->x, ly->ln1_w, N, C, eps);
        lin_forward(gc, &ly->lin[MOD_Q], env, in->q, in->ln, N);
        lin_forward(gc, &ly->lin[MOD_K], env, in->k, in->ln, N);
        lin_forward(gc, &ly->lin[MOD_V], env, in->v, in->ln, N);
        k->rope_forward(in->q, in->cos, in->sin, N, m->Hl, D);
        k->rope_forward(in->k, in->cos, in->sin, N, m->KVl, D);
        int64_t r0 = 0;
        for (int i = 0; i < nseg; i++) {
            const LlamaSeg *sg = &segs[i];
            kvc_write(cache, lc, sg->slot, sg->p0, sg->n, in->k + r0 * KD, in->v + r0 * KD);
            if (sg->p0 == 0) /* a whole sequence so far: the training kernel, over the cache */
                k->attention_forward(kc, in->att + r0 * QD, in->lse, in->q + r0 * QD,
                                     kvc_keys(cache, lc, sg->slot), kvc_values(cache, lc, sg->slot),
                                     in->doc0, sg->n, m->Hl, m->KVl, D);
            else
                kvc_attention(gc, in->att + r0 * QD, in->q + r0 * QD, cache, lc, sg->slot, sg->p0,
                              sg->n, m->Hl, in->scores);
            r0 += sg->n;
        }
        lin_forward(gc, &ly->lin[MOD_O], env, in->tmpc, in->att, N);
        grid_allreduce_sum_f32(g, g->tp_comm, in->tmpc, (size_t)(N * C), GRID_BYTES_TP);
        add_into(in->x, in->tmpc, (size_t)(N * C));

        k->rmsnorm_forward(in->ln, in->rstd, in->x, ly->ln2_w, N, C, eps);
        lin_forward(gc, &ly->lin[MOD_GATE], env, in->gate, in->ln, N);
        lin_forward(gc, &ly->lin[MOD_UP], env, in->up, in->ln, N);
        k->swiglu_forward(in->act, in->gate, in->up, N * Fl);
        lin_forward(gc, &ly->lin[MOD_DOWN], env, in->tmpc, in->act, N);
        grid_allreduce_sum_f32(g, g->tp_comm, in->tmpc, (size_t)(N * C), GRID_BYTES_TP);
        add_into(in->x, in->tmpc, (size_t)(N * C));
    }
    if (!m->last) return; /* in->x: the rows entering the next stage */
    /* only each segment's last row goes through the final norm and the lm_head */
    int64_t r = 0;
    for (int i = 0; i < nseg; i++) {
        r += segs[i].n;
        memcpy(in->last + i * C, in->x + (r - 1) * C, (size_t)C * sizeof(float));
    }
    k->rmsnorm_forward(in->lastn, in->rstd_last, in->last, m->norm_w, nseg, C, eps);
    gemm_xwt(gc, in->logits, in->lastn, &m->lm_head, nseg, 0.0f);
}

int llama_merge_adapters(LlamaModel *m, GemmCtx *gc, ErrStatus *st) {
    enum { BLOCK = 64 }; /* rows of W merged at a time: a bounded [BLOCK, ni] buffer */
    int merged = 0;
    int64_t maxcols = 0;
    for (int64_t l = m->l0; l < m->l1; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            const Linear *lin = &m->layers[l].lin[i];
            if (!lin->adapter) continue;
            const AdapterKind *kd = lin->adapter->kind;
            if (!kd->merge) {
                err_status_set(st, "adapter kind '%s' has no merge", kd->name);
                return -1;
            }
            if (lin->w.cols > maxcols) maxcols = lin->w.cols;
        }
    float *rows = malloc((size_t)(BLOCK * (maxcols ? maxcols : 1)) * sizeof(float));
    SL_CHECK(rows, "out of memory");
    /* what a kind's step_begin and merge need (GemmCtx's threads) */
    AdapterEnv env;
    memset(&env, 0, sizeof env);
    env.gemm = gc;
    for (int64_t l = m->l0; l < m->l1; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            Linear *lin = &m->layers[l].lin[i];
            AdapterSlot *s = lin->adapter;
            if (!s) continue;
            const int64_t no = lin->w.rows, ni = lin->w.cols, ld = lin->w.ld;
            SL_CHECK(no == s->shard.no && ni == s->shard.ni, "merge: shard shape mismatch");
            /* the kind's formula on F32 blocks of rows (collective over tp_comm when
             * step_begin or merge is: every rank merges the same slots and blocks in the same
             * order) */
            if (s->kind->step_begin) s->kind->step_begin(s, &env);
            for (int64_t o0 = 0; o0 < no; o0 += BLOCK) {
                const int64_t nb = no - o0 < BLOCK ? no - o0 : BLOCK;
                for (int64_t a = 0; a < nb; a++) {
                    float *d = rows + a * ni;
                    if (lin->w.dtype == GEMM_F32)
                        memcpy(d, (const float *)lin->w.data + (o0 + a) * ld,
                               (size_t)ni * sizeof(float));
                    else
                        for (int64_t j = 0; j < ni; j++)
                            d[j] = gemm_bf16_to_f32(
                                ((const uint16_t *)lin->w.data)[(o0 + a) * ld + j]);
                }
                s->kind->merge(s, &env, rows, o0, nb);
                for (int64_t a = 0; a < nb; a++) {
                    const float *d = rows + a * ni;
                    if (lin->w.dtype == GEMM_F32)
                        memcpy((float *)lin->w.data + (o0 + a) * ld, d, (size_t)ni * sizeof(float));
                    else
                        for (int64_t j = 0; j < ni; j++)
                            ((uint16_t *)lin->w.data)[(o0 + a) * ld + j] = gemm_f32_to_bf16(d[j]);
                }
            }
            lin->adapter = NULL;
            merged++;
        }
    free(rows);
    return merged;
}
