/* The key/value cache of inference, sharded by heads like the attention weights
 * (DESIGN.md §3): each TP rank caches only its own KVl kv heads (the replicated one when
 * kv-heads < tp, as training holds it), so a decode step needs no communication for
 * attention. Keys are cached after RoPE. The cached attention of query rows at positions
 * [p0, p0 + n) reads keys and values [0, p0 + n) of one sequence slot.
 *
 * Legend: L layers (a pipeline stage's own: llama.c indexes them l - l0), S slots (sequences
 * decoded together), Tmax positions per slot, KVl kv heads on this rank, H query heads on
 * this rank, D head dim, n query rows. */
#ifndef SHARDLORA_MODEL_KVCACHE_H
#define SHARDLORA_MODEL_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/gemm.h"
#include "../runtime/mem.h"

typedef struct {
    int64_t L, S, Tmax, KVl, D;
    float *k, *v; /* [L, S, Tmax, KVl*D] keys (after RoPE) and values */
    int64_t *len; /* [S] positions filled in every layer */
    size_t bytes; /* of k and v (MEM_ACTIVATION) */
} KvCache;

void kvc_init(KvCache *c, int64_t L, int64_t S, int64_t Tmax, int64_t KVl, int64_t D, MemCtx *mem);
void kvc_free(KvCache *c, MemCtx *mem);

/* Keys / values of (layer l, slot s): [Tmax, KVl*D], row stride KVl*D. */
static inline float *kvc_keys(const KvCache *c, int64_t l, int64_t s) {
    return c->k + ((size_t)(l * c->S + s) * (size_t)c->Tmax) * (size_t)(c->KVl * c->D);
}
static inline float *kvc_values(const KvCache *c, int64_t l, int64_t s) {
    return c->v + ((size_t)(l * c->S + s) * (size_t)c->Tmax) * (size_t)(c->KVl * c->D);
}

/* Copies n rows k, v [n, KVl*D] to positions [p0, p0 + n) of slot s in layer l. */
void kvc_write(KvCache *c, int64_t l, int64_t s, int64_t p0, int64_t n, const float *k,
               const float *v);

/* Causal attention of n query rows q [n, H*D] at positions [p0, p0 + n) of slot s over the
 * cached keys of layer l (already holding [0, p0 + n)): row i attends positions [0, p0 + i];
 * query head h uses kv head h / (H / KVl); scale 1/sqrt(D). out [n, H*D].
 * scores: scratch of kvc_scores_floats(n, p0 + n, H, KVl) floats. */
void kvc_attention(GemmCtx *g, float *out, const float *q, const KvCache *c, int64_t l, int64_t s,
                   int64_t p0, int64_t n, int64_t H, float *scores);
/* Scratch kvc_attention needs for n rows over nk keys. */
size_t kvc_scores_floats(int64_t n, int64_t nk, int64_t H, int64_t KVl);

#endif
