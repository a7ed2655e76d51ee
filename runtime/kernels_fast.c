/* Fast transformer kernels (kern_ops_fast): the same semantics as the reference kernels in
 * kernels.c, with AVX-512 row helpers (scalar fallbacks otherwise), OpenMP over rows, and
 * attention as per-head GEMMs through gemm_f32 on blocks of queries.
 *
 * Legend: T tokens, C hidden, V vocabulary columns of this rank, H query heads, KV kv heads,
 * D head dim, bq query rows per attention block, n keys of a block. */
#include "kernels.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "err.h"

/* Query rows per attention block. Smaller blocks skip more of the masked upper triangle,
 * larger ones make better GEMMs; 64, 96 and 128 measured within ~5% of each other at
 * T = 512, D = 64 and T = 2048, D = 128 here (256 was ~10% slower). */
#ifndef FAST_ATTN_BQ
#define FAST_ATTN_BQ 128
#endif
#ifndef FAST_ATTN_MIN_SKIP
#define FAST_ATTN_MIN_SKIP 32
#endif

/* Below this many elements a loop stays on one thread: a parallel region costs a few us. */
#ifndef FAST_OMP_MIN
#define FAST_OMP_MIN 32768
#endif

/* ---- row helpers ----------------------------------------------------------------------- */

#ifdef __AVX512F__
/* Lanes [0, n) of a 16-lane vector, n in [0, 16]. */
static inline __mmask16 tail_mask(int64_t n) {
    return (__mmask16)(n >= 16 ? 0xffffu : ((1u << n) - 1u));
}

/* exp(x) on 16 lanes: x = k ln2 + r, |r| <= ln2/2, with ln2 split in two (Cody-Waite) so r
 * is exact enough; e^r by its degree-7 Taylor polynomial (truncation < 6e-9 relative);
 * 2^k applied with vscalefps, which also yields 0 / inf on under- / overflow. About 1 ulp.
 * vmaxps / vminps return their second operand when either is NaN, so NaN propagates. */
static inline __m512 exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k);
}
#endif

static float row_max(const float *x, int64_t n) {
#ifdef __AVX512F__
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 mk = tail_mask(n - i);
        m = _mm512_mask_max_ps(m, mk, m, _mm512_maskz_loadu_ps(mk, x + i));
    }
    return _mm512_reduce_max_ps(m);
#else
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
#endif
}

/* y[i] = exp(x[i] - c) (y may be x); returns the sum (16 float partial sums: rows here are
 * at most a sequence long). */
static float row_exp_sum(float *y, const float *x, float c, int64_t n) {
#ifdef __AVX512F__
    __m512 s = _mm512_setzero_ps(), vc = _mm512_set1_ps(c);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 mk = tail_mask(n - i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, x + i), vc));
        _mm512_mask_storeu_ps(y + i, mk, e);
        s = _mm512_mask_add_ps(s, mk, s, e);
    }
    return _mm512_reduce_add_ps(s);
#else
    float s = 0;
    for (int64_t i = 0; i < n; i++) {
        y[i] = expf(x[i] - c);
        s += y[i];
    }
    return s;
#endif
}

/* sum exp(x[i] - c) accumulated in double: vocabulary rows are long (1e5 terms). */
static double row_exp_sum_f64(const float *x, float c, int64_t n) {
#ifdef __AVX512F__
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    __m512 vc = _mm512_set1_ps(c);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 mk = tail_mask(n - i);
        __m512 e =
            _mm512_maskz_mov_ps(mk, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, x + i), vc)));
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(
            s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
#else
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += expf(x[i] - c);
    return s;
#endif
}

/* y[i] = a * exp(x[i] - c), in place allowed. */
static void row_exp_scale(float *y, const float *x, float c, float a, int64_t n) {
#ifdef __AVX512F__
    __m512 vc = _mm512_set1_ps(c), va = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 mk = tail_mask(n - i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, x + i), vc));
        _mm512_mask_storeu_ps(y + i, mk, _mm512_mul_ps(e, va));
    }
#else
    for (int64_t i = 0; i < n; i++)
        y[i] = a * expf(x[i] - c);
#endif
}

static void row_scale(float *x, float a, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++)
        x[i] *= a;
}

