/* BF16 matmul through oneDNN's C API (see bmm.h): strided memory descriptors, a sum post-op
 * for beta, primitives cached per shape with least-recently-used eviction. */
#include "bmm.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* Shapes kept at once. A training run uses a handful per weight shape (T fixed; tiles: a full
 * and a last one; xw: first tile with beta, the others with 1); generation adds one per prompt
 * length. Beyond this the least recently used primitive is destroyed. */
#define BMM_CACHE_MAX 64

typedef struct {
    BmmShape s;
    int nthreads;
    dnnl_primitive_t prim;
    dnnl_memory_t mem[3]; /* A, B, C with no data; the handles are set per call */
    uint64_t used;        /* b->clock at the last use */
} BmmEntry;

struct BmmCtx {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    BmmEntry cache[BMM_CACHE_MAX];
    int n;
    uint64_t clock;
    int64_t created;
    char impl[96];
    char status[64];
};

BmmCtx *bmm_create(char *err, size_t n) {
    BmmCtx *b = calloc(1, sizeof *b);
    SL_CHECK(b != NULL, "out of memory for the oneDNN context");
    dnnl_status_t st = dnnl_engine_create(&b->engine, dnnl_cpu, 0);
    if (st == dnnl_success)
        st = dnnl_stream_create(&b->stream, b->engine, dnnl_stream_default_flags);
    if (st != dnnl_success) {
        if (err)
            snprintf(err, n, "oneDNN cannot create a CPU engine and stream: %s",
                     dnnl_status2str(st));
        if (b->engine) dnnl_engine_destroy(b->engine);
        free(b);
        return NULL;
    }
    return b;
}

static void bmm_entry_free(BmmEntry *e) {
    for (int i = 0; i < 3; i++)
        if (e->mem[i]) dnnl_memory_destroy(e->mem[i]);
    if (e->prim) dnnl_primitive_destroy(e->prim);
    memset(e, 0, sizeof *e);
}

void bmm_destroy(BmmCtx *b) {
    if (!b) return;
    for (int i = 0; i < b->n; i++)
        bmm_entry_free(&b->cache[i]);
    dnnl_stream_destroy(b->stream);
    dnnl_engine_destroy(b->engine);
    free(b);
}

static int bmm_same(const BmmShape *a, const BmmShape *b) {
    return a->type == b->type && a->trans_b == b->trans_b && a->M == b->M && a->N == b->N &&
           a->K == b->K && a->lda == b->lda && a->ldb == b->ldb && a->ldc == b->ldc &&
           memcmp(&a->beta, &b->beta, sizeof a->beta) == 0;
}

static BmmEntry *bmm_find(BmmCtx *b, const BmmShape *s, int nthreads) {
    for (int i = 0; i < b->n; i++)
        if (b->cache[i].nthreads == nthreads && bmm_same(&b->cache[i].s, s)) return &b->cache[i];
    return NULL;
}

static void bmm_check_shape(const BmmShape *s) {
    SL_CHECK(s->type == BMM_BF16 || s->type == BMM_F32, "bmm operand type %d", (int)s->type);
    SL_CHECK(s->M >= 1 && s->N >= 1 && s->K >= 1 && s->lda >= s->K &&
                 s->ldb >= (s->trans_b ? s->K : s->N) && s->ldc >= s->N,
             "bmm shape M %lld N %lld K %lld lda %lld ldb %lld ldc %lld trans_b %d",
             (long long)s->M, (long long)s->N, (long long)s->K, (long long)s->lda,
             (long long)s->ldb, (long long)s->ldc, s->trans_b);
}

/* The primitive and its three memory objects for s, or 0 with b->status set. */
static int bmm_make(BmmCtx *b, const BmmShape *s, BmmEntry *e) {
    const dnnl_data_type_t dt = s->type == BMM_BF16 ? dnnl_bf16 : dnnl_f32;
    /* A [M, K] rows lda; B [K, N]: row-major with ldb, or the transpose of a row-major
     * [N, K] (strides 1, ldb); C [M, N] rows ldc. */
    dnnl_dims_t da = {s->M, s->K}, sa = {s->lda, 1};
    dnnl_dims_t db = {s->K, s->N}, sb = {s->trans_b ? 1 : s->ldb, s->trans_b ? s->ldb : 1};
    dnnl_dims_t dc = {s->M, s->N}, sc = {s->ldc, 1};
    dnnl_memory_desc_t md[3];
    dnnl_status_t st = dnnl_memory_desc_init_by_strides(&md[0], 2, da, dt, sa);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_strides(&md[1], 2, db, dt, sb);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_strides(&md[2], 2, dc, dnnl_f32, sc);
    dnnl_matmul_desc_t desc;
    if (st == dnnl_success) st = dnnl_matmul_desc_init(&desc, &md[0], &md[1], NULL, &md[2]);

    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    if (st == dnnl_success) st = dnnl_primitive_attr_create(&attr);
    if (st == dnnl_success && s->beta != 0.0f) {
        /* dst = beta * dst + A op(B) */
        st = dnnl_post_ops_create(&po);
        if (st == dnnl_success) st = dnnl_post_ops_append_sum(po, s->beta);
        if (st == dnnl_success) st = dnnl_primitive_attr_set_post_ops(attr, po);
    }
    dnnl_primitive_desc_t pd = NULL;
    if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &desc, attr, b->engine, NULL);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (st == dnnl_success) {
        const char *impl = NULL;
        if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
            impl)
            snprintf(b->impl, sizeof b->impl, "%s", impl);
        st = dnnl_primitive_create(&e->prim, pd);
    }
    for (int i = 0; i < 3 && st == dnnl_success; i++)
        st = dnnl_memory_create(&e->mem[i], &md[i], b->engine, DNNL_MEMORY_NONE);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (st != dnnl_success) {
        snprintf(b->status, sizeof b->status, "%s", dnnl_status2str(st));
        bmm_entry_free(e);
        return 0;
    }
    return 1;
}

