/* The key/value cache of inference and the attention that reads it (see kvcache.h). */
#include "kvcache.h"

#include <math.h>
#include <string.h>

#include "../runtime/err.h"

void kvc_init(KvCache *c, int64_t L, int64_t S, int64_t Tmax, int64_t KVl, int64_t D, MemCtx *mem) {
    memset(c, 0, sizeof *c);
    c->L = L;
    c->S = S;
    c->Tmax = Tmax;
    c->KVl = KVl;
    c->D = D;
    c->bytes = (size_t)(L * S * Tmax * KVl * D) * sizeof(float);
    c->k = mem_alloc(mem, MEM_ACTIVATION, c->bytes);
    c->v = mem_alloc(mem, MEM_ACTIVATION, c->bytes);
    c->len = mem_alloc(mem, MEM_OTHER, (size_t)S * sizeof(int64_t));
}

void kvc_free(KvCache *c, MemCtx *mem) {
    mem_free(mem, MEM_ACTIVATION, c->k, c->bytes);
    mem_free(mem, MEM_ACTIVATION, c->v, c->bytes);
    mem_free(mem, MEM_OTHER, c->len, (size_t)c->S * sizeof(int64_t));
    memset(c, 0, sizeof *c);
}

void kvc_write(KvCache *c, int64_t l, int64_t s, int64_t p0, int64_t n, const float *k,
               const float *v) {
    SL_CHECK(l >= 0 && l < c->L && s >= 0 && s < c->S && p0 >= 0 && p0 + n <= c->Tmax,
             "kv cache: layer %lld slot %lld positions [%lld, %lld) outside [%lld, %lld, %lld]",
             (long long)l, (long long)s, (long long)p0, (long long)(p0 + n), (long long)c->L,
             (long long)c->S, (long long)c->Tmax);
    const size_t KD = (size_t)(c->KVl * c->D), bytes = (size_t)n * KD * sizeof(float);
    memcpy(kvc_keys(c, l, s) + (size_t)p0 * KD, k, bytes);
    memcpy(kvc_values(c, l, s) + (size_t)p0 * KD, v, bytes);
}

size_t kvc_scores_floats(int64_t n, int64_t nk, int64_t H, int64_t KVl) {
    const int64_t G = H / KVl, rows = n > G ? n : G;
    return (size_t)(rows * nk);
}

/* In place on S [M, nk]: row r is a softmax over its first lim0 + r * step entries, zero
 * after them (causal mask). */
static void kvc_softmax_rows(float *S, int64_t M, int64_t nk, int64_t lim0, int64_t step) {
    for (int64_t r = 0; r < M; r++) {
        float *row = S + r * nk;
        const int64_t lim = lim0 + r * step;
        float mx = -INFINITY;
        for (int64_t j = 0; j < lim; j++)
            mx = row[j] > mx ? row[j] : mx;
        double sum = 0;
        for (int64_t j = 0; j < lim; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < lim; j++)
            row[j] *= inv;
        for (int64_t j = lim; j < nk; j++)
            row[j] = 0.0f;
    }
}

void kvc_attention(GemmCtx *g, float *out, const float *q, const KvCache *c, int64_t l, int64_t s,
                   int64_t p0, int64_t n, int64_t H, float *scores) {
    const int64_t D = c->D, KD = c->KVl * D, HD = H * D, G = H / c->KVl, nk = p0 + n;
    SL_CHECK(H % c->KVl == 0 && nk <= c->len[s], "kv cache attention: %lld keys, %lld cached",
             (long long)nk, (long long)c->len[s]);
    const float scale = 1.0f / sqrtf((float)D);
    const float *K = kvc_keys(c, l, s), *V = kvc_values(c, l, s); /* [nk, KD] */
    if (n == 1) {
        /* one query row (a decode step): the G query heads of a kv head are adjacent
         * [G, D] rows, so each kv head is one GEMM of G rows over all nk keys */
        for (int64_t kv = 0; kv < c->KVl; kv++) {
            gemm_f32(g, 0, 1, G, nk, D, scale, q + kv * G * D, D, K + kv * D, KD, 0.0f, scores, nk);
            kvc_softmax_rows(scores, G, nk, nk, 0);
            gemm_f32(g, 0, 0, G, D, nk, 1.0f, scores, nk, V + kv * D, KD, 0.0f, out + kv * G * D,
                     D);
        }
        return;
    }
    for (int64_t h = 0; h < H; h++) {
        const int64_t kv = h / G;
        gemm_f32(g, 0, 1, n, nk, D, scale, q + h * D, HD, K + kv * D, KD, 0.0f, scores, nk);
        kvc_softmax_rows(scores, n, nk, p0 + 1, 1);
        gemm_f32(g, 0, 0, n, D, nk, 1.0f, scores, nk, V + kv * D, KD, 0.0f, out + h * D, HD);
    }
}