static float row_dot(const float *a, const float *b, int64_t n) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Attention backward on one score row: s <- p = exp(s - lse); dp <- p (dp - drow). */
static void row_softmax_grad(float *s, float *dp, float lse, float drow, int64_t n) {
#ifdef __AVX512F__
    __m512 vl = _mm512_set1_ps(lse), vd = _mm512_set1_ps(drow);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 mk = tail_mask(n - i);
        __m512 p = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, s + i), vl));
        __m512 g = _mm512_sub_ps(_mm512_maskz_loadu_ps(mk, dp + i), vd);
        _mm512_mask_storeu_ps(s + i, mk, p);
        _mm512_mask_storeu_ps(dp + i, mk, _mm512_mul_ps(p, g));
    }
#else
    for (int64_t i = 0; i < n; i++) {
        float p = expf(s[i] - lse);
        s[i] = p;
        dp[i] = p * (dp[i] - drow);
    }
#endif
}

/* ---- RMSNorm ------------------------------------------------------------------------- */

static void fast_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int64_t T,
                                 int64_t C, float eps) {
#pragma omp parallel for if (T * C >= FAST_OMP_MIN) schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * C; /* [C] */
        float *ot = out + t * C;     /* [C] */
        float r = 1.0f / sqrtf(row_dot(xt, xt, C) / (float)C + eps);
        rstd[t] = r;
#pragma omp simd
        for (int64_t i = 0; i < C; i++)
            ot[i] = (xt[i] * r) * w[i];
    }
}

static void fast_rmsnorm_backward(float *dx, const float *dout, const float *x, const float *w,
                                  const float *rstd, int64_t T, int64_t C) {
#pragma omp parallel for if (T * C >= FAST_OMP_MIN) schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * C;    /* [C] */
        const float *gt = dout + t * C; /* [C] */
        float *dxt = dx + t * C;        /* [C] */
        float r = rstd[t];
        float dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < C; i++)
            dot += gt[i] * w[i] * xt[i];
        float c = r * r * r * dot / (float)C;
#pragma omp simd
        for (int64_t i = 0; i < C; i++)
            dxt[i] += r * w[i] * gt[i] - c * xt[i];
    }
}

/* ---- RoPE ------------------------------------------------------------------------------ */

static void fast_rope_forward(float *x, const float *cos, const float *sin, int64_t T, int64_t nh,
                              int64_t D) {
    int64_t half = D / 2;
#pragma omp parallel for if (T * nh * D >= FAST_OMP_MIN) schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const float *ct = cos + t * half, *st = sin + t * half; /* [half] */
        for (int64_t h = 0; h < nh; h++) {
            float *a = x + (t * nh + h) * D; /* [half] first half */
            float *b = a + half;             /* [half] second half */
#pragma omp simd
            for (int64_t i = 0; i < half; i++) {
                float ai = a[i], bi = b[i];
                a[i] = ai * ct[i] - bi * st[i];
                b[i] = bi * ct[i] + ai * st[i];
            }
        }
    }
}

static void fast_rope_backward(float *dx, const float *cos, const float *sin, int64_t T, int64_t nh,
                               int64_t D) {
    int64_t half = D / 2;
#pragma omp parallel for if (T * nh * D >= FAST_OMP_MIN) schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const float *ct = cos + t * half, *st = sin + t * half; /* [half] */
        for (int64_t h = 0; h < nh; h++) {
            float *a = dx + (t * nh + h) * D; /* [half] */
            float *b = a + half;              /* [half] */
#pragma omp simd
            for (int64_t i = 0; i < half; i++) {
                float ai = a[i], bi = b[i];
                a[i] = ai * ct[i] + bi * st[i];
                b[i] = bi * ct[i] - ai * st[i];
            }
        }
    }
}

/* ---- SwiGLU ------------------------------------------------------------------------------ */

/* Elementwise kernels run over chunks of this many elements (a multiple of 16). */
#define FAST_CHUNK 4096

static void fast_swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
    int64_t nchunk = (n + FAST_CHUNK - 1) / FAST_CHUNK;
