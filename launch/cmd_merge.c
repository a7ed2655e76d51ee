/* `shardlora merge`: a PEFT adapter merged into the frozen model's weights, written as a
 * complete Hugging Face directory (config and tokenizer files copied; the same safetensors
 * files, tensors, dtypes and header bytes; the index when the input has one). The adapter's
 * kind (adio_kind_of_peft: LoRA, DoRA, VeRA) owns the formula and the adapter tensors
 * (AdioKindIo's merge_*, model/): this file plans which weights are adapted, streams their
 * rows through the kind's merge_rows in F32 and rounds them to the tensor's dtype.
 *
 * Scale: runs under mpirun with any number of ranks. Every tensor's rows are split into
 * contiguous ranges over the ranks (independent of any training layout); a rank streams its
 * ranges through buffers of at most --chunk-bytes and writes them with pwrite into
 * OUT/NAME.tmp, which rank 0 created at the final size with the input's header bytes (so the
 * data offsets are the input's). No rank holds more than a chunk of a tensor, never the
 * model (a 70B merge must not need 2x the model in RAM). When every rank is done and has
 * fsynced, rank 0 renames the files into place, config.json last: a failure leaves no
 * half-written model under the final names. Every rank reaches the same verdict at each
 * step (grid_agree_code), so a bad input ends all ranks with one line and no hang. */
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
#include "../model/adapter_io.h"
#include "../parallel/grid.h"
#include "../runtime/log.h"
#include "../runtime/mem.h"
#include "../runtime/quant.h"
#include "../runtime/str.h"
#include "../runtime/timer.h"
#include "args.h"
#include "cmds.h"
#include "mpicmd.h"

#define MERGE_MIB ((int64_t)1 << 20)
/* st_read_slice converts BF16 / F16 through a staging buffer of at most this (safetensors.c) */
#define MERGE_ST_STAGE ((uint64_t)1 << 20)

/* Copied beside the weights when present; config.json is renamed into place last. */
static const char *const merge_aux_files[] = {"generation_config.json",
                                              "tokenizer.json",
                                              "tokenizer_config.json",
                                              "special_tokens_map.json",
                                              "tokenizer.model",
                                              "added_tokens.json",
                                              "vocab.json",
                                              "merges.txt",
                                              "chat_template.jinja",
                                              "chat_template.json"};
#define MERGE_NAUX ((int)(sizeof merge_aux_files / sizeof merge_aux_files[0]))

typedef struct {
    const char *model, *adapter, *out;
    const char *base_dtype; /* file | bf16 | int8 | nf4: what the base was held as in training */
    int64_t chunk_bytes, threads;
    int force;
} MergeOpts;

/* One tensor of the model, and this rank's share of it. */
typedef struct {
    int file; /* index in MergeCtx.d.files */
    const StTensor *t;
    int64_t rows, cols; /* [rows, cols] view: leading dims folded into rows */
    uint64_t row_bytes;
    int64_t r0, nr; /* this rank's rows [r0, r0 + nr) */
    /* the adapter's part (am.adapted: merged through the kind's merge_rows; else copied byte
     * for byte) */
    AdioMergeItem am;
    char *module; /* am.module: the weight's name without ".weight" */
    int quant;    /* --base-dtype applies: rows go through quantise + dequantise first */
} MergeItem;

