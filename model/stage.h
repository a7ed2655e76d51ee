/* Pipeline stages (issue 19): the decoder's L layers cut into P contiguous stages, the
 * embedding with the first and final norm + lm_head + loss with the last. A split is
 * first[0..P]: stage s holds layers [first[s], first[s+1]), first[0] = 0, first[P] = L, every
 * stage at least one layer. The cost of stage s = (s == 0 ? first_extra : 0) + its layers'
 * costs + (s == P - 1 ? last_extra : 0), summed in that order.
 * Legend: L layers, P stages, T tokens per sequence, C hidden, F ffn, H heads, KV kv-heads,
 * D head dim, V vocabulary. */
#ifndef SHARDLORA_MODEL_STAGE_H
#define SHARDLORA_MODEL_STAGE_H

#include <stdint.h>

#include "../io/hfconfig.h"
#include "../runtime/err.h"

/* Modelled training FLOPs per token, in the terms of llama_flops_per_token (model/llama.h,
 * DESIGN.md §9: 4 * N_big + 6 * L * (H*D) * (T + 1) + adapter), split by where they run. */
typedef struct {
    double layer; /* one decoder layer: 4 * (its seven projections' parameters) + 6*(H*D)*(T+1) */
    double first; /* the embedding: a row lookup, no FLOPs in that formula (0) */
    double last;  /* lm_head: 4 * V * C (final norm and loss are O(C + V) per token: not counted) */
} StageCost;

/* The cost model of config c at T tokens per sequence; L * layer + first + last is
 * llama_flops_per_token without adapters (their FLOPs are small and depend on the adapter). */
void stage_cost_model(StageCost *sc, const HfcConfig *c, int64_t T);

/* The split of L layers into P stages that minimises the largest stage cost, exactly (a binary
 * search over the answer, O(64 L)). layer_cost [L] (NULL: every layer costs 1) and the extras
 * must be finite and >= 0. Ties go to the split whose earlier stages are fullest. first gets
 * P + 1 entries. Refused (0, one line in st): P < 1, P > L, a bad cost. */
int stage_split(int64_t L, int P, const double *layer_cost, double first_extra, double last_extra,
                int64_t *first, ErrStatus *st);

/* The largest stage cost of split first[0..P] (costs as stage_split's). */
double stage_max_cost(int P, const double *layer_cost, double first_extra, double last_extra,
                      const int64_t *first);

/* --pp-layers "10,11,11": P whole numbers >= 1 summing to L, as the split first[0..P].
 * Refused (0, one line in st naming --pp-layers): not P entries, an entry that is not a whole
 * number or is < 1, a sum other than L, P < 1, P > L. */
int stage_parse_layers(const char *spec, int64_t L, int P, int64_t *first, ErrStatus *st);

#endif