#pragma omp parallel for if (n >= FAST_OMP_MIN) schedule(static)
    for (int64_t c = 0; c < nchunk; c++) {
        int64_t i0 = c * FAST_CHUNK, i1 = i0 + FAST_CHUNK < n ? i0 + FAST_CHUNK : n;
#ifdef __AVX512F__
        __m512 one = _mm512_set1_ps(1.0f);
        for (int64_t i = i0; i < i1; i += 16) {
            __mmask16 mk = tail_mask(i1 - i);
            __m512 g = _mm512_maskz_loadu_ps(mk, gate + i);
            __m512 u = _mm512_maskz_loadu_ps(mk, up + i);
            __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
            __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
            _mm512_mask_storeu_ps(out + i, mk, _mm512_mul_ps(silu, u));
        }
#else
        for (int64_t i = i0; i < i1; i++)
            out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
#endif
    }
}

static void fast_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                                 const float *up, int64_t n) {
    int64_t nchunk = (n + FAST_CHUNK - 1) / FAST_CHUNK;
#pragma omp parallel for if (n >= FAST_OMP_MIN) schedule(static)
    for (int64_t c = 0; c < nchunk; c++) {
        int64_t i0 = c * FAST_CHUNK, i1 = i0 + FAST_CHUNK < n ? i0 + FAST_CHUNK : n;
#ifdef __AVX512F__
        __m512 one = _mm512_set1_ps(1.0f);
        for (int64_t i = i0; i < i1; i += 16) {
            __mmask16 mk = tail_mask(i1 - i);
            __m512 g = _mm512_maskz_loadu_ps(mk, gate + i);
            __m512 u = _mm512_maskz_loadu_ps(mk, up + i);
            __m512 go = _mm512_maskz_loadu_ps(mk, dout + i);
            __m512 s = _mm512_div_ps(
                one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
            /* silu'(g) = s (1 + g (1 - s)) */
            __m512 ds = _mm512_mul_ps(s, _mm512_fmadd_ps(g, _mm512_sub_ps(one, s), one));
            __m512 dg = _mm512_maskz_loadu_ps(mk, dgate + i);
            __m512 du = _mm512_maskz_loadu_ps(mk, dup + i);
            dg = _mm512_fmadd_ps(_mm512_mul_ps(go, u), ds, dg);
            du = _mm512_fmadd_ps(go, _mm512_mul_ps(g, s), du);
            _mm512_mask_storeu_ps(dgate + i, mk, dg);
            _mm512_mask_storeu_ps(dup + i, mk, du);
        }
#else
        for (int64_t i = i0; i < i1; i++) {
            float g = gate[i], s = 1.0f / (1.0f + expf(-g));
            dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
            dup[i] += dout[i] * g * s;
        }
#endif
    }
}

/* ---- attention ----------------------------------------------------------------------------
 * Per head h (kv head h / (H/KV)) and block of bq queries [t0, t1): the keys any query of
 * the block may see are [kmin, t1), kmin = min doc_start over the block, so the work above
 * the diagonal and before the block's first document is skipped block-wise; the remaining
 * masked entries are zeroed in the probability rows. Q and K rows of a head are strided by
 * H*D and KV*D, which gemm_f32 takes as leading dimensions: no copies.
 *
 * Threads: the heads are split over kc->nthreads OpenMP threads, each running its GEMMs on
 * its own thread (OpenBLAS set to 1 thread for the duration of the call, then restored).
 * Measured on 2 Zen 5 cores at T = 512, H = 16, D = 64: the forward's GEMMs take 2.1 ms
 * this way vs 2.7 ms with OpenBLAS threading each small (K = D) GEMM, the softmax rows run
 * on both cores without a parallel region per block, and between large projection GEMMs
 * (as in a training step) forward + backward took 8.4 ms vs 11.0 ms. */

/* Per-thread scratch: S and dP [bq, T], private dK and dV [T, D], row factors [bq]. */
static int64_t attn_thread_floats(int64_t T, int64_t D, int64_t bq) {
    return 2 * bq * T + 2 * T * D + bq + 16; /* +16: padding between thread slices */
}

/* Threads for the head loop; 1 inside somebody else's parallel region (no nesting). */
static int attn_threads(const KernCtx *kc, int64_t H) {
    int nt = kc->nthreads > 0 ? kc->nthreads : 1;
    if (nt > H) nt = H > 0 ? (int)H : 1;
    if (omp_in_parallel()) nt = 1;
    return nt;
}

static void fast_check_attention(const KernCtx *kc, const int32_t *doc_start, int64_t T, int64_t H,
                                 int64_t KV, int64_t D, int64_t bq, int nt) {
    SL_CHECK(kc && kc->gemm && kc->scratch, "fast attention needs a KernCtx with gemm and scratch");
    SL_CHECK(KV > 0 && H == H / KV * KV, "H %lld not a multiple of KV %lld", (long long)H,
             (long long)KV);
    int64_t need = nt * attn_thread_floats(T, D, bq);
    SL_CHECK(kc->scratch_floats >= (size_t)need,
             "attention scratch %zu floats < %lld (size it with kern_scratch_floats(T, H, D, "
             "nthreads) for T %lld, nthreads %d)",
             kc->scratch_floats, (long long)need, (long long)T, nt);
    for (int64_t t = 0; t < T; t++)
        SL_CHECK(doc_start[t] >= 0 && doc_start[t] <= t, "doc_start[%lld] = %d", (long long)t,
                 (int)doc_start[t]);
}

/* With nt > 1 threads each GEMM runs on its caller's thread: OpenBLAS's pthread pool would
 * otherwise be asked for help by every thread for every small GEMM and oversubscribe the
 * cores (measured: 2x slower). Returns the thread count to restore (0: nothing changed). */
static int attn_blas_serial_begin(const KernCtx *kc, int nt) {
    if (nt <= 1) return 0;
    return gemm_set_blas_threads(kc->gemm, 1);
}

static void attn_blas_serial_end(const KernCtx *kc, int prev) {
    if (prev > 0) gemm_set_blas_threads(kc->gemm, prev);
}

/* End of the query block starting at t0: bq rows, or fewer so that a block does not run
 * past a document start, letting the next block skip the keys before it (packed sequences).
 * It is cut only where that skips at least FAST_ATTN_MIN_SKIP keys, so many tiny documents
 * do not become many tiny GEMMs; their rows just see a few more masked keys. */
static int64_t block_end(const int32_t *doc_start, int64_t t0, int64_t T, int64_t bq) {
    int64_t lim = t0 + bq < T ? t0 + bq : T;
    for (int64_t t = t0 + 1; t < lim; t++)
        if (doc_start[t] != doc_start[t - 1] && t - doc_start[t0] >= FAST_ATTN_MIN_SKIP) return t;
    return lim;
}

static int64_t block_kmin(const int32_t *doc_start, int64_t t0, int64_t t1) {
    int64_t kmin = t0;
    for (int64_t t = t0; t < t1; t++)
        if (doc_start[t] < kmin) kmin = doc_start[t];
    return kmin;
}

/* Forward of heads [h0, h1) on one thread, scratch ws [attn_thread_floats]. */
static void attn_forward_heads(GemmCtx *gm, float *ws, float *out, float *lse, const float *q,
                               const float *k, const float *v, const int32_t *doc_start, int64_t T,
                               int64_t H, int64_t KV, int64_t D, int64_t bq, int64_t h0,
                               int64_t h1) {
    int64_t HD = H * D, KVD = KV * D, G = H / KV;
    float scale = 1.0f / sqrtf((float)D);
    float *S = ws;                             /* [bq, n] scaled scores, then exp(s - rowmax) */
    float *rinv = ws + 2 * bq * T + 2 * T * D; /* [bq] 1 / row sum */
    for (int64_t h = h0; h < h1; h++) {
        int64_t kvh = h / G;
        for (int64_t t0 = 0, t1; t0 < T; t0 = t1) {
            t1 = block_end(doc_start, t0, T, bq);
            int64_t m = t1 - t0;
            int64_t kmin = block_kmin(doc_start, t0, t1), n = t1 - kmin;
            const float *kb = k + kmin * KVD + kvh * D; /* [n, D] stride KVD */
            const float *vb = v + kmin * KVD + kvh * D; /* [n, D] stride KVD */
            float *ob = out + t0 * HD + h * D;          /* [m, D] stride HD */
            gemm_f32(gm, 0, 1, m, n, D, scale, q + t0 * HD + h * D, HD, kb, KVD, 0.0f, S, n);
            for (int64_t i = 0; i < m; i++) {
                int64_t t = t0 + i;
                int64_t a = doc_start[t] - kmin, b = t - kmin + 1; /* keys [a, b) of row i */
                float *row = S + i * n;                            /* [n] */
                float mx = row_max(row + a, b - a);
                float se = row_exp_sum(row + a, row + a, mx, b - a);
                lse[h * T + t] = mx + logf(se);
                rinv[i] = 1.0f / se;
                memset(row, 0, (size_t)a * sizeof *row);
                memset(row + b, 0, (size_t)(n - b) * sizeof *row);
            }
            /* O = (exp(S - max) V) / rowsum: normalising the [m, D] result is cheaper than
             * normalising the [m, n] probabilities */
            gemm_f32(gm, 0, 0, m, D, n, 1.0f, S, n, vb, KVD, 0.0f, ob, HD);
            for (int64_t i = 0; i < m; i++)
                row_scale(ob + i * HD, rinv[i], D);
        }
    }
}

static void fast_attention_forward(KernCtx *kc, float *out, float *lse, const float *q,
                                   const float *k, const float *v, const int32_t *doc_start,
                                   int64_t T, int64_t H, int64_t KV, int64_t D) {
    int64_t bq = T < FAST_ATTN_BQ ? T : FAST_ATTN_BQ;
    int nt = attn_threads(kc, H);
    fast_check_attention(kc, doc_start, T, H, KV, D, bq, nt);
    int64_t per = attn_thread_floats(T, D, bq);
    int prev = attn_blas_serial_begin(kc, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        int64_t h0 = H * tid / nth, h1 = H * (tid + 1) / nth; /* this thread's heads */
        attn_forward_heads(kc->gemm, kc->scratch + tid * per, out, lse, q, k, v, doc_start, T, H,
                           KV, D, bq, h0, h1);
    }
    attn_blas_serial_end(kc, prev);
}

/* Backward of heads [h0, h1) on one thread, scratch ws [attn_thread_floats]. A kv head whose
 * query heads are all in [h0, h1) belongs to this thread alone: its dK, dV are accumulated
 * in place. One shared with another thread is accumulated in the private [T, D] buffers and
 * added under a critical section when this thread is done with it. */
static void attn_backward_heads(GemmCtx *gm, float *ws, float *dq, float *dk, float *dv,
                                const float *dout, const float *out, const float *lse,
                                const float *q, const float *k, const float *v,
                                const int32_t *doc_start, int64_t T, int64_t H, int64_t KV,
                                int64_t D, int64_t bq, int64_t h0, int64_t h1) {
    int64_t HD = H * D, KVD = KV * D, G = H / KV;
    float scale = 1.0f / sqrtf((float)D);
    float *S = ws;                /* [bq, n] scaled scores, then P */
    float *dP = ws + bq * T;      /* [bq, n] dO V^T, then dS = P (dP - Drow) */
    float *pdk = ws + 2 * bq * T; /* [T, D] private dK of a shared kv head */
    float *pdv = pdk + T * D;     /* [T, D] private dV of a shared kv head */
    for (int64_t h = h0; h < h1; h++) {
        int64_t kvh = h / G;
        int shared = kvh * G < h0 || (kvh + 1) * G > h1;
        int first = h == h0 || h == kvh * G, last = h == h1 - 1 || h == (kvh + 1) * G - 1;
        float *dkh = shared ? pdk : dk + kvh * D; /* [T, D] stride lds */
        float *dvh = shared ? pdv : dv + kvh * D; /* [T, D] stride lds */
        int64_t lds = shared ? D : KVD;
        if (shared && first) {
            memset(pdk, 0, (size_t)(T * D) * sizeof *pdk);
            memset(pdv, 0, (size_t)(T * D) * sizeof *pdv);
        }
        for (int64_t t0 = 0, t1; t0 < T; t0 = t1) {
            t1 = block_end(doc_start, t0, T, bq);
            int64_t m = t1 - t0;
            int64_t kmin = block_kmin(doc_start, t0, t1), n = t1 - kmin;
            const float *qb = q + t0 * HD + h * D;      /* [m, D] stride HD */
            const float *gb = dout + t0 * HD + h * D;   /* [m, D] stride HD */
            const float *kb = k + kmin * KVD + kvh * D; /* [n, D] stride KVD */
            const float *vb = v + kmin * KVD + kvh * D; /* [n, D] stride KVD */
            gemm_f32(gm, 0, 1, m, n, D, scale, qb, HD, kb, KVD, 0.0f, S, n);
            gemm_f32(gm, 0, 1, m, n, D, 1.0f, gb, HD, vb, KVD, 0.0f, dP, n);
            for (int64_t i = 0; i < m; i++) {
                int64_t t = t0 + i;
                int64_t a = doc_start[t] - kmin, b = t - kmin + 1; /* keys [a, b) of row i */
                float *srow = S + i * n, *drow = dP + i * n;       /* [n], [n] */
                float dsum = row_dot(gb + i * HD, out + t * HD + h * D, D); /* Drow_t */
                row_softmax_grad(srow + a, drow + a, lse[h * T + t], dsum, b - a);
                memset(srow, 0, (size_t)a * sizeof *srow);
                memset(srow + b, 0, (size_t)(n - b) * sizeof *srow);
                memset(drow, 0, (size_t)a * sizeof *drow);
                memset(drow + b, 0, (size_t)(n - b) * sizeof *drow);
            }
            gemm_f32(gm, 0, 0, m, D, n, scale, dP, n, kb, KVD, 1.0f, dq + t0 * HD + h * D, HD);
            gemm_f32(gm, 1, 0, n, D, m, scale, dP, n, qb, HD, 1.0f, dkh + kmin * lds, lds);
            gemm_f32(gm, 1, 0, n, D, m, 1.0f, S, n, gb, HD, 1.0f, dvh + kmin * lds, lds);
        }
        if (shared && last) {
#pragma omp critical(shardlora_attn_dkv)
            for (int64_t t = 0; t < T; t++) {
                float *a = dk + t * KVD + kvh * D, *b = dv + t * KVD + kvh * D; /* [D], [D] */
#pragma omp simd
                for (int64_t d = 0; d < D; d++) {
                    a[d] += pdk[t * D + d];
                    b[d] += pdv[t * D + d];
                }
            }
        }
    }
}

static void fast_attention_backward(KernCtx *kc, float *dq, float *dk, float *dv, const float *dout,
                                    const float *out, const float *lse, const float *q,
                                    const float *k, const float *v, const int32_t *doc_start,
                                    int64_t T, int64_t H, int64_t KV, int64_t D) {
    int64_t bq = T < FAST_ATTN_BQ ? T : FAST_ATTN_BQ;
    int nt = attn_threads(kc, H);
    fast_check_attention(kc, doc_start, T, H, KV, D, bq, nt);
    int64_t per = attn_thread_floats(T, D, bq);
    int prev = attn_blas_serial_begin(kc, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        int64_t h0 = H * tid / nth, h1 = H * (tid + 1) / nth; /* this thread's heads */
        attn_backward_heads(kc->gemm, kc->scratch + tid * per, dq, dk, dv, dout, out, lse, q, k, v,
                            doc_start, T, H, KV, D, bq, h0, h1);
    }
    attn_blas_serial_end(kc, prev);
}

/* Lives here, next to the only kernels that use scratch (the reference needs none). */
size_t kern_scratch_floats(int64_t T, int64_t H, int64_t D, int nthreads) {
    (void)H; /* per-thread buffers are per head, and heads run one after another */
    int64_t bq = T < FAST_ATTN_BQ ? T : FAST_ATTN_BQ;
    return (size_t)((nthreads > 0 ? nthreads : 1) * attn_thread_floats(T, D, bq));
}

/* ---- cross-entropy pieces ------------------------------------------------------------------ */

static void fast_ce_max(float *mx, const float *logits, int64_t Tc, int64_t V) {
#pragma omp parallel for if (Tc * V >= FAST_OMP_MIN) schedule(static)
    for (int64_t t = 0; t < Tc; t++)
        mx[t] = row_max(logits + t * V, V);
}

static void fast_ce_sumexp(float *se, const float *logits, const float *mx, int64_t Tc, int64_t V) {
#pragma omp parallel for if (Tc * V >= FAST_OMP_MIN) schedule(static)
    for (int64_t t = 0; t < Tc; t++)
        se[t] = (float)row_exp_sum_f64(logits + t * V, mx[t], V);
}

static void fast_ce_target(float *tl, const float *logits, const int32_t *target, int64_t v0,
                           int64_t Tc, int64_t V) {
    for (int64_t t = 0; t < Tc; t++) {
        int64_t j = (int64_t)target[t] - v0;
        tl[t] = (target[t] >= 0 && j >= 0 && j < V) ? logits[t * V + j] : 0.0f;
    }
}

static void fast_ce_backward(float *logits, const int32_t *target, int64_t v0, const float *mx,
                             const float *se, const float *w, int64_t Tc, int64_t V) {
#pragma omp parallel for if (Tc * V >= FAST_OMP_MIN) schedule(static)
    for (int64_t t = 0; t < Tc; t++) {
        float *lt = logits + t * V; /* [V] */
        if (w[t] == 0.0f) {
            memset(lt, 0, (size_t)V * sizeof *lt);
            continue;
        }
        row_exp_scale(lt, lt, mx[t], w[t] / se[t], V);
        int64_t j = (int64_t)target[t] - v0;
        if (target[t] >= 0 && j >= 0 && j < V) lt[j] -= w[t];
    }
}

/* ---- embedding ------------------------------------------------------------------------------ */

static void fast_embed_forward(float *out, const GemmWeight *table, const int32_t *ids, int64_t v0,
                               int64_t T, int64_t C) {
    SL_CHECK(table->cols == C, "embedding table has %lld cols, C = %lld", (long long)table->cols,
             (long long)C);
#pragma omp parallel for if (T * C >= FAST_OMP_MIN) schedule(static)
    for (int64_t t = 0; t < T; t++) {
        float *ot = out + t * C; /* [C] */
        int64_t r = (int64_t)ids[t] - v0;
        if (ids[t] < 0 || r < 0 || r >= table->rows) {
            memset(ot, 0, (size_t)C * sizeof *ot);
        } else if (table->dtype == GEMM_F32) {
            memcpy(ot, (const float *)table->data + r * table->ld, (size_t)C * sizeof *ot);
        } else if (table->dtype != GEMM_BF16) { /* quantised: dequantise the one row */
            gemm_weight_rows_f32(table, r, r + 1, ot, C);
        } else {
            const uint16_t *row = (const uint16_t *)table->data + r * table->ld; /* [C] */
            /* BF16 is the top half of an F32: shift into place (gemm_bf16_to_f32, inlined
             * so the loop vectorises) */
#pragma omp simd
            for (int64_t i = 0; i < C; i++) {
                uint32_t u = (uint32_t)row[i] << 16;
                float f;
                memcpy(&f, &u, sizeof f);
                ot[i] = f;
            }
        }
    }
}

static void fast_embed_backward(float *dtable, const float *dout, const int32_t *ids, int64_t v0,
                                int64_t Vloc, int64_t T, int64_t C) {
    /* Sequential over tokens (repeated ids would race), vectorised over C. */
    for (int64_t t = 0; t < T; t++) {
        int64_t r = (int64_t)ids[t] - v0;
        if (ids[t] < 0 || r < 0 || r >= Vloc) continue;
        float *dr = dtable + r * C;    /* [C] */
        const float *g = dout + t * C; /* [C] */
#pragma omp simd
        for (int64_t i = 0; i < C; i++)
            dr[i] += g[i];
    }
}

static const KernOps g_kern_fast = {
    .name = "fast",
    .rmsnorm_forward = fast_rmsnorm_forward,
    .rmsnorm_backward = fast_rmsnorm_backward,
    .rope_forward = fast_rope_forward,
    .rope_backward = fast_rope_backward,
    .swiglu_forward = fast_swiglu_forward,
    .swiglu_backward = fast_swiglu_backward,
    .attention_forward = fast_attention_forward,
    .attention_backward = fast_attention_backward,
    .ce_max = fast_ce_max,
    .ce_sumexp = fast_ce_sumexp,
    .ce_target = fast_ce_target,
    .ce_backward = fast_ce_backward,
    .embed_forward = fast_embed_forward,
    .embed_backward = fast_embed_backward,
};

const KernOps *kern_ops_fast(void) {
    return &g_kern_fast;
}
