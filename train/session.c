/* The shared set-up of the model commands (see session.h). */
#include "session.h"

#include <stdio.h>
#include <string.h>

int session_open(Session *s, Grid *g, const char *model_dir, MemPinMode pin, int base,
                 const int64_t *stages, ErrStatus *st) {
    memset(s, 0, sizeof *s);
    s->g = g;
    mem_init(&s->mem, pin);
    s->have_model = llama_load(&s->m, model_dir, g, base, stages, &s->mem, st);
    return s->have_model;
}

int64_t session_max_cols(const Session *s) {
    return s->m.C > s->m.F ? s->m.C : s->m.F;
}

void session_compute_init(Session *s, int threads, int64_t max_cols, int64_t rows,
                          const KernOps *kops) {
    gemm_init(&s->gc, &s->mem, threads, max_cols);
    s->kops = kops;
    s->kc = (KernCtx){&s->gc, NULL, 0, s->gc.nthreads};
    s->kc.scratch_floats = kern_scratch_floats(rows, s->m.Hl, s->m.D, s->gc.nthreads);
    s->kc.scratch = mem_alloc(&s->mem, MEM_ACTIVATION,
                              (s->kc.scratch_floats ? s->kc.scratch_floats : 1) * sizeof(float));
    s->have_compute = 1;
    snprintf(s->compute_why, sizeof s->compute_why, "fp32");
}

int session_set_compute(Session *s, int compute) {
    char why[128];
    if (compute < 0) {
        /* auto: BF16 where the CPU runs it natively and the base is held in 16 bits or less */
        const int bf = s->m.wdtype != GEMM_F32 && gemm_bf16_native();
        gemm_set_compute(&s->gc, bf ? GEMM_COMPUTE_BF16 : GEMM_COMPUTE_F32, why, sizeof why);
        snprintf(s->compute_why, sizeof s->compute_why, "%s (auto: %s base%s)", why,
                 gemm_dtype_name(s->m.wdtype),
                 s->m.wdtype == GEMM_F32 ? ""
                 : bf                    ? ", native BF16"
                                         : ", no native BF16");
    } else {
        gemm_set_compute(&s->gc, (GemmCompute)compute, why, sizeof why);
        snprintf(s->compute_why, sizeof s->compute_why, "%s", why);
    }
    return s->gc.compute;
}

void session_batches_init(Session *s, int64_t B, int64_t T, LlamaRecompute rc, int sets) {
    s->B = B;
    s->T = T;
    llama_acts_init(&s->acts, &s->m, B, T, rc, sets, &s->mem);
    llama_batch_init(&s->batch, &s->m, B, T, &s->mem);
    s->labels = mem_alloc(&s->mem, MEM_OTHER, (size_t)(B * T) * sizeof(int64_t));
    s->have_batches = 1;
}

const char *session_describe_model(const Session *s, char *buf, size_t n) {
    const LlamaModel *m = &s->m;
    snprintf(buf, n,
             "%s, %lld layers, hidden %lld, heads %lld/%lld, head_dim %lld, ffn %lld, vocab %lld, "
             "%s weights (%s)",
             m->cfg.architecture, (long long)m->L, (long long)m->C, (long long)m->H,
             (long long)m->KV, (long long)m->D, (long long)m->F, (long long)m->V,
             gemm_dtype_name(m->wdtype), m->base == LLAMA_BASE_FILE ? "as stored" : "--base-dtype");
    return buf;
}

void session_fill_batch(Session *s, const RowSource *src, int64_t first, int64_t end) {
    session_fill(s, &s->batch, src, first, end);
}

void session_fill(Session *s, LlamaBatch *b, const RowSource *src, int64_t first, int64_t end) {
    const int64_t T = s->T;
    for (int64_t j = 0; j < s->B; j++) {
        int32_t *ids = b->ids + j * T;
        int64_t *labels = s->labels + j * T, *pos = b->pos + j * T;
        if (first + j < end) {
            src->row(src->ctx, first + j, T, ids, labels, pos);
            continue;
        }
        for (int64_t t = 0; t < T; t++) {
            ids[t] = 0;
            labels[t] = -100;
            pos[t] = t;
        }
    }
    llama_batch_prepare(b, &s->m, s->labels);
}

void session_free(Session *s) {
    if (s->have_batches) {
        mem_free(&s->mem, MEM_OTHER, s->labels, (size_t)(s->B * s->T) * sizeof(int64_t));
        llama_batch_free(&s->batch, &s->m, &s->mem);
        llama_acts_free(&s->acts, &s->m, &s->mem);
    }
    if (s->have_compute) {
        mem_free(&s->mem, MEM_ACTIVATION, s->kc.scratch,
                 (s->kc.scratch_floats ? s->kc.scratch_floats : 1) * sizeof(float));
        gemm_free(&s->gc, &s->mem);
    }
    if (s->have_model) llama_free(&s->m, &s->mem);
    memset(s, 0, sizeof *s);
}
