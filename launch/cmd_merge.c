/* `shardlora merge`: a PEFT LoRA / DoRA / VeRA adapter merged into the frozen model's weights,
 * written as a complete Hugging Face directory (config and tokenizer files copied; the same
 * safetensors files, tensors, dtypes and header bytes; the index when the input has one).
 *   LoRA: W' = W + s·B A        s = alpha / r (alpha / sqrt(r) with use_rslora), per module
 *                               from rank_pattern / alpha_pattern (peft_module_rank)
 *   DoRA: W' = m ⊙ (W + s·B A) / ||W + s·B A||   (norm per output row; PEFT lora.Linear.merge)
 *   VeRA: W' = W + (lambda_b ⊙ vera_B[:out]) (lambda_d ⊙ vera_A[:, :in])   (PEFT
 *         vera.Linear.get_delta_weight; the projections from the file, or regenerated from
 *         projection_prng_key when it does not save them; every rank holds them whole)
 * computed in F32 and rounded to the tensor's dtype.
 *
 * Scale: runs under mpirun with any number of ranks. Every tensor's rows are split into
 * contiguous ranges over the ranks (independent of any training layout); a rank streams its
 * ranges through buffers of at most --chunk-bytes and writes them with pwrite into
 * OUT/NAME.tmp, which rank 0 created at the final size with the input's header bytes (so the
 * data offsets are the input's). No rank holds more than a chunk of a tensor, never the
 * model (a 70B merge must not need 2x the model in RAM). When every rank is done and has
 * fsynced, rank 0 renames the files into place, config.json last: a failure leaves no
 * half-written model under the final names. Every rank reaches the same verdict at each
 * step (grid_first_failed), so a bad input ends all ranks with one line and no hang. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <jansson.h>

#include "../io/afile.h"
#include "../io/peft.h"
#include "../io/safetensors.h"
#include "../io/stmerge.h"
#include "../model/adapter.h"
#include "../model/vera.h"
#include "../parallel/grid.h"
#include "../runtime/log.h"
#include "../runtime/mem.h"
#include "../runtime/timer.h"
#include "args.h"
#include "cmds.h"
#include "mpicmd.h"

#define MERGE_MIB ((int64_t)1 << 20)
/* st_read_slice converts BF16 / F16 through a staging buffer of at most this (safetensors.c) */
#define MERGE_ST_STAGE ((uint64_t)1 << 20)

/* Copied beside the weights when present; config.json is renamed into place last. */
static const char *const merge_aux_files[] = {
    "generation_config.json", "tokenizer.json",   "tokenizer_config.json", "special_tokens_map.json",
    "tokenizer.model",        "added_tokens.json", "vocab.json",            "merges.txt",
    "chat_template.jinja",    "chat_template.json"};
#define MERGE_NAUX ((int)(sizeof merge_aux_files / sizeof merge_aux_files[0]))

typedef struct {
    const char *model, *adapter, *out;
    int64_t chunk_bytes, threads;
    int force;
} MergeOpts;

/* One tensor of the model, and this rank's share of it. */
typedef struct {
    int file;                  /* index in MergeCtx.d.files */
    const StTensor *t;
    int64_t rows, cols;        /* [rows, cols] view: leading dims folded into rows */
    uint64_t row_bytes;
    int64_t r0, nr;            /* this rank's rows [r0, r0 + nr) */
    /* adapted linears (A != NULL); others are copied byte for byte */
    const StTensor *A, *B, *M; /* lora_A [r, cols], lora_B [rows, r], magnitude [rows] or NULL */
    const StTensor *LD, *LB;   /* VeRA: vera_lambda_d [r], vera_lambda_b [rows] (A, B NULL) */
    int r;
    float scale;
} MergeItem;

typedef struct {
    Grid *g;
    MergeOpts o;
    StDir d;
    int d_open;
    PeftAdapter a;
    int a_open;
    MergeItem *items;
    int nitems, nadapted, ndora, nvera;
    /* VeRA's shared projections, whole, F32: vA [r, vmi], vB [vmo, r] (NULL for LoRA) */
    float *vA, *vB;
    int64_t vmi, vmo;
    uint64_t total_bytes;      /* tensor bytes of every file (what the ranks write together) */
    /* output files, parallel to d.files */
    char **tmp, **dst;
    int *fd;
    int out_created;           /* rank 0 made OUT (removed again on failure if empty) */
    AFile aux[MERGE_NAUX + 2]; /* rank 0: index, aux files, config.json (last) */
    int naux;
    /* buffers, allocated once after the plan (sizes from this rank's share) */
    MemCtx mem;
    float *work;               /* [chunk rows, cols] F32 working rows */
    unsigned char *raw;        /* [raw_bytes] rounded output rows / byte copies */
    float *abuf, *bbuf, *mbuf; /* A [r, cols], B [chunk rows, r], m [chunk rows] */
    size_t work_floats, raw_bytes, a_floats, b_floats, m_floats;
    uint64_t stage_bytes;      /* st_read_slice's conversion buffer, when a read converts */
    /* accounting */
    uint64_t slice_bytes;      /* model bytes this rank writes */
    uint64_t copy_read, written;
} MergeCtx;

/* ---- small helpers ------------------------------------------------------------------- */

/* A field of /proc/self/status in bytes ("VmHWM", "VmRSS"); 0 if unknown. */
static uint64_t merge_status_bytes(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t n = strlen(key);
    uint64_t v = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':') {
            v = (uint64_t)strtoull(line + n + 1, NULL, 10) * 1024u;
            break;
        }
    fclose(f);
    return v;
}

static char *merge_path(const char *dir, const char *name, const char *suffix) {
    size_t n = strlen(dir) + strlen(name) + strlen(suffix) + 2;
    char *p = malloc(n);
    SL_CHECK(p != NULL, "out of memory");
    snprintf(p, n, "%s/%s%s", dir, name, suffix);
    return p;
}

/* One verdict for all ranks: if any failed, the lowest failing rank prints its message and
 * its exit code reaches every rank. Returns 0 when all are ok, else the code. */
