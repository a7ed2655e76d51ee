/* Reference transformer kernels (plain loops, the test oracle and the fallback), the kernel
 * table lookup, and the RoPE / document-boundary tables. Semantics follow Hugging Face
 * transformers' Llama (modeling_llama.py, modeling_rope_utils.py); see kernels.h.
 *
 * Legend: T tokens, C hidden, V vocabulary columns of this rank, H query heads, KV kv heads,
 * D head dim. Sums are accumulated in double here: the reference should be the sharpest
 * oracle we have, and speed is kernels_fast.c's business. */
#include "kernels.h"

#include <math.h>
#include <string.h>

#include "err.h"

/* ---- RMSNorm (HF LlamaRMSNorm) ------------------------------------------------------- */

/* y = x * r * w with r = (mean(x^2) + eps)^-1/2. */
static void ref_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int64_t T,
                                int64_t C, float eps) {
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * C; /* [C] */
        float *ot = out + t * C;     /* [C] */
        double ss = 0;
        for (int64_t i = 0; i < C; i++)
            ss += (double)xt[i] * xt[i];
        float r = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
        rstd[t] = r;
        /* HF order: (x * rsqrt(var + eps)) then * weight. */
        for (int64_t i = 0; i < C; i++)
            ot[i] = (xt[i] * r) * w[i];
    }
}

/* dx_i += r w_i g_i - x_i r^3 / C * sum_j g_j w_j x_j  (d r / d x_i = -r^3 x_i / C). */
static void ref_rmsnorm_backward(float *dx, const float *dout, const float *x, const float *w,
                                 const float *rstd, int64_t T, int64_t C) {
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * C;    /* [C] */
        const float *gt = dout + t * C; /* [C] */
        float *dxt = dx + t * C;        /* [C] */
        double r = rstd[t];
        double dot = 0;
        for (int64_t i = 0; i < C; i++)
            dot += (double)gt[i] * w[i] * xt[i];
        double c = r * r * r * dot / (double)C;
        for (int64_t i = 0; i < C; i++)
            dxt[i] += (float)(r * w[i] * gt[i] - c * xt[i]);
    }
}

/* ---- RoPE, rotate-half layout (HF apply_rotary_pos_emb) ------------------------------- */

static void ref_rope_forward(float *x, const float *cos, const float *sin, int64_t T, int64_t nh,
                             int64_t D) {
    int64_t half = D / 2;
    for (int64_t t = 0; t < T; t++) {
        const float *ct = cos + t * half, *st = sin + t * half; /* [half] */
        for (int64_t h = 0; h < nh; h++) {
            float *xh = x + (t * nh + h) * D; /* [D] */
            for (int64_t i = 0; i < half; i++) {
                float a = xh[i], b = xh[i + half];
                xh[i] = a * ct[i] - b * st[i];
                xh[i + half] = b * ct[i] + a * st[i];
            }
        }
    }
}

/* The transpose of the rotation above (a rotation by -angle). */
static void ref_rope_backward(float *dx, const float *cos, const float *sin, int64_t T, int64_t nh,
                              int64_t D) {
    int64_t half = D / 2;
    for (int64_t t = 0; t < T; t++) {
        const float *ct = cos + t * half, *st = sin + t * half; /* [half] */
        for (int64_t h = 0; h < nh; h++) {
            float *gh = dx + (t * nh + h) * D; /* [D] */
            for (int64_t i = 0; i < half; i++) {
                float a = gh[i], b = gh[i + half];
                gh[i] = a * ct[i] + b * st[i];
                gh[i + half] = b * ct[i] - a * st[i];
            }
        }
    }
}

/* ---- SwiGLU (HF LlamaMLP: act_fn(gate_proj(x)) * up_proj(x), act_fn = silu) ------------ */

static void ref_swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/* silu'(g) = s (1 + g (1 - s)), s = sigmoid(g). */
static void ref_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                                const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        float s = 1.0f / (1.0f + expf(-g));
        dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
        dup[i] += dout[i] * g * s;
    }
}

/* ---- attention -------------------------------------------------------------------------
 * Plain three-pass softmax per (head, query) that recomputes q.k instead of keeping a score
 * row, so the reference needs no scratch (kc may be NULL). */

