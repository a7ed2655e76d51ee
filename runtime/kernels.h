/* Transformer kernels, forward and backward side by side, each with a plain reference
 * version (the test oracle and the fallback) and a fast version, selected at init through
 * a table of function pointers (KernOps).
 *
 * Legend: T tokens of one sequence (or rows), C hidden, F ffn, V vocabulary (columns held
 * by this rank), H query heads, KV key/value heads, D head dim. Row-major.
 *
 * Conventions: backward functions ACCUMULATE (+=) into gradient buffers unless the comment
 * says "in place"; the caller zeroes them. Forward saves what backward needs in the
 * buffers named in its comment. Math in fp32. */
#ifndef SHARDLORA_RUNTIME_KERNELS_H
#define SHARDLORA_RUNTIME_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "gemm.h"

/* Llama-3 rope_scaling ("rope_type": "llama3"); type 0 = none. */
typedef struct {
    int type; /* 0 none, 1 llama3 */
    double factor;
    double low_freq_factor;
    double high_freq_factor;
    int64_t original_max_position; /* original_max_position_embeddings */
} KernRopeScaling;

/* Context the fast kernels may use (GEMM for attention, scratch, threads). */
typedef struct {
    GemmCtx *gemm;
    float *scratch; /* [scratch_floats] */
    size_t scratch_floats;
    int nthreads;
} KernCtx;

typedef struct {
    const char *name; /* "reference" or "fast" */

    /* RMSNorm (HF LlamaRMSNorm): out = x * rsqrt(mean(x^2) + eps) * w.
     * out [T, C], rstd [T] (saved for backward), x [T, C], w [C]. */
    void (*rmsnorm_forward)(float *out, float *rstd, const float *x, const float *w, int64_t T,
                            int64_t C, float eps);
    /* dx [T, C] += d/dx; w is frozen (no dw). */
    void (*rmsnorm_backward)(float *dx, const float *dout, const float *x, const float *w,
                             const float *rstd, int64_t T, int64_t C);

    /* RoPE, Hugging Face rotate-half layout, IN PLACE on x [T, nh, D] (row stride nh*D):
     * x' = x * cos + rotate_half(x) * sin with cos/sin [T, D/2] from kern_rope_tables. */
    void (*rope_forward)(float *x, const float *cos, const float *sin, int64_t T, int64_t nh,
                         int64_t D);
    /* IN PLACE: turns the gradient w.r.t. the rotated x into the gradient w.r.t. x. */
    void (*rope_backward)(float *dx, const float *cos, const float *sin, int64_t T, int64_t nh,
                          int64_t D);

    /* SwiGLU: out[i] = silu(gate[i]) * up[i] over n elements. */
    void (*swiglu_forward)(float *out, const float *gate, const float *up, int64_t n);
    /* dgate += dout * up * silu'(gate); dup += dout * silu(gate). */
    void (*swiglu_backward)(float *dgate, float *dup, const float *dout, const float *gate,
                            const float *up, int64_t n);

    /* Causal self-attention with GQA (query head h uses kv head h / (H / KV)) within
     * documents: token t attends to s in [doc_start[t], t]. Scale 1/sqrt(D).
     * out [T, H*D], lse [H, T] (log-sum-exp of the scaled scores, saved for backward),
     * q [T, H*D], k [T, KV*D], v [T, KV*D], doc_start [T]. */
    void (*attention_forward)(KernCtx *kc, float *out, float *lse, const float *q, const float *k,
                              const float *v, const int32_t *doc_start, int64_t T, int64_t H,
                              int64_t KV, int64_t D);
    /* dq [T, H*D] +=, dk [T, KV*D] +=, dv [T, KV*D] += ; dout and out [T, H*D]. */
    void (*attention_backward)(KernCtx *kc, float *dq, float *dk, float *dv, const float *dout,
                               const float *out, const float *lse, const float *q, const float *k,
                               const float *v, const int32_t *doc_start, int64_t T, int64_t H,
                               int64_t KV, int64_t D);

    /* Cross-entropy on a chunk of logits [Tc, V] whose columns are global vocabulary ids
     * [v0, v0 + V) (vocab-parallel: the caller all-reduces between the steps).
     * ce_max: mx [Tc] = max over the row. */
    void (*ce_max)(float *mx, const float *logits, int64_t Tc, int64_t V);
    /* se [Tc] = sum exp(logits - mx). */
    void (*ce_sumexp)(float *se, const float *logits, const float *mx, int64_t Tc, int64_t V);
    /* tl [Tc] = logits[t, target[t] - v0] if target in [v0, v0+V) else 0 (target < 0: 0). */
    void (*ce_target)(float *tl, const float *logits, const int32_t *target, int64_t v0, int64_t Tc,
                      int64_t V);
    /* IN PLACE on logits: dlogits = w[t] * (exp(l - mx) / se - onehot(target)).
     * w [Tc] is the per-token loss weight (0 for ignored tokens). */
    void (*ce_backward)(float *logits, const int32_t *target, int64_t v0, const float *mx,
                        const float *se, const float *w, int64_t Tc, int64_t V);

    /* Embedding rows [v0, v0 + Vloc) of the global table (any GemmDtype, [Vloc, C]; INT8 /
     * NF4 rows are dequantised): out [T, C] = table[ids[t] - v0], or 0 when the id is not in
     * this rank's range. */
    void (*embed_forward)(float *out, const GemmWeight *table, const int32_t *ids, int64_t v0,
                          int64_t T, int64_t C);
    /* dtable [Vloc, C] += dout rows for ids in range (F32 gradient table). */
    void (*embed_backward)(float *dtable, const float *dout, const int32_t *ids, int64_t v0,
                           int64_t Vloc, int64_t T, int64_t C);
} KernOps;

const KernOps *kern_ops_reference(void);
const KernOps *kern_ops_fast(void);
/* "reference" or "fast"; NULL if unknown. */
const KernOps *kern_ops_by_name(const char *name);

/* Scratch the fast kernels need for sequences of up to T tokens with H heads of dim D. */
size_t kern_scratch_floats(int64_t T, int64_t H, int64_t D, int nthreads);

/* inv_freq [D/2] = 1 / theta^(2i/D), then llama3 scaling if s->type == 1 (HF
 * _compute_llama3_parameters). Computed in float32 like transformers does. */
void kern_rope_inv_freq(float *inv_freq, int64_t D, double theta, const KernRopeScaling *s);
/* cos, sin [T, D/2] for positions pos [T]: angle = (float)pos * inv_freq (float32). */
void kern_rope_tables(float *cos, float *sin, const int64_t *pos, int64_t T, const float *inv_freq,
                      int64_t half);
/* doc_start [T]: index of the first token of t's document; a document starts at t = 0
 * and wherever pos[t] == 0 (Hugging Face packed sequences via position_ids). */
void kern_doc_starts(int32_t *doc_start, const int64_t *pos, int64_t T);

#endif