static int merge_agree(Grid *g, int ok, const ErrStatus *st, int code) {
    int first = grid_first_failed(g, ok);
    if (first < 0) return 0;
    if (first == g->world_rank) fprintf(stderr, "shardlora merge: error: %s\n", st->msg);
    MPI_Bcast(&code, 1, MPI_INT, first, g->world);
    return code;
}

/* This rank's contiguous share [r0, r0 + nr) of n rows over `size` ranks. */
static void merge_share(int64_t n, int rank, int size, int64_t *r0, int64_t *nr) {
    int64_t a = n * rank / size, b = n * (rank + 1) / size;
    *r0 = a;
    *nr = b - a;
}

static int merge_is_float(StDtype d) {
    return d == ST_F32 || d == ST_BF16 || d == ST_F16;
}

static void merge_shape_str(const StTensor *t, char *buf, size_t n) {
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%" PRId64, i ? ", " : "", t->shape[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
}

/* ---- the plan: which tensors are adapted, checked against the model's shapes --------- */

/* A module an adapter can target: one of the seven linears of a decoder layer
 * ("model.layers.3.self_attn.q_proj"), not the embeddings or lm_head ("all-linear" names
 * every linear, PEFT leaves lm_head out). */
static int merge_adaptable(const char *module) {
    if (!strstr(module, "layers.")) return 0;
    const char *dot = strrchr(module, '.');
    const char *leaf = dot ? dot + 1 : module;
    for (int i = 0; i < MOD_NMODULES; i++)
        if (strcmp(leaf, adapter_module_name((ModuleId)i)) == 0) return 1;
    return 0;
}

/* A targeted module without its tensors: eval and train refuse such a file, and a merge
 * that skipped the module would write a model the adapter does not describe (VeRA: with
 * projections sized without it). */
static int merge_missing(const MergeCtx *m, const char *module, const char *want, ErrStatus *st) {
    return err_status_set(st, "%s: module '%s' is targeted by adapter_config.json (target_modules / "
                              "layers_to_transform) but has no %s", m->a.tensors.path, module, want);
}

/* VeRA's lambdas of one linear (merge_plan_linear's VeRA half). */
static int merge_plan_vera(MergeCtx *m, MergeItem *it, unsigned char *used, const char *module, ErrStatus *st) {
    const StTensor *LD = peft_tensor(&m->a, module, "vera_lambda_d");
    const StTensor *LB = peft_tensor(&m->a, module, "vera_lambda_b");
    const StTensor *base = m->a.tensors.tensors;
    if (LD) used[LD - base] = 1;
    if (LB) used[LB - base] = 1;
    if (!LD && !LB)
        return merge_adaptable(module) && peft_module_targeted(&m->a, module)
                   ? merge_missing(m, module, "vera_lambda_d / vera_lambda_b", st)
                   : 1;
    const char *ap = m->a.tensors.path;
    if (!peft_module_targeted(&m->a, module))
        return err_status_set(st, "%s: tensor '%s' is for module '%s', which adapter_config.json does not "
                                  "target (target_modules / exclude_modules / layers_to_transform)",
                              ap, LD ? LD->name : LB->name, module);
    if (!LD || !LB)
        return err_status_set(st, "%s: module '%s' has %s but no %s", ap, module, LD ? LD->name : LB->name,
                              LD ? "vera_lambda_b" : "vera_lambda_d");
    const StTensor *chk[2] = {LD, LB};
    const int64_t want[2] = {m->a.r, it->rows};
    for (int i = 0; i < 2; i++) {
        if (!merge_is_float(chk[i]->dtype))
            return err_status_set(st, "%s: tensor '%s': dtype %s (expected F32, BF16 or F16)", ap, chk[i]->name,
                                  st_dtype_name(chk[i]->dtype));
        if (chk[i]->ndim != 1 || chk[i]->shape[0] != want[i]) {
            char got[96], mshape[96];
            merge_shape_str(chk[i], got, sizeof got);
            merge_shape_str(it->t, mshape, sizeof mshape);
            return err_status_set(st, "%s: tensor '%s' has shape %s, but it must be [%" PRId64 "] (r = %d, the model's "
                                      "'%s' is %s): adapter for another model?",
                                  ap, chk[i]->name, got, want[i], m->a.r, it->t->name, mshape);
        }
    }
    if (!merge_is_float(it->t->dtype))
        return err_status_set(st, "%s: tensor '%s': dtype %s cannot take an adapter", m->d.files[it->file].path,
                              it->t->name, st_dtype_name(it->t->dtype));
    it->LD = LD;
    it->LB = LB;
    it->r = m->a.r;
    it->scale = 1.0f;
    if (it->cols > m->vmi) m->vmi = it->cols;
    if (it->rows > m->vmo) m->vmo = it->rows;
    m->nadapted++;
    m->nvera++;
    return 1;
}

/* VeRA's projections after the plan: read whole from the file (base_model.vera_A / vera_B,
 * which must cover every adapted module), or, when the adapter does not save them (PEFT
 * then ignores any in the file), regenerated from projection_prng_key with the sizes PEFT's
 * _find_dim gives (the maxima over the targeted modules, each of which has lambdas). */