static double ref_dot(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* The attention kernels' shape arguments: H a multiple of KV, each doc_start[t] in [0, t]. */
static void ref_check_attention(const int32_t *doc_start, int64_t T, int64_t H, int64_t KV) {
    SL_CHECK(KV > 0 && H == H / KV * KV, "H %lld not a multiple of KV %lld", (long long)H,
             (long long)KV);
    for (int64_t t = 0; t < T; t++)
        SL_CHECK(doc_start[t] >= 0 && doc_start[t] <= t, "doc_start[%lld] = %d", (long long)t,
                 (int)doc_start[t]);
}

static void ref_attention_forward(KernCtx *kc, float *out, float *lse, const float *q,
                                  const float *k, const float *v, const int32_t *doc_start,
                                  int64_t T, int64_t H, int64_t KV, int64_t D) {
    (void)kc;
    ref_check_attention(doc_start, T, H, KV);
    int64_t G = H / KV;
    double scale = 1.0 / sqrt((double)D);
    for (int64_t h = 0; h < H; h++) {
        int64_t kvh = h / G;
        for (int64_t t = 0; t < T; t++) {
            const float *qt = q + (t * H + h) * D; /* [D] */
            float *ot = out + (t * H + h) * D;     /* [D] */
            int64_t s0 = doc_start[t];
            double m = -INFINITY;
            for (int64_t s = s0; s <= t; s++) {
                double sc = ref_dot(qt, k + (s * KV + kvh) * D, D) * scale;
                if (sc > m) m = sc;
            }
            double se = 0;
            for (int64_t s = s0; s <= t; s++)
                se += exp(ref_dot(qt, k + (s * KV + kvh) * D, D) * scale - m);
            double l = m + log(se);
            lse[h * T + t] = (float)l;
            for (int64_t d = 0; d < D; d++)
                ot[d] = 0;
            for (int64_t s = s0; s <= t; s++) {
                double p = exp(ref_dot(qt, k + (s * KV + kvh) * D, D) * scale - l);
                const float *vs = v + (s * KV + kvh) * D; /* [D] */
                for (int64_t d = 0; d < D; d++)
                    ot[d] += (float)(p * vs[d]);
            }
        }
    }
}

/* FlashAttention-2 (Dao 2023) backward: P recomputed from lse, Drow = rowsum(dO * O),
 * dS = P (dP - Drow), dP = dO V^T; dq += scale dS K, dk += scale dS^T Q, dv += P^T dO. */
static void ref_attention_backward(KernCtx *kc, float *dq, float *dk, float *dv, const float *dout,
                                   const float *out, const float *lse, const float *q,
                                   const float *k, const float *v, const int32_t *doc_start,
                                   int64_t T, int64_t H, int64_t KV, int64_t D) {
    (void)kc;
    ref_check_attention(doc_start, T, H, KV);
    int64_t G = H / KV;
    double scale = 1.0 / sqrt((double)D);
    for (int64_t h = 0; h < H; h++) {
        int64_t kvh = h / G;
        for (int64_t t = 0; t < T; t++) {
            const float *qt = q + (t * H + h) * D;     /* [D] */
            const float *got = dout + (t * H + h) * D; /* [D] */
            float *dqt = dq + (t * H + h) * D;         /* [D] */
            double drow = ref_dot(got, out + (t * H + h) * D, D);
            for (int64_t s = doc_start[t]; s <= t; s++) {
                const float *ks = k + (s * KV + kvh) * D; /* [D] */
                const float *vs = v + (s * KV + kvh) * D; /* [D] */
                float *dks = dk + (s * KV + kvh) * D;     /* [D] */
                float *dvs = dv + (s * KV + kvh) * D;     /* [D] */
                double p = exp(ref_dot(qt, ks, D) * scale - lse[h * T + t]);
                double ds = p * (ref_dot(got, vs, D) - drow);
                for (int64_t d = 0; d < D; d++) {
                    dqt[d] += (float)(ds * ks[d] * scale);
                    dks[d] += (float)(ds * qt[d] * scale);
                    dvs[d] += (float)(p * got[d]);
                }
            }
        }
    }
}

/* ---- cross-entropy pieces (vocab-parallel, see DESIGN.md section 3) ------------------- */

static void ref_ce_max(float *mx, const float *logits, int64_t Tc, int64_t V) {
    for (int64_t t = 0; t < Tc; t++) {
        const float *lt = logits + t * V; /* [V] */
        float m = -INFINITY;
        for (int64_t j = 0; j < V; j++)
            if (lt[j] > m) m = lt[j];
        mx[t] = m;
    }
}

static void ref_ce_sumexp(float *se, const float *logits, const float *mx, int64_t Tc, int64_t V) {
    for (int64_t t = 0; t < Tc; t++) {
        const float *lt = logits + t * V; /* [V] */
        double s = 0;
        for (int64_t j = 0; j < V; j++)
            s += exp((double)lt[j] - mx[t]);
        se[t] = (float)s;
    }
}

static void ref_ce_target(float *tl, const float *logits, const int32_t *target, int64_t v0,
                          int64_t Tc, int64_t V) {
    for (int64_t t = 0; t < Tc; t++) {
        int64_t j = (int64_t)target[t] - v0;
        tl[t] = (target[t] >= 0 && j >= 0 && j < V) ? logits[t * V + j] : 0.0f;
    }
}

/* Rows with w == 0 are set to exactly 0 (even if their mx / se are not finite). */
static void ref_ce_backward(float *logits, const int32_t *target, int64_t v0, const float *mx,
                            const float *se, const float *w, int64_t Tc, int64_t V) {
    for (int64_t t = 0; t < Tc; t++) {
        float *lt = logits + t * V; /* [V] */
        if (w[t] == 0.0f) {
            memset(lt, 0, (size_t)V * sizeof *lt);
            continue;
        }
        for (int64_t j = 0; j < V; j++)
            lt[j] = (float)(w[t] * (exp((double)lt[j] - mx[t]) / se[t]));
        int64_t j = (int64_t)target[t] - v0;
        if (target[t] >= 0 && j >= 0 && j < V) lt[j] -= w[t];
    }
}

/* ---- embedding ------------------------------------------------------------------------- */

static void ref_embed_forward(float *out, const GemmWeight *table, const int32_t *ids, int64_t v0,
                              int64_t T, int64_t C) {
    SL_CHECK(table->cols == C, "embedding table has %lld cols, C = %lld", (long long)table->cols,
             (long long)C);
    for (int64_t t = 0; t < T; t++) {
        float *ot = out + t * C; /* [C] */
        int64_t r = (int64_t)ids[t] - v0;
        if (ids[t] < 0 || r < 0 || r >= table->rows) {
            for (int64_t i = 0; i < C; i++)
                ot[i] = 0;
        } else if (table->dtype == GEMM_F32) {
            const float *row = (const float *)table->data + r * table->ld; /* [C] */
            for (int64_t i = 0; i < C; i++)
                ot[i] = row[i];
        } else if (table->dtype == GEMM_BF16) {
            const uint16_t *row = (const uint16_t *)table->data + r * table->ld; /* [C] */
            for (int64_t i = 0; i < C; i++)
                ot[i] = gemm_bf16_to_f32(row[i]);
        } else { /* quantised: dequantise the one row */
            gemm_weight_rows_f32(table, r, r + 1, ot, C);
        }
    }
}

static void ref_embed_backward(float *dtable, const float *dout, const int32_t *ids, int64_t v0,
                               int64_t Vloc, int64_t T, int64_t C) {
    for (int64_t t = 0; t < T; t++) {
        int64_t r = (int64_t)ids[t] - v0;
        if (ids[t] < 0 || r < 0 || r >= Vloc) continue;
        for (int64_t i = 0; i < C; i++)
            dtable[r * C + i] += dout[t * C + i];
    }
}

/* ---- tables ------------------------------------------------------------------------------ */

static const KernOps g_kern_reference = {
    .name = "reference",
    .rmsnorm_forward = ref_rmsnorm_forward,
    .rmsnorm_backward = ref_rmsnorm_backward,
    .rope_forward = ref_rope_forward,
    .rope_backward = ref_rope_backward,
    .swiglu_forward = ref_swiglu_forward,
    .swiglu_backward = ref_swiglu_backward,
    .attention_forward = ref_attention_forward,
    .attention_backward = ref_attention_backward,
    .ce_max = ref_ce_max,
    .ce_sumexp = ref_ce_sumexp,
    .ce_target = ref_ce_target,
    .ce_backward = ref_ce_backward,
    .embed_forward = ref_embed_forward,
    .embed_backward = ref_embed_backward,
};

const KernOps *kern_ops_reference(void) {
    return &g_kern_reference;
}

const KernOps *kern_ops_by_name(const char *name) {
    if (!name) return NULL;
    if (strcmp(name, "reference") == 0) return kern_ops_reference();
    if (strcmp(name, "fast") == 0) return kern_ops_fast();
    return NULL;
}

/* kern_scratch_floats() is defined in kernels_fast.c, beside the kernels that use it. */

/* HF _compute_default_rope_parameters, in float32 like torch does:
 *   inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
 * then, for rope_type "llama3", HF modeling_rope_utils._compute_llama3_parameters (from
 * Meta's llama3 reference code), again op by op in float32. */
void kern_rope_inv_freq(float *inv_freq, int64_t D, double theta, const KernRopeScaling *s) {
    SL_CHECK(D > 0 && (D & 1) == 0, "rope head dim %lld must be even", (long long)D);
    int64_t half = D / 2;
    float base = (float)theta;
    for (int64_t i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)D;
        /* pow in double then rounded: the correctly rounded float32 pow in nearly all cases */
        float p = (float)pow((double)base, (double)e);
        inv_freq[i] = 1.0f / p; /* reciprocal(p) * 1.0 in torch: the same float */
    }
    if (!s || s->type == 0) return;
    SL_CHECK(s->type == 1, "unknown rope scaling type %d", s->type);
    SL_CHECK(s->factor > 0 && s->high_freq_factor != s->low_freq_factor && s->low_freq_factor > 0 &&
                 s->high_freq_factor > 0 && s->original_max_position > 0,
             "bad llama3 rope_scaling parameters");
    /* torch evaluates `scalar / tensor` as tensor.reciprocal() * scalar (Tensor.__rtruediv__),
     * and Python-float scalars enter float32 arithmetic rounded to float32. */
    float factor = (float)s->factor;
    float low_freq_factor = (float)s->low_freq_factor;
    float old_ctx = (float)s->original_max_position;
    float low_freq_wavelen = (float)((double)s->original_max_position / s->low_freq_factor);
    float high_freq_wavelen = (float)((double)s->original_max_position / s->high_freq_factor);
    float two_pi = (float)(2.0 * 3.14159265358979323846);
    float denom = (float)(s->high_freq_factor - s->low_freq_factor);
    for (int64_t i = 0; i < half; i++) {
        float f = inv_freq[i];
        float wavelen = (1.0f / f) * two_pi;
        /* wavelen > low_freq_wavelen: divide by factor; wavelen < high_freq_wavelen: keep */
        float fl = wavelen > low_freq_wavelen ? f / factor : f;
        float smooth = ((1.0f / wavelen) * old_ctx - low_freq_factor) / denom;
        float smoothed = (1.0f - smooth) * fl / factor + smooth * fl;
        int medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
        inv_freq[i] = medium ? smoothed : fl;
    }
}

/* HF LlamaRotaryEmbedding.forward: freqs = inv_freq (x) position (a float32 product),
 * emb = cat(freqs, freqs); we keep only the first half since both halves are equal. */
void kern_rope_tables(float *cos, float *sin, const int64_t *pos, int64_t T, const float *inv_freq,
                      int64_t half) {
    for (int64_t t = 0; t < T; t++) {
        float p = (float)pos[t];
        for (int64_t i = 0; i < half; i++) {
            float a = p * inv_freq[i];
            cos[t * half + i] = cosf(a);
            sin[t * half + i] = sinf(a);
        }
    }
}

void kern_doc_starts(int32_t *doc_start, const int64_t *pos, int64_t T) {
    int32_t cur = 0;
    for (int64_t t = 0; t < T; t++) {
        if (pos[t] == 0) cur = (int32_t)t;
        doc_start[t] = cur;
    }
}