typedef struct {
    Grid *g;
    MergeOpts o;
    int quant; /* --base-dtype other than file; fmt its format */
    QuantFormat fmt;
    StDir d;
    int d_open;
    PeftAdapter a;
    int a_open;
    const AdapterKind *kind; /* the adapter's kind (adio_kind_of_peft) */
    const AdioKindIo *kio;   /* its merge hooks */
    MergeItem *items;
    int nitems, nadapted;
    void *shared; /* what the kind's items share (merge_shared), or NULL */
    uint64_t shared_bytes;
    uint64_t total_bytes; /* tensor bytes of every file (what the ranks write together) */
    /* output files, parallel to d.files */
    char **tmp, **dst;
    int *fd;
    int out_created;           /* rank 0 made OUT (removed again on failure if empty) */
    AFile aux[MERGE_NAUX + 2]; /* rank 0: index, aux files, config.json (last) */
    int naux;
    /* buffers, allocated once after the plan (sizes from this rank's share) */
    MemCtx mem;
    float *work;        /* [chunk rows, cols] F32 working rows */
    unsigned char *raw; /* [raw_bytes] rounded output rows / byte copies */
    float *ibuf;        /* [ibuf_floats] the kind's per-weight scratch (e.g. lora_A) */
    float *rbuf;        /* [rbuf_floats] its per-chunk scratch (e.g. lora_B rows) */
    size_t work_floats, raw_bytes, ibuf_floats, rbuf_floats;
    uint64_t stage_bytes; /* st_read_slice's conversion buffer, when a read converts */
    /* accounting */
    uint64_t slice_bytes; /* model bytes this rank writes */
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
    return grid_agree_code(g, ok, code, "shardlora merge: error", st);
}

/* This rank's contiguous share [r0, r0 + nr) of n rows over `size` ranks. */
static void merge_share(int64_t n, int rank, int size, int64_t *r0, int64_t *nr) {
    int64_t a = n * rank / size, b = n * (rank + 1) / size;
    *r0 = a;
    *nr = b - a;
}

/* ---- the plan: which tensors are adapted, checked against the model's shapes --------- */

/* A weight file's name relative to the model directory (as the index names it). */
static const char *merge_file_name(const MergeCtx *m, int f);

/* Asks the kind about a linear's weight: its adapter tensors, checked (names every key). */
static int merge_plan_linear(MergeCtx *m, MergeItem *it, unsigned char *used, ErrStatus *st) {
    const StTensor *t = it->t;
    size_t n = strlen(t->name);
    if (t->ndim != 2 || n < 8 || strcmp(t->name + n - 7, ".weight") != 0) return 1;
    if (n - 7 >= 1024) return 1;
    it->module = str_ndup(t->name, n - 7);
    it->am.module = it->module;
    it->am.w = t;
    it->am.w_path = m->d.files[it->file].path;
    it->am.rows = it->rows;
    it->am.cols = it->cols;
    if (!m->kio->merge_plan(&it->am, &m->a, used, st)) return 0;
    m->nadapted += it->am.adapted;
    return 1;
}

static int merge_cmp_begin(const void *x, const void *y) {
    const MergeItem *a = x, *b = y;
    if (a->file != b->file) return a->file - b->file;
    return (a->t->begin > b->t->begin) - (a->t->begin < b->t->begin);
}

static const char *merge_file_name(const MergeCtx *m, int f) {
    size_t n = strlen(m->d.dir);
    return m->d.files[f].path + n + (n > 0 && m->d.dir[n - 1] != '/');
}

/* Every rank builds the same plan from the headers alone. */
/* Whether training's --base-dtype stores tensor `name` (model/llama.c llama_load): the
 * embedding, lm_head and the seven projections of every layer. */
static int merge_base_stored(const char *name) {
    if (!strcmp(name, "model.embed_tokens.weight") || !strcmp(name, "lm_head.weight")) return 1;
    long long l = -1;
    int at = 0;
    if (sscanf(name, "model.layers.%lld.%n", &l, &at) != 1 || at == 0) return 0;
    char want[128];
    for (int i = 0; i < MOD_NMODULES; i++) {
        snprintf(want, sizeof want, "%s.%s.weight", adapter_module_group((ModuleId)i),
                 adapter_module_name((ModuleId)i));
        if (!strcmp(name + at, want)) return 1;
    }
    return 0;
}

/* --base-dtype: marks the tensors training held quantised; their rows must quantise. */
static int merge_plan_quant(MergeCtx *m, MergeItem *it, ErrStatus *st) {
    if (!merge_base_stored(it->t->name)) return 1;
    ErrStatus why;
    err_status_ok(&why);
    if (it->t->ndim != 2 || !quant_check_shape(m->fmt, it->rows, it->cols, &why))
        return err_status_set(st, "%s: tensor '%s' cannot be held as --base-dtype %s: %s",
                              m->d.files[it->file].path, it->t->name, quant_name(m->fmt),
                              it->t->ndim != 2 ? "not a matrix" : why.msg);
    it->quant = 1;
    return 1;
}