static int merge_vera_projections(MergeCtx *m, unsigned char *used, ErrStatus *st) {
    const char *ap = m->a.tensors.path;
    const StTensor *tA = st_find(&m->a.tensors, "base_model.vera_A"), *tB = st_find(&m->a.tensors, "base_model.vera_B");
    const StTensor *base = m->a.tensors.tensors;
    const int r = m->a.r;
    if (tA) used[tA - base] = 1;
    if (tB) used[tB - base] = 1;
    if (!m->a.save_projection) { /* PEFT's buffers are then not loaded from the file: regenerated */
        m->vA = malloc((size_t)r * (size_t)m->vmi * sizeof(float));
        m->vB = malloc((size_t)m->vmo * (size_t)r * sizeof(float));
        SL_CHECK(m->vA && m->vB, "out of memory");
        vera_proj_fill(m->vA, m->vB, m->a.projection_prng_key, r, m->vmi, m->vmo);
        return 1;
    }
    if (!tA && !tB)
        return err_status_set(st, "%s: save_projection is true but base_model.vera_A and base_model.vera_B are "
                                  "absent (PEFT refuses such a file too)", ap);
    if (!tA || !tB)
        return err_status_set(st, "%s: %s without %s: the file is incomplete", ap,
                              tA ? "base_model.vera_A" : "base_model.vera_B", tA ? "base_model.vera_B" : "base_model.vera_A");
    if (tA->ndim != 2 || tA->shape[0] != r || tA->shape[1] < m->vmi || tB->ndim != 2 || tB->shape[1] != r ||
        tB->shape[0] < m->vmo || !merge_is_float(tA->dtype) || !merge_is_float(tB->dtype)) {
        char ga[96], gb[96];
        merge_shape_str(tA, ga, sizeof ga);
        merge_shape_str(tB, gb, sizeof gb);
        return err_status_set(st, "%s: base_model.vera_A %s %s and base_model.vera_B %s %s do not cover r = %d and the "
                                  "adapted modules (need [%d, >= %" PRId64 "] and [>= %" PRId64 ", %d], float)",
                              ap, ga, st_dtype_name(tA->dtype), gb, st_dtype_name(tB->dtype), r, r, m->vmi, m->vmo, r);
    }
    m->vmi = tA->shape[1];
    m->vmo = tB->shape[0];
    m->vA = malloc((size_t)r * (size_t)m->vmi * sizeof(float));
    m->vB = malloc((size_t)m->vmo * (size_t)r * sizeof(float));
    SL_CHECK(m->vA && m->vB, "out of memory");
    return st_read_all(&m->a.tensors, tA, ST_F32, m->vA, st) && st_read_all(&m->a.tensors, tB, ST_F32, m->vB, st);
}

/* Looks up the adapter tensors of a linear's weight and checks them (names every key). */
static int merge_plan_linear(MergeCtx *m, MergeItem *it, unsigned char *used, ErrStatus *st) {
    const StTensor *t = it->t;
    size_t n = strlen(t->name);
    if (t->ndim != 2 || n < 8 || strcmp(t->name + n - 7, ".weight") != 0) return 1;
    char module[1024];
    if (n - 7 >= sizeof module) return 1;
    memcpy(module, t->name, n - 7);
    module[n - 7] = 0;
    if (m->a.vera) return merge_plan_vera(m, it, used, module, st);
    const StTensor *A = peft_tensor(&m->a, module, "lora_A");
    const StTensor *B = peft_tensor(&m->a, module, "lora_B");
    const StTensor *M = peft_tensor(&m->a, module, "lora_magnitude_vector");
    const StTensor *base = m->a.tensors.tensors;
    if (A) used[A - base] = 1;
    if (B) used[B - base] = 1;
    if (M) used[M - base] = 1;
    if (!A && !B && !M)
        return merge_adaptable(module) && peft_module_targeted(&m->a, module)
                   ? merge_missing(m, module, "lora_A / lora_B", st)
                   : 1;
    const char *ap = m->a.tensors.path;
    /* PEFT would not put a layer there and would drop these tensors with a warning; a merge
     * that silently did the same would hide a mismatched adapter */
    if (!peft_module_targeted(&m->a, module))
        return err_status_set(st, "%s: tensor '%s' is for module '%s', which adapter_config.json does not "
                                  "target (target_modules / exclude_modules / layers_to_transform)",
                              ap, A ? A->name : B ? B->name : M->name, module);
    if (!A || !B)
        return err_status_set(st, "%s: module '%s' has %s but no %s", ap, module,
                              A ? A->name : B ? B->name : M->name, A ? "lora_B" : "lora_A");
    if (M && !m->a.use_dora)
        return err_status_set(st, "%s: tensor '%s': a DoRA magnitude, but adapter_config.json has use_dora false",
                              ap, M->name);
    if (!M && m->a.use_dora)
        return err_status_set(st, "%s: module '%s' has no lora_magnitude_vector, but adapter_config.json has use_dora true",
                              ap, module);
    int r = 0;
    double alpha = 0;
    peft_module_rank(&m->a, module, &r, &alpha);
    char got[96], mshape[96];
    merge_shape_str(t, mshape, sizeof mshape);
    const StTensor *chk[3] = {A, B, M};
    for (int i = 0; i < 3; i++) {
        if (!chk[i]) continue;
        if (!merge_is_float(chk[i]->dtype))
            return err_status_set(st, "%s: tensor '%s': dtype %s (expected F32, BF16 or F16)", ap,
                                  chk[i]->name, st_dtype_name(chk[i]->dtype));
        merge_shape_str(chk[i], got, sizeof got);
        int64_t want0 = i == 0 ? r : it->rows, want1 = i == 0 ? it->cols : r;
        int good = i == 2 ? (chk[i]->ndim == 1 && chk[i]->shape[0] == it->rows)
                          : (chk[i]->ndim == 2 && chk[i]->shape[0] == want0 && chk[i]->shape[1] == want1);
        if (good) continue;
        char want[96];
        if (i == 2)
            snprintf(want, sizeof want, "[%" PRId64 "]", it->rows);
        else
            snprintf(want, sizeof want, "[%" PRId64 ", %" PRId64 "]", want0, want1);
        return err_status_set(st,
                              "%s: tensor '%s' has shape %s, but the model's '%s' is %s, so it must be "
                              "%s (r = %d for this module): adapter for another model?",
                              ap, chk[i]->name, got, t->name, mshape, want, r);
    }
    if (!merge_is_float(t->dtype))
        return err_status_set(st, "%s: tensor '%s': dtype %s cannot take an adapter", m->d.files[it->file].path,
                              t->name, st_dtype_name(t->dtype));
    it->A = A;
    it->B = B;
    it->M = M;
    it->r = r;
    it->scale = (float)(m->a.use_rslora ? alpha / sqrt((double)r) : alpha / (double)r);
    m->nadapted++;
    m->ndora += M != NULL;
    return 1;
}

static int merge_cmp_begin(const void *x, const void *y) {
    const MergeItem *a = x, *b = y;
    if (a->file != b->file) return a->file - b->file;
    return (a->t->begin > b->t->begin) - (a->t->begin < b->t->begin);
}