int bmm_ready(BmmCtx *b, const BmmShape *s) {
    bmm_check_shape(s);
    const int nthreads = omp_get_max_threads();
    BmmEntry *e = bmm_find(b, s, nthreads);
    if (e) {
        e->used = ++b->clock;
        return 1;
    }
    if (b->n == BMM_CACHE_MAX) { /* evict the least recently used */
        int lru = 0;
        for (int i = 1; i < b->n; i++)
            if (b->cache[i].used < b->cache[lru].used) lru = i;
        bmm_entry_free(&b->cache[lru]);
        b->cache[lru] = b->cache[--b->n];
        memset(&b->cache[b->n], 0, sizeof b->cache[b->n]);
    }
    e = &b->cache[b->n];
    memset(e, 0, sizeof *e);
    if (!bmm_make(b, s, e)) return 0;
    e->s = *s;
    e->nthreads = nthreads;
    e->used = ++b->clock;
    b->n++;
    b->created++;
    return 1;
}

void bmm_run(BmmCtx *b, const BmmShape *s, const void *A, const void *B, float *C) {
    BmmEntry *e = bmm_find(b, s, omp_get_max_threads());
    SL_CHECK(e != NULL, "bmm_run before bmm_ready for M %lld N %lld K %lld", (long long)s->M,
             (long long)s->N, (long long)s->K);
    e->used = ++b->clock;
    /* oneDNN takes non-const handles; it only reads A and B */
    dnnl_status_t st = dnnl_memory_set_data_handle(e->mem[0], (void *)(uintptr_t)A);
    if (st == dnnl_success) st = dnnl_memory_set_data_handle(e->mem[1], (void *)(uintptr_t)B);
    if (st == dnnl_success) st = dnnl_memory_set_data_handle(e->mem[2], C);
    dnnl_exec_arg_t args[3] = {
        {DNNL_ARG_SRC, e->mem[0]}, {DNNL_ARG_WEIGHTS, e->mem[1]}, {DNNL_ARG_DST, e->mem[2]}};
    if (st == dnnl_success) st = dnnl_primitive_execute(e->prim, b->stream, 3, args);
    if (st == dnnl_success) st = dnnl_stream_wait(b->stream);
    if (st != dnnl_success)
        SL_FATAL("oneDNN matmul M %lld N %lld K %lld failed: %s", (long long)s->M, (long long)s->N,
                 (long long)s->K, dnnl_status2str(st));
}

int64_t bmm_created(const BmmCtx *b) {
    return b->created;
}

int bmm_cached(const BmmCtx *b) {
    return b->n;
}

const char *bmm_impl(const BmmCtx *b) {
    return b->impl;
}

const char *bmm_last_status(const BmmCtx *b) {
    return b->status;
}

const char *bmm_isa(void) {
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_all:
        return "all";
    case dnnl_cpu_isa_sse41:
        return "sse41";
    case dnnl_cpu_isa_avx:
        return "avx";
    case dnnl_cpu_isa_avx2:
        return "avx2";
    case dnnl_cpu_isa_avx2_vnni:
        return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic:
        return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops:
        return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core:
        return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni:
        return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16:
        return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx:
        return "avx512_core_amx";
    }
    return "unknown";
}

int bmm_isa_bf16(void) {
    /* The enum values are bit masks of the ISA's features, so AMX contains avx512_core_bf16's
     * bits and avx2_vnni does not. */
    const unsigned isa = (unsigned)dnnl_get_effective_cpu_isa(),
                   bf16 = dnnl_cpu_isa_avx512_core_bf16;
    return isa != dnnl_cpu_isa_all && (isa & bf16) == bf16;
}