/* Rows [.., +k) of a --base-dtype tensor in work (F32 [k, cols]) replaced by what training
 * held: quantised by runtime/quant's rule and dequantised (BF16: rounded). */
static int merge_quant_rows(const MergeCtx *m, const MergeItem *it, float *work, int64_t k,
                            ErrStatus *st) {
    QuantWeight q = {m->fmt, k, it->cols, malloc(quant_codes_bytes(m->fmt, k, it->cols)),
                     malloc((quant_scales_count(m->fmt, k, it->cols) + 1) * sizeof(float))};
    SL_CHECK(q.codes && q.scales, "out of memory");
    ErrStatus why;
    err_status_ok(&why);
    int ok = quant_rows_f32(&q, 0, k, work, it->cols, &why);
    if (ok)
        quant_dequant_f32(&q, 0, k, 0, it->cols, work, it->cols);
    else
        err_status_set(st, "%s: tensor '%s': %s", m->d.files[it->file].path, it->t->name, why.msg);
    free(q.codes);
    free(q.scales);
    return ok;
}

static int merge_plan(MergeCtx *m, ErrStatus *st) {
    int n = 0;
    for (int f = 0; f < m->d.nfiles; f++) {
        n += m->d.files[f].ntensors;
        if (strchr(merge_file_name(m, f), '/'))
            return err_status_set(
                st,
                "%s: weight file '%s' is in a subdirectory; merge writes flat model directories",
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
            for (int i = 0; i + 1 < it->t->ndim; i++)
                it->rows *= it->t->shape[i];
            it->row_bytes = (uint64_t)it->cols * st_dtype_size(it->t->dtype);
            merge_share(it->rows, m->g->world_rank, m->g->world_size, &it->r0, &it->nr);
        }
    }
    qsort(m->items, (size_t)m->nitems, sizeof *m->items, merge_cmp_begin);
    int ok = 1;
    for (int i = 0; ok && m->quant && i < m->nitems; i++)
        ok = merge_plan_quant(m, &m->items[i], st);
    m->kind = adio_kind_of_peft(&m->a);
    m->kio = m->kind->io;
    if (!m->kio || !m->kio->merge_plan) {
        char names[256] = "", *p = names;
        for (int i = 0; adapter_kind_at(i); i++) {
            const AdapterKind *k = adapter_kind_at(i);
            if (k->io && k->io->merge_plan)
                p += snprintf(p, sizeof names - (size_t)(p - names), "%s%s", p == names ? "" : "|",
                              k->name);
        }
        ok = err_status_set(st,
                            "%s: adapter kind '%s' cannot be merged by this build (mergeable: %s)",
                            m->a.tensors.path, m->kind->name, names);
    }
    for (int i = 0; ok && i < m->nitems; i++)
        ok = merge_plan_linear(m, &m->items[i], used, st);
    if (ok && m->nadapted > 0 && m->kio->merge_shared) {
        AdioMergeItem *am = malloc(sizeof *am * (size_t)(m->nitems ? m->nitems : 1));
        SL_CHECK(am, "out of memory");
        for (int i = 0; i < m->nitems; i++)
            am[i] = m->items[i].am;
        ok = m->kio->merge_shared(&m->a, am, m->nitems, used, &m->shared, &m->shared_bytes, st);
        free(am);
    }
    for (int i = 0; ok && i < m->a.tensors.ntensors; i++)
        if (!used[i])
            ok = err_status_set(
                st,
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

static void merge_size_buffers(MergeCtx *m) {
    size_t work = 0, raw = 0, ib = 0, rb = 0;
    uint64_t stage = 0;
    for (int i = 0; i < m->nitems; i++) {
        const MergeItem *it = &m->items[i];
        m->slice_bytes += (uint64_t)it->nr * it->row_bytes;
        if (it->nr == 0) continue;
        if (it->am.adapted || it->quant) {
            size_t cr = (size_t)merge_chunk_rows(m, it);
            if (cr * (size_t)it->cols > work) work = cr * (size_t)it->cols;
            if (it->t->dtype != ST_F32 && cr * (size_t)it->cols * 2 > raw)
                raw = cr * (size_t)it->cols * 2;
            if (it->am.item_floats > ib) ib = it->am.item_floats;
            if (cr * it->am.row_floats > rb) rb = cr * it->am.row_floats;
            if (it->t->dtype != ST_F32) stage = MERGE_ST_STAGE;
            for (int k = 0; k < 3; k++)
                if (it->am.t[k] && it->am.t[k]->dtype != ST_F32) stage = MERGE_ST_STAGE;
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
    m->ibuf_floats = ib;
    m->rbuf_floats = rb;
    m->stage_bytes = stage;
}

/* The buffers merge_size_buffers sized. */
static void merge_alloc(MergeCtx *m) {
    m->work = mem_alloc(&m->mem, MEM_OTHER, m->work_floats * sizeof(float));
    m->raw = mem_alloc(&m->mem, MEM_OTHER, m->raw_bytes);
    m->ibuf = mem_alloc(&m->mem, MEM_OTHER, m->ibuf_floats * sizeof(float));
    m->rbuf = mem_alloc(&m->mem, MEM_OTHER, m->rbuf_floats * sizeof(float));
}

static uint64_t merge_buffer_bytes(const MergeCtx *m) {
    return (uint64_t)(m->work_floats + m->ibuf_floats + m->rbuf_floats) * sizeof(float) +
           m->raw_bytes + m->stage_bytes + m->shared_bytes;
}

/* The buffers against this rank's share of the node's memory (train/memplan.h), before they
 * are allocated: a --chunk-bytes the node cannot hold is refused (exit 2), not a failed
 * allocation. Collective over world; 0 to go on. */
static int merge_memcheck(MergeCtx *m) {
    const int on_node = grid_node_ranks(m->g);
    const int64_t avail = memplan_node_available();
    const double need = (double)merge_buffer_bytes(m), gib = 1073741824.0;
    const int ok = avail < 0 || need <= (double)avail / on_node;
    ErrStatus st;
    err_status_ok(&st);
    if (!ok)
        err_status_set(&st,
                       "the merge buffers need ~%.3g GiB per rank (from --chunk-bytes %lld), this "
                       "node allows %.3g GiB per rank: lower --chunk-bytes",
                       need / gib, (long long)m->o.chunk_bytes, (double)avail / on_node / gib);
    return merge_agree(m->g, ok, &st, EXIT_USAGE);
}

static void merge_free(MergeCtx *m) {
    mem_free(&m->mem, MEM_OTHER, m->work, m->work_floats * sizeof(float));
    mem_free(&m->mem, MEM_OTHER, m->raw, m->raw_bytes);
    mem_free(&m->mem, MEM_OTHER, m->ibuf, m->ibuf_floats * sizeof(float));
    mem_free(&m->mem, MEM_OTHER, m->rbuf, m->rbuf_floats * sizeof(float));
    for (int f = 0; m->fd && f < m->d.nfiles; f++) {
        if (m->fd[f] >= 0) close(m->fd[f]);
        free(m->tmp[f]);
        free(m->dst[f]);
    }
    free(m->fd);
    free(m->tmp);
    free(m->dst);
    for (int i = 0; i < m->nitems; i++)
        free(m->items[i].module);
    free(m->items);
    if (m->shared && m->kio->merge_shared_free) m->kio->merge_shared_free(m->shared);
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
    struct stat sb;
    int fd = afile_open_input(src, &sb, st);
    if (fd < 0) {
        if (required || errno != ENOENT)
            ok = 0;
        else
            err_status_ok(st);
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
        if (!ok)
            m->naux--; /* afile_write aborted it */
        else
            m->written += (uint64_t)got;
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
            return err_status_set(st, "%s: cannot create the output directory: %s", m->o.out,
                                  strerror(errno));
        m->out_created = 1;
    }
    struct statvfs vs;
    if (statvfs(m->o.out, &vs) == 0) {
        uint64_t avail = (uint64_t)vs.f_bavail * (uint64_t)vs.f_frsize, need = 0;
        for (int f = 0; f < m->d.nfiles; f++)
            need += m->d.files[f].file_size;
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
    for (int f = 0; f < m->d.nfiles; f++)
        unlink(m->tmp[f]);
    for (int i = 0; i < m->naux; i++)
        afile_abort(&m->aux[i]);
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
            for (int j = i + 1; j < m->naux; j++)
                afile_abort(&m->aux[j]);
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
    if (!it->am.adapted && !it->quant)
        return merge_copy_range(m, sf->fd, sf->path, fd, out,
                                it->t->begin + (uint64_t)it->r0 * it->row_bytes,
                                (uint64_t)it->nr * it->row_bytes, st);
    const AdioMergeItem *am = &it->am;
    if (am->adapted && !m->kio->merge_begin(am, &m->a, m->shared, m->ibuf, st)) return 0;
    const int64_t cr = merge_chunk_rows(m, it), end = it->r0 + it->nr;
    for (int64_t row = it->r0; row < end; row += cr) {
        const int64_t k = end - row < cr ? end - row : cr;
        const size_t n = (size_t)(k * it->cols);
        if (!st_read_slice(sf, it->t, row, k, 0, it->cols, ST_F32, m->work, st)) return 0;
        if (it->quant && !merge_quant_rows(m, it, m->work, k, st)) {
            *code = EXIT_BAD_INPUT;
            return 0;
        }
        const int64_t bad = !am->adapted
                                ? 0
                                : m->kio->merge_rows(am, &m->a, m->shared, m->ibuf, m->rbuf,
                                                     m->work, row, k, (int)m->o.threads, st);
        if (bad < 0) return 0;
        if (bad) {
            *code = EXIT_BAD_INPUT;
            return err_status_set(st,
                                  "%s: tensor '%s': %" PRId64 " merged row(s) in [%" PRId64
                                  ", %" PRId64 ") are not finite%s; the adapter (%s) seems broken",
                                  sf->path, it->t->name, bad, row, row + k, am->bad_note,
                                  am->t[0]->name);
        }
        const void *src = m->work;
        if (it->t->dtype != ST_F32) {
            stm_from_f32(m->raw, it->t->dtype, m->work, n);
            src = m->raw;
        }
        size_t bytes = n * st_dtype_size(it->t->dtype);
        if (!stm_pwrite_full(fd, out, src, bytes, it->t->begin + (uint64_t)row * it->row_bytes, st))
            return 0;
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
    fprintf(stderr, "merge: %.1f / %.1f MB (%.0f%%), %.1f MB/s, %.1f s\n", (double)done / 1e6,
            (double)m->total_bytes / 1e6,
            m->total_bytes ? 100.0 * (double)done / (double)m->total_bytes : 100.0,
            el > 0 ? (double)done / 1e6 / el : 0.0, el);
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
        if (fdatasync(m->fd[f]) != 0)
            ok = err_status_set(&st, "%s: fsync failed: %s", m->tmp[f], strerror(errno));
    int rc = merge_agree(m->g, ok, &st, EXIT_IO);
    *seconds = timer_now() - t0;
    return rc;
}

/* ---- summary ------------------------------------------------------------------------- */

enum { MS_PEAK, MS_START, MS_READ, MS_WRITTEN, MS_SLICE, MS_BUFFER, MS_N };

static int merge_summary(MergeCtx *m, double seconds, uint64_t rss_start, ErrStatus *st) {
    int64_t mine[MS_N] = {
        (int64_t)merge_status_bytes("VmHWM"),
        (int64_t)rss_start,
        (int64_t)(st_dir_bytes_read(&m->d) + m->a.tensors.bytes_read + m->copy_read),
        (int64_t)m->written,
        (int64_t)m->slice_bytes,
        (int64_t)merge_buffer_bytes(m)};
    log_rank("rank %d: peak RSS %.1f MiB (%.1f MiB at start + buffers %.1f MiB; slice %.1f MiB); "
             "read %.1f MB, wrote %.1f MB",
             m->g->world_rank, (double)mine[MS_PEAK] / MERGE_MIB, (double)rss_start / MERGE_MIB,
             (double)mine[MS_BUFFER] / MERGE_MIB, (double)mine[MS_SLICE] / MERGE_MIB,
             (double)mine[MS_READ] / 1e6, (double)mine[MS_WRITTEN] / 1e6);
    int64_t *all =
        m->g->world_rank == 0 ? malloc(sizeof *all * MS_N * (size_t)m->g->world_size) : NULL;
    SL_CHECK(m->g->world_rank != 0 || all, "out of memory");
    grid_gather(m->g, m->g->world, mine, sizeof mine, all, 0, GRID_BYTES_OTHER);
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
    /* per registered kind besides plain LoRA: how many of the adapted tensors are of it */
    for (int i = 0; adapter_kind_at(i); i++) {
        const AdapterKind *k = adapter_kind_at(i);
        if (strcmp(k->name, "lora") == 0) continue;
        char key[48];
        snprintf(key, sizeof key, "%s_tensors", k->name);
        json_object_set_new(j, key, json_integer(k == m->kind ? m->nadapted : 0));
    }
    json_object_set_new(j, "total_bytes", json_integer((json_int_t)m->total_bytes));
    json_object_set_new(j, "seconds", json_real(seconds));
    json_object_set_new(j, "mb_per_s",
                        json_real(seconds > 0 ? (double)m->total_bytes / 1e6 / seconds : 0));
    static const char *keys[MS_N] = {"peak_rss_bytes", "start_rss_bytes", "bytes_read",
                                     "bytes_written",  "slice_bytes",     "buffer_bytes"};
    for (int r = 0; r < m->g->world_size; r++) {
        json_t *o = json_object();
        json_object_set_new(o, "rank", json_integer(r));
        for (int k = 0; k < MS_N; k++)
            json_object_set_new(o, keys[k], json_integer(all[r * MS_N + k]));
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

/* --help's description, with the kinds this build merges and their formulas from the
 * registry (each io listed once: lora-fa shares LoRA's). malloc'd. */
static char *merge_about(void) {
    char *kinds = str_dup("");
    for (int i = 0; adapter_kind_at(i); i++) {
        const AdioKindIo *io = adapter_kind_at(i)->io;
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= adapter_kind_at(j)->io == io;
        if (seen || !io || !io->merge_plan) continue;
        char *k = str_printf("%s%s%s: %s", kinds, *kinds ? "; " : "", adapter_kind_at(i)->name,
                             io->merge_help ? io->merge_help : "its own formula");
        free(kinds);
        kinds = k;
    }
    char *about = str_printf(
        "Merge a PEFT adapter into the model's weights as PEFT merges it (%s) and write a complete "
        "Hugging Face model directory with the same files, tensors and dtypes. Any number of "
        "ranks: each streams its rows of every tensor with positioned writes, so no rank holds "
        "more than a chunk. Writes OUT/merge-summary.json (peak RSS and bytes per rank).",
        kinds);
    free(kinds);
    return about;
}

int cmd_merge(int argc, char **argv) {
    MergeOpts o = {NULL, NULL, NULL, "file", 64 * MERGE_MIB, 1, 0};
    /* one option per line: name, type, destination, metavar, help, required, seen */
    // clang-format off
    ArgSpec specs[] = {
        {.type = ARG_GROUP, .group = ARGG_MODEL},
        {"model", ARG_STR, &o.model, "DIR", "Hugging Face model directory (config.json, safetensors, tokenizer files)", 1, 0},
        {"adapter", ARG_STR, &o.adapter, "DIR", "PEFT adapter directory (adapter_config.json, adapter_model.safetensors)", 1, 0},
        {"out", ARG_STR, &o.out, "DIR", "output model directory (refused if it exists, unless --force)", 1, 0},
        {"force", ARG_BOOL, &o.force, NULL, "write into an existing --out (its model files are replaced)", 0, 0},
        {"base-dtype", ARG_STR, &o.base_dtype, "DTYPE", "file | bf16 | int8 | nf4: the --base-dtype the adapter was trained with; other than file, every weight training held that way (embedding, lm_head, the projections) is first quantised and dequantised by training's rule, so the merged model is the one the adapter was trained on, written in the files' dtypes (file: merged into the weights as stored)", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_PARALLEL},
        {"threads", ARG_INT, &o.threads, "N", "threads per rank for the merge arithmetic (the work is mostly I/O)", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_EXPERT},
        {"chunk-bytes", ARG_INT, &o.chunk_bytes, "N",
         "bytes per working buffer: rows are merged in F32 chunks of at most N bytes (at least one row) and "
         "copied in pieces of at most N bytes; a rank's memory is about 2N plus the kind's buffers: one "
         "adapter tensor per weight (e.g. lora_A) and what every weight shares (e.g. VeRA's projections, "
         "r x (max_in + max_out) floats)", 0, 0},
    };
    // clang-format on
    const int nspecs = (int)(sizeof specs / sizeof specs[0]);
    Grid g;
    int help = 0;
    ErrStatus st;
    char *about = merge_about();
    int ok =
        mpicmd_start(&g, &argc, &argv, specs, nspecs,
                     "[mpirun -np N] shardlora merge --model DIR --adapter DIR --out DIR [options]",
                     about, &help, &st);
    free(about);
    if (ok && help) {
        args_free(specs, nspecs);
        return merge_finish(&g, 0);
    }
    if (ok && o.chunk_bytes < 1024) ok = err_status_set(&st, "--chunk-bytes must be at least 1024");
    if (ok && o.threads < 1) ok = err_status_set(&st, "--threads must be at least 1");
    QuantFormat fmt = QUANT_BF16;
    if (ok && strcmp(o.base_dtype, "file") != 0 && !quant_parse(o.base_dtype, &fmt))
        ok = err_status_set(&st, "--base-dtype '%s': expected file, bf16, int8 or nf4",
                            o.base_dtype);
    ok = ok && mpicmd_bound("threads", o.threads, 1, MPICMD_MAX_THREADS, &st) &&
         mpicmd_bound("chunk-bytes", o.chunk_bytes, 1024, (int64_t)1 << 40, &st);
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
    m.quant = strcmp(o.base_dtype, "file") != 0;
    m.fmt = fmt;
    ok = st_dir_open(&m.d, o.model, &st);
    m.d_open = ok;
    if (ok) {
        char *cfg = merge_path(o.model, "config.json", "");
        if (access(cfg, R_OK) != 0)
            ok = err_status_set(&st, "%s: cannot read: %s", cfg, strerror(errno));
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
    merge_size_buffers(&m);
    rc = merge_memcheck(&m);
    if (rc) {
        merge_free(&m);
        args_free(specs, nspecs);
        return merge_finish(&g, rc);
    }
    merge_alloc(&m);
    char ab[32];
    if (g.world_rank == 0) {
        fprintf(stderr, "configuration:\n");
        args_print_resolved(stderr, specs, nspecs);
        fprintf(
            stderr,
            "merge: %d ranks; model %s: %d file%s, %d tensors, %.1f MB; adapter %s: r %d, alpha "
            "%s, "
            "%s%s%s%d adapted linears (%s), %d rank_pattern / %d alpha_pattern keys\n",
            g.world_size, o.model, m.d.nfiles, m.d.nfiles > 1 ? "s" : "", m.nitems,
            (double)m.total_bytes / 1e6, o.adapter, m.a.r,
            str_fmt_double(m.a.lora_alpha, ab, sizeof ab), m.a.use_rslora ? "rsLoRA, " : "",
            m.kind->title ? m.kind->title : "", m.kind->title ? ", " : "", m.nadapted, m.kind->name,
            m.a.nrank_pattern, m.a.nalpha_pattern);
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
        if (m.fd[f] < 0 && ok)
            ok = err_status_set(&st, "%s: cannot open: %s", m.tmp[f], strerror(errno));
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
            fprintf(stderr,
                    "merge: wrote %s: %.1f MB in %.2f s (%.1f MB/s), %d adapted tensors; "
                    "%s/merge-summary.json\n",
                    o.out, (double)m.total_bytes / 1e6, seconds,
                    seconds > 0 ? (double)m.total_bytes / 1e6 / seconds : 0.0, m.nadapted, o.out);
        rc = merge_agree(&g, ok, &st, EXIT_IO);
    }
    merge_free(&m);
    args_free(specs, nspecs);
    return merge_finish(&g, rc);
}