/* A weight file's name relative to the model directory (as the index names it). */
static const char *merge_file_name(const MergeCtx *m, int f) {
    size_t n = strlen(m->d.dir);
    return m->d.files[f].path + n + (n > 0 && m->d.dir[n - 1] != '/');
}

/* Every rank builds the same plan from the headers alone. */
static int merge_plan(MergeCtx *m, ErrStatus *st) {
    int n = 0;
    for (int f = 0; f < m->d.nfiles; f++) {
        n += m->d.files[f].ntensors;
        if (strchr(merge_file_name(m, f), '/'))
            return err_status_set(st, "%s: weight file '%s' is in a subdirectory; merge writes flat model directories",
                                  m->o.model, merge_file_name(m, f));
    }
    m->items = calloc((size_t)(n ? n : 1), sizeof *m->items);
    unsigned char *used = calloc((size_t)m->a.tensors.ntensors + 1, 1);
    SL_CHECK(m->items && used, "out of memory");
    for (int f = 0; f < m->d.nfiles; f++) {
        const StFile *sf = &m->d.files[f];
        for (int k = 0; k < sf->ntensors; k++) {
            m->total_bytes += sf->tensors[k].end - sf->tensors[k].begin;
            MergeItem *it = &m->items[m->nitems++];
            it->file = f;
            it->t = &sf->tensors[k];
            it->cols = it->t->ndim ? it->t->shape[it->t->ndim - 1] : 1;
            it->rows = 1;
            for (int i = 0; i + 1 < it->t->ndim; i++) it->rows *= it->t->shape[i];
            it->row_bytes = (uint64_t)it->cols * st_dtype_size(it->t->dtype);
            merge_share(it->rows, m->g->world_rank, m->g->world_size, &it->r0, &it->nr);
        }
    }
    qsort(m->items, (size_t)m->nitems, sizeof *m->items, merge_cmp_begin);
    int ok = 1;
    for (int i = 0; ok && i < m->nitems; i++) ok = merge_plan_linear(m, &m->items[i], used, st);
    if (ok && m->a.vera && m->nvera > 0) ok = merge_vera_projections(m, used, st);
    for (int i = 0; ok && i < m->a.tensors.ntensors; i++)
        if (!used[i])
            ok = err_status_set(st,
                                "%s: tensor '%s' matches no linear weight of the model in %s: adapter "
                                "for another model, or a kind of adapter tensor merge does not support",
                                m->a.tensors.path, m->a.tensors.tensors[i].name, m->o.model);
    if (ok && m->nadapted == 0)
        ok = err_status_set(st, "%s: the adapter has no tensors to merge", m->a.tensors.path);
    free(used);
    return ok;
}

/* Buffer sizes from this rank's share: a chunk of rows never exceeds --chunk-bytes in F32
 * (but holds at least one row), a byte copy never exceeds --chunk-bytes. */
static int64_t merge_chunk_rows(const MergeCtx *m, const MergeItem *it) {
    if (it->cols == 0) return it->nr;
    int64_t cr = m->o.chunk_bytes / (int64_t)(it->cols * (int64_t)sizeof(float));
    if (cr < 1) cr = 1;
    return cr < it->nr ? cr : it->nr;
}

static void merge_alloc(MergeCtx *m) {
    size_t work = 0, raw = 0, a = 0, b = 0, mm = 0;
    uint64_t stage = 0;
    for (int i = 0; i < m->nitems; i++) {
        const MergeItem *it = &m->items[i];
        m->slice_bytes += (uint64_t)it->nr * it->row_bytes;
        if (it->nr == 0) continue;
        if (it->A || it->LD) {
            size_t cr = (size_t)merge_chunk_rows(m, it);
            if (cr * (size_t)it->cols > work) work = cr * (size_t)it->cols;
            if (it->t->dtype != ST_F32 && cr * (size_t)it->cols * 2 > raw) raw = cr * (size_t)it->cols * 2;
            /* VeRA: A's floats, then lambda_d [r] */
            const size_t af = (size_t)it->r * (size_t)it->cols + (it->LD ? (size_t)it->r : 0);
            if (af > a) a = af;
            if (cr * (size_t)it->r > b) b = cr * (size_t)it->r;
            if ((it->M || it->LB) && cr > mm) mm = cr;
            const StTensor *in[4] = {it->A, it->B, it->M ? it->M : it->LD, it->LB};
            if (it->t->dtype != ST_F32) stage = MERGE_ST_STAGE;
            for (int k = 0; k < 4; k++)
                if (in[k] && in[k]->dtype != ST_F32) stage = MERGE_ST_STAGE;
        } else {
            uint64_t c = (uint64_t)it->nr * it->row_bytes;
            if (c > (uint64_t)m->o.chunk_bytes) c = (uint64_t)m->o.chunk_bytes;
            if (c > raw) raw = (size_t)c;
        }
    }
    /* rank 0 also copies the headers, the bytes between tensors and the small files */
    size_t floor = m->o.chunk_bytes < 256 * 1024 ? (size_t)m->o.chunk_bytes : 256 * 1024;
    if (m->g->world_rank == 0 && raw < floor) raw = floor;
    if (raw < 4096) raw = 4096;
    mem_init(&m->mem, MEM_PIN_OFF);
    m->work_floats = work;
    m->raw_bytes = raw;
    m->a_floats = a;
    m->b_floats = b;
    m->m_floats = mm;
    m->stage_bytes = stage;
    m->work = mem_alloc(&m->mem, MEM_OTHER, work * sizeof(float));
    m->raw = mem_alloc(&m->mem, MEM_OTHER, raw);
    m->abuf = mem_alloc(&m->mem, MEM_OTHER, a * sizeof(float));
    m->bbuf = mem_alloc(&m->mem, MEM_OTHER, b * sizeof(float));
    m->mbuf = mem_alloc(&m->mem, MEM_OTHER, mm * sizeof(float));
}

static uint64_t merge_buffer_bytes(const MergeCtx *m) {
    return (uint64_t)(m->work_floats + m->a_floats + m->b_floats + m->m_floats) * sizeof(float) +
           m->raw_bytes + m->stage_bytes + (uint64_t)m->a.r * (uint64_t)(m->vmi + m->vmo) * (m->vA ? sizeof(float) : 0);
}

static void merge_free(MergeCtx *m) {
    mem_free(&m->mem, MEM_OTHER, m->work, m->work_floats * sizeof(float));
    mem_free(&m->mem, MEM_OTHER, m->raw, m->raw_bytes);
    mem_free(&m->mem, MEM_OTHER, m->abuf, m->a_floats * sizeof(float));
    mem_free(&m->mem, MEM_OTHER, m->bbuf, m->b_floats * sizeof(float));
    mem_free(&m->mem, MEM_OTHER, m->mbuf, m->m_floats * sizeof(float));
    for (int f = 0; m->fd && f < m->d.nfiles; f++) {
        if (m->fd[f] >= 0) close(m->fd[f]);
        free(m->tmp[f]);
        free(m->dst[f]);
    }
    free(m->fd);
    free(m->tmp);
    free(m->dst);
    free(m->items);
    free(m->vA);
    free(m->vB);
    if (m->a_open) peft_close(&m->a);
    if (m->d_open) st_dir_close(&m->d);
}

/* ---- output files -------------------------------------------------------------------- */

/* Copies bytes [off, off + len) of src_fd to the same offset of dst_fd through m->raw. */
static int merge_copy_range(MergeCtx *m, int src_fd, const char *src, int dst_fd, const char *dst,
                            uint64_t off, uint64_t len, ErrStatus *st) {
    while (len > 0) {
        size_t k = len < m->raw_bytes ? (size_t)len : m->raw_bytes;
        if (!stm_pread_full(src_fd, src, m->raw, k, off, st) ||
            !stm_pwrite_full(dst_fd, dst, m->raw, k, off, st))
            return 0;
        m->copy_read += k;
        m->written += k;
        off += k;
        len -= k;
    }
    return 1;
}

/* Rank 0: OUT/NAME.tmp per weight file at the final size, with the input's header bytes and
 * every byte not inside a tensor (padding) already in place. */
static int merge_create_weights(MergeCtx *m, ErrStatus *st) {
    for (int f = 0; f < m->d.nfiles; f++) {
        StFile *sf = &m->d.files[f];
        int fd = open(m->tmp[f], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) return err_status_set(st, "%s: cannot create: %s", m->tmp[f], strerror(errno));
        m->fd[f] = fd;
        if (ftruncate(fd, (off_t)sf->file_size) != 0)
            return err_status_set(st, "%s: cannot set the size to %" PRIu64 " bytes: %s", m->tmp[f],
                                  sf->file_size, strerror(errno));
        if (!merge_copy_range(m, sf->fd, sf->path, fd, m->tmp[f], 0, sf->data_start, st)) return 0;
        /* gaps: the items of file f are sorted by offset */
        uint64_t at = sf->data_start;
        for (int i = 0; i < m->nitems; i++) {
            const MergeItem *it = &m->items[i];
            if (it->file != f || it->t->begin == it->t->end) continue;
            if (it->t->begin > at &&
                !merge_copy_range(m, sf->fd, sf->path, fd, m->tmp[f], at, it->t->begin - at, st))
                return 0;
            if (it->t->end > at) at = it->t->end;
        }
        if (sf->file_size > at &&
            !merge_copy_range(m, sf->fd, sf->path, fd, m->tmp[f], at, sf->file_size - at, st))
            return 0;
    }
    return 1;
}

/* Rank 0: the index and the config / tokenizer files, copied to OUT/NAME.tmp (renamed with
 * the weights). config.json is required and goes last. */
static int merge_copy_small(MergeCtx *m, const char *name, int required, ErrStatus *st) {
    char *src = merge_path(m->o.model, name, "");
    char *dst = merge_path(m->o.out, name, "");
    int ok = 1;
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (required || errno != ENOENT) ok = err_status_set(st, "%s: cannot open: %s", src, strerror(errno));
        goto done;
    }
    AFile *af = &m->aux[m->naux];
    if (!afile_open(af, dst, st)) {
        ok = 0;
        goto done;
    }
    m->naux++;
    ssize_t got;
    while (ok && (got = read(fd, m->raw, m->raw_bytes)) != 0) {
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            ok = err_status_set(st, "%s: read failed: %s", src, strerror(errno));
            break;
        }
        ok = afile_write(af, m->raw, (size_t)got, st);
        if (!ok) m->naux--; /* afile_write aborted it */
        else m->written += (uint64_t)got;
    }
done:
    if (fd >= 0) close(fd);
    free(src);
    free(dst);
    return ok;
}

static int merge_prepare_out(MergeCtx *m, ErrStatus *st) {
    struct stat sb;
    if (stat(m->o.out, &sb) != 0) {
        if (!afile_mkdirs(m->o.out))
            return err_status_set(st, "%s: cannot create the output directory: %s", m->o.out, strerror(errno));
        m->out_created = 1;
    }
    struct statvfs vs;
    if (statvfs(m->o.out, &vs) == 0) {
        uint64_t avail = (uint64_t)vs.f_bavail * (uint64_t)vs.f_frsize, need = 0;
        for (int f = 0; f < m->d.nfiles; f++) need += m->d.files[f].file_size;
        if (avail < need)
            return err_status_set(st, "%s: %.1f MB free, the merged model needs %.1f MB", m->o.out,
                                  (double)avail / 1e6, (double)need / 1e6);
    }
    if (!merge_create_weights(m, st)) return 0;
    if (!merge_copy_small(m, "model.safetensors.index.json", 0, st)) return 0;
    for (int i = 0; i < MERGE_NAUX; i++)
        if (!merge_copy_small(m, merge_aux_files[i], 0, st)) return 0;
    return merge_copy_small(m, "config.json", 1, st);
}

/* Rank 0 after a failure: no .tmp file stays, nor an OUT this run made. */
static void merge_discard(MergeCtx *m) {
    if (m->g->world_rank != 0 || !m->tmp) return;
    for (int f = 0; f < m->d.nfiles; f++) unlink(m->tmp[f]);
    for (int i = 0; i < m->naux; i++) afile_abort(&m->aux[i]);
    m->naux = 0;
    if (m->out_created) rmdir(m->o.out);
}

/* Rank 0 once every rank has fsynced: weights, then the index and tokenizer files, then
 * config.json, each renamed into place; then the directory is fsynced. */
static int merge_commit(MergeCtx *m, ErrStatus *st) {
    if (m->o.force) {
        /* an older model in OUT stops being one before its first file is replaced */
        char *p = merge_path(m->o.out, "config.json", "");
        unlink(p);
        free(p);
        p = merge_path(m->o.out, "model.safetensors.index.json", "");
        unlink(p);
        free(p);
    }
    for (int f = 0; f < m->d.nfiles; f++) {
        if (fsync(m->fd[f]) != 0)
            return err_status_set(st, "%s: fsync failed: %s", m->tmp[f], strerror(errno));
        if (rename(m->tmp[f], m->dst[f]) != 0)
            return err_status_set(st, "%s: cannot rename %s into place: %s", m->dst[f], m->tmp[f],
                                  strerror(errno));
    }
    for (int i = 0; i < m->naux; i++) {
        int ok = afile_commit(&m->aux[i], st);
        if (!ok) {
            for (int j = i + 1; j < m->naux; j++) afile_abort(&m->aux[j]);
            m->naux = 0;
            return 0;
        }
    }
    m->naux = 0;
    return afile_fsync_dir(m->dst[0], st);
}

/* ---- the work ------------------------------------------------------------------------ */

/* This rank's rows of one tensor. On failure *code is EXIT_IO, or EXIT_BAD_INPUT when the
 * adapter's values are broken. */
static int merge_item(MergeCtx *m, const MergeItem *it, int *code, ErrStatus *st) {
    *code = EXIT_IO;
    if (it->nr == 0) return 1;
    StFile *sf = &m->d.files[it->file];
    const int fd = m->fd[it->file];
    const char *out = m->tmp[it->file];
    if (!it->A && !it->LD)
        return merge_copy_range(m, sf->fd, sf->path, fd, out, it->t->begin + (uint64_t)it->r0 * it->row_bytes,
                                (uint64_t)it->nr * it->row_bytes, st);
    StFile *af = &m->a.tensors;
    const int64_t r = it->r;
    if (it->LD) {
        /* VeRA as a rank-r LoRA with s = 1: A = lambda_d ⊙ vera_A[:, :cols] (row k scaled by
         * lambda_d[k]), B rows = lambda_b[o] ⊙ vera_B[o] (PEFT's get_delta_weight products) */
        float *ld = m->abuf + r * it->cols;
        if (!st_read_all(af, it->LD, ST_F32, ld, st)) return 0;
        for (int64_t k = 0; k < r; k++)
            for (int64_t i = 0; i < it->cols; i++) m->abuf[k * it->cols + i] = ld[k] * m->vA[k * m->vmi + i];
    } else if (!st_read_all(af, it->A, ST_F32, m->abuf, st)) {
        return 0;
    }
    const int64_t cr = merge_chunk_rows(m, it), end = it->r0 + it->nr;
    for (int64_t row = it->r0; row < end; row += cr) {
        const int64_t k = end - row < cr ? end - row : cr;
        const size_t n = (size_t)(k * it->cols);
        if (!st_read_slice(sf, it->t, row, k, 0, it->cols, ST_F32, m->work, st)) return 0;
        if (it->LB) {
            if (!st_read_slice(af, it->LB, 0, 1, row, k, ST_F32, m->mbuf, st)) return 0;
            for (int64_t o = 0; o < k; o++)
                for (int64_t q = 0; q < r; q++) m->bbuf[o * r + q] = m->mbuf[o] * m->vB[(row + o) * r + q];
        } else if (!st_read_slice(af, it->B, row, k, 0, it->r, ST_F32, m->bbuf, st) ||
                   (it->M && !st_read_slice(af, it->M, 0, 1, row, k, ST_F32, m->mbuf, st))) {
            return 0;
        }
        int64_t bad = stm_merge_rows(m->work, k, it->cols, m->abuf, m->bbuf, it->r, it->scale,
                                     it->M ? m->mbuf : NULL, (int)m->o.threads);
        if (bad) {
            *code = EXIT_BAD_INPUT;
            return err_status_set(st,
                                  "%s: tensor '%s': %" PRId64 " merged row(s) in [%" PRId64 ", %" PRId64
                                  ") are not finite%s; the adapter (%s) seems broken",
                                  sf->path, it->t->name, bad, row, row + k,
                                  it->M ? " or have a zero norm" : "", it->A ? it->A->name : it->LD->name);
        }
        const void *src = m->work;
        if (it->t->dtype != ST_F32) {
            stm_from_f32(m->raw, it->t->dtype, m->work, n);
            src = m->raw;
        }
        size_t bytes = n * st_dtype_size(it->t->dtype);
        if (!stm_pwrite_full(fd, out, src, bytes, it->t->begin + (uint64_t)row * it->row_bytes, st)) return 0;
        m->written += bytes;
    }
    return 1;
}

/* Prints "done/total MB, MB/s" on rank 0 at most once a second (and at the end). */
static void merge_progress(const MergeCtx *m, uint64_t done, double t0, double *last, int final) {
    double now = timer_now();
    if (m->g->world_rank != 0 || (!final && now - *last < 1.0)) return;
    *last = now;
    double el = now - t0;
    printf("merge: %.1f / %.1f MB (%.0f%%), %.1f MB/s, %.1f s\n", (double)done / 1e6,
           (double)m->total_bytes / 1e6, m->total_bytes ? 100.0 * (double)done / (double)m->total_bytes : 100.0,
           el > 0 ? (double)done / 1e6 / el : 0.0, el);
    fflush(stdout);
}

/* Every rank: its share of every tensor, agreeing after each tensor (so a failure on one
 * rank stops all of them at the same point) and summing the progress. */
static int merge_run(MergeCtx *m, double *seconds) {
    ErrStatus st;
    err_status_ok(&st);
    double t0 = timer_now(), last = t0;
    uint64_t header_bytes = m->written; /* rank 0: headers and padding, already copied */
    for (int i = 0; i < m->nitems; i++) {
        int code = 0;
        int ok = merge_item(m, &m->items[i], &code, &st);
        int rc = merge_agree(m->g, ok, &st, code);
        if (rc) return rc;
        int64_t done = (int64_t)(m->written - header_bytes);
        grid_allreduce_sum_i64(m->g, m->g->world, &done, 1, GRID_BYTES_OTHER);
        merge_progress(m, (uint64_t)done, t0, &last, i + 1 == m->nitems);
    }
    /* each rank makes its own writes durable (on a cluster file system only the writer can) */
    int ok = 1;
    for (int f = 0; ok && f < m->d.nfiles; f++)
        if (fdatasync(m->fd[f]) != 0) ok = err_status_set(&st, "%s: fsync failed: %s", m->tmp[f], strerror(errno));
    int rc = merge_agree(m->g, ok, &st, EXIT_IO);
    *seconds = timer_now() - t0;
    return rc;
}

/* ---- summary ------------------------------------------------------------------------- */

enum { MS_PEAK, MS_START, MS_READ, MS_WRITTEN, MS_SLICE, MS_BUFFER, MS_N };

static int merge_summary(MergeCtx *m, double seconds, uint64_t rss_start, ErrStatus *st) {
    int64_t mine[MS_N] = {(int64_t)merge_status_bytes("VmHWM"), (int64_t)rss_start,
                          (int64_t)(st_dir_bytes_read(&m->d) + m->a.tensors.bytes_read + m->copy_read),
                          (int64_t)m->written, (int64_t)m->slice_bytes, (int64_t)merge_buffer_bytes(m)};
    log_rank("rank %d: peak RSS %.1f MiB (%.1f MiB at start + buffers %.1f MiB; slice %.1f MiB); "
             "read %.1f MB, wrote %.1f MB",
             m->g->world_rank, (double)mine[MS_PEAK] / MERGE_MIB, (double)rss_start / MERGE_MIB,
             (double)mine[MS_BUFFER] / MERGE_MIB, (double)mine[MS_SLICE] / MERGE_MIB,
             (double)mine[MS_READ] / 1e6, (double)mine[MS_WRITTEN] / 1e6);
    int64_t *all = m->g->world_rank == 0 ? malloc(sizeof *all * MS_N * (size_t)m->g->world_size) : NULL;
    SL_CHECK(m->g->world_rank != 0 || all, "out of memory");
    MPI_Gather(mine, MS_N, MPI_INT64_T, all, MS_N, MPI_INT64_T, 0, m->g->world);
    if (m->g->world_rank != 0) return 1;
    json_t *j = json_object(), *ranks = json_array();
    json_object_set_new(j, "model", json_string(m->o.model));
    json_object_set_new(j, "adapter", json_string(m->o.adapter));
    json_object_set_new(j, "ranks", json_integer(m->g->world_size));
    json_object_set_new(j, "threads", json_integer(m->o.threads));
    json_object_set_new(j, "chunk_bytes", json_integer(m->o.chunk_bytes));
    json_object_set_new(j, "files", json_integer(m->d.nfiles));
    json_object_set_new(j, "tensors", json_integer(m->nitems));
    json_object_set_new(j, "adapted_tensors", json_integer(m->nadapted));
    json_object_set_new(j, "dora_tensors", json_integer(m->ndora));
    json_object_set_new(j, "vera_tensors", json_integer(m->nvera));
    json_object_set_new(j, "total_bytes", json_integer((json_int_t)m->total_bytes));
    json_object_set_new(j, "seconds", json_real(seconds));
    json_object_set_new(j, "mb_per_s", json_real(seconds > 0 ? (double)m->total_bytes / 1e6 / seconds : 0));
    static const char *keys[MS_N] = {"peak_rss_bytes", "start_rss_bytes", "bytes_read",
                                     "bytes_written",  "slice_bytes",     "buffer_bytes"};
    for (int r = 0; r < m->g->world_size; r++) {
        json_t *o = json_object();
        json_object_set_new(o, "rank", json_integer(r));
        for (int k = 0; k < MS_N; k++) json_object_set_new(o, keys[k], json_integer(all[r * MS_N + k]));
        json_array_append_new(ranks, o);
    }
    json_object_set_new(j, "per_rank", ranks);
    char *path = merge_path(m->o.out, "merge-summary.json", "");
    int ok = afile_write_json(path, j, JSON_INDENT(2) | JSON_PRESERVE_ORDER, st);
    free(path);
    json_decref(j);
    free(all);
    return ok;
}

/* ---- the command --------------------------------------------------------------------- */

static int merge_same_dir(const char *a, const char *b) {
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

static int merge_finish(Grid *g, int code) {
    grid_finalize(g);
    return code;
}

int cmd_merge(int argc, char **argv) {
    MergeOpts o = {NULL, NULL, NULL, 64 * MERGE_MIB, 1, 0};
    ArgSpec specs[] = {
        {"model", ARG_STR, &o.model, "DIR", "Hugging Face model directory (config.json, safetensors, tokenizer files)", 1, 0},
        {"adapter", ARG_STR, &o.adapter, "DIR", "PEFT adapter directory (adapter_config.json, adapter_model.safetensors)", 1, 0},
        {"out", ARG_STR, &o.out, "DIR", "output model directory (refused if it exists, unless --force)", 1, 0},
        {"chunk-bytes", ARG_INT, &o.chunk_bytes, "N",
         "bytes per working buffer: rows are merged in F32 chunks of at most N bytes (at least one row) and "
         "copied in pieces of at most N bytes; a rank's memory is about 2N plus one lora_A (VeRA: plus both "
         "shared projections, r x (max_in + max_out) floats)", 0, 0},
        {"threads", ARG_INT, &o.threads, "N", "threads per rank for the merge arithmetic (the work is mostly I/O)", 0, 0},
        {"force", ARG_BOOL, &o.force, NULL, "write into an existing --out (its model files are replaced)", 0, 0},
    };
    const int nspecs = (int)(sizeof specs / sizeof specs[0]);
    Grid g;
    int help = 0;
    ErrStatus st;
    int ok = mpicmd_start(&g, &argc, &argv, specs, nspecs, "[mpirun -np N] shardlora merge --model DIR --adapter DIR --out DIR [options]",
                           "Merge a PEFT LoRA / DoRA / VeRA adapter into the model's weights (W + s·B A; DoRA: "
                           "m ⊙ (W + s·B A) / ||W + s·B A||; VeRA: W + (lambda_b ⊙ B)(lambda_d ⊙ A)) and write a complete Hugging Face model "
                           "directory with the same files, tensors and dtypes. Any number of ranks: each "
                           "streams its rows of every tensor with positioned writes, so no rank holds "
                           "more than a chunk. Writes OUT/merge-summary.json (peak RSS and bytes per rank).",
                           &help, &st);
    if (ok && help) {
        args_free(specs, nspecs);
        return merge_finish(&g, 0);
    }
    if (ok && o.chunk_bytes < 1024) ok = err_status_set(&st, "--chunk-bytes must be at least 1024");
    if (ok && o.threads < 1) ok = err_status_set(&st, "--threads must be at least 1");
    if (ok && (merge_same_dir(o.out, o.model) || merge_same_dir(o.out, o.adapter)))
        ok = err_status_set(&st, "--out %s is the --model or --adapter directory", o.out);
    /* rank 0 alone asks the file system, so the ranks cannot disagree */
    if (ok && g.world_rank == 0 && !o.force && access(o.out, F_OK) == 0)
        ok = err_status_set(&st, "--out %s already exists (use --force to write into it)", o.out);
    int rc = merge_agree(&g, ok, &st, EXIT_USAGE);
    if (rc) {
        args_free(specs, nspecs);
        return merge_finish(&g, rc);
    }
    /* the baseline the peak RSS is compared with: after MPI's first collectives */
    grid_barrier(&g);
    const uint64_t rss_start = merge_status_bytes("VmRSS");

    MergeCtx m;
    memset(&m, 0, sizeof m);
    m.g = &g;
    m.o = o;
    ok = st_dir_open(&m.d, o.model, &st);
    m.d_open = ok;
    if (ok) {
        char *cfg = merge_path(o.model, "config.json", "");
        if (access(cfg, R_OK) != 0) ok = err_status_set(&st, "%s: cannot read: %s", cfg, strerror(errno));
        free(cfg);
    }
    if (ok) ok = m.a_open = peft_read(&m.a, o.adapter, &st);
    if (ok) ok = merge_plan(&m, &st);
    rc = merge_agree(&g, ok, &st, EXIT_BAD_INPUT);
    if (rc) {
        merge_free(&m);
        args_free(specs, nspecs);
        return merge_finish(&g, rc);
    }
    merge_alloc(&m);
    if (g.world_rank == 0) {
        printf("configuration:\n");
        args_print_resolved(stdout, specs, nspecs);
        printf("merge: %d ranks; model %s: %d file%s, %d tensors, %.1f MB; adapter %s: r %d, alpha %g, "
               "%s%s%s%d adapted linears (%d DoRA), %d rank_pattern / %d alpha_pattern keys\n",
               g.world_size, o.model, m.d.nfiles, m.d.nfiles > 1 ? "s" : "", m.nitems,
               (double)m.total_bytes / 1e6, o.adapter, m.a.r, m.a.lora_alpha,
               m.a.use_rslora ? "rsLoRA, " : "", m.a.use_dora ? "DoRA, " : "", m.a.vera ? "VeRA, " : "", m.nadapted, m.ndora,
               m.a.nrank_pattern, m.a.nalpha_pattern);
        fflush(stdout);
    }

    /* rank 0 creates the outputs; then every rank opens them */
    m.tmp = calloc((size_t)m.d.nfiles, sizeof *m.tmp);
    m.dst = calloc((size_t)m.d.nfiles, sizeof *m.dst);
    m.fd = malloc(sizeof *m.fd * (size_t)m.d.nfiles);
    SL_CHECK(m.tmp && m.dst && m.fd, "out of memory");
    for (int f = 0; f < m.d.nfiles; f++) {
        m.tmp[f] = merge_path(o.out, merge_file_name(&m, f), ".tmp");
        m.dst[f] = merge_path(o.out, merge_file_name(&m, f), "");
        m.fd[f] = -1;
    }
    ok = g.world_rank != 0 || merge_prepare_out(&m, &st);
    rc = merge_agree(&g, ok, &st, EXIT_IO);
    for (int f = 0; !rc && f < m.d.nfiles; f++) {
        if (m.fd[f] < 0) m.fd[f] = open(m.tmp[f], O_WRONLY | O_CLOEXEC);
        if (m.fd[f] < 0 && ok) ok = err_status_set(&st, "%s: cannot open: %s", m.tmp[f], strerror(errno));
    }
    if (!rc) rc = merge_agree(&g, ok, &st, EXIT_IO);
    double seconds = 0;
    if (!rc) rc = merge_run(&m, &seconds);
    if (!rc) {
        ok = g.world_rank != 0 || merge_commit(&m, &st);
        rc = merge_agree(&g, ok, &st, EXIT_IO);
    }
    if (rc) {
        merge_discard(&m);
    } else {
        ok = merge_summary(&m, seconds, rss_start, &st);
        if (g.world_rank == 0 && ok)
            printf("merge: wrote %s: %.1f MB in %.2f s (%.1f MB/s), %d adapted tensors; %s/merge-summary.json\n",
                   o.out, (double)m.total_bytes / 1e6, seconds,
                   seconds > 0 ? (double)m.total_bytes / 1e6 / seconds : 0.0, m.nadapted, o.out);
        rc = merge_agree(&g, ok, &st, EXIT_IO);
    }
    merge_free(&m);
    args_free(specs, nspecs);
    return merge_finish(&g, rc);
}
