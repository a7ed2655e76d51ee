/* The Llama-family decoder (Llama, Mistral, Qwen2) with a frozen, tensor-parallel base and
 * adapters on any subset of its seven linears. Frozen weights held as F32, BF16, INT8 or NF4
 * (--base-dtype); their products in F32 or BF16 (runtime/gemm.h); everything else F32.
 *
 * Legend: B sequences per micro-batch, T tokens per sequence, N = B*T rows, C hidden,
 * F ffn, L layers, H heads, KV kv-heads, D head dim, V vocabulary; suffix l = this TP
 * rank's part (Hl heads, KVl kv heads, Fl ffn columns, Vl vocabulary rows).
 * Forward saves, per layer: the layer input, both norm outputs and rstd, q/k (after RoPE),
 * v, the attention output and lse, the mid residual, gate, up and the SwiGLU output; the
 * adapters save their own h (and dropped-out input, DoRA's u) in their slots. With
 * LLAMA_RECOMPUTE_LAYER (activation checkpointing per decoder layer) it keeps only the layer
 * inputs: the other buffers, the adapters' included, exist once and every layer writes them;
 * backward runs each layer's forward again from its input just before that layer's backward. */
#ifndef SHARDLORA_MODEL_LLAMA_H
#define SHARDLORA_MODEL_LLAMA_H

#include <stdint.h>

#include "../io/hfconfig.h"
#include "../parallel/grid.h"
#include "../runtime/kernels.h"
#include "adapter.h"
#include "kvcache.h"
#include "linear.h"
#include "params.h"

typedef struct {
    Linear lin[MOD_NMODULES]; /* q, k, v, o, gate, up, down (ModuleId order) */
    float *ln1_w;             /* [C] input_layernorm */
    float *ln2_w;             /* [C] post_attention_layernorm */
    AdapterSlot slot[MOD_NMODULES];
} LlamaLayer;

typedef struct {
    HfcConfig cfg;
    int tp, tp_rank;
    int pp, pp_rank; /* pipeline stages (issue 19) and this rank's */
    int64_t l0, l1;  /* this stage's decoder layers [l0, l1) (0, L at pp = 1); layers[]
                      * and the per-layer activations are indexed by the global layer and
                      * only [l0, l1) exist */
    int first, last; /* the stage holds the embedding / the final norm, lm_head and loss */
    int64_t C, F, L, H, KV, D, V;
    int64_t Hl, KVl, Fl, kv0; /* local heads, kv heads, ffn; first local kv head */
    int64_t V0, Vl;           /* local vocabulary rows [V0, V0 + Vl) */
    int base;                 /* storage asked for: LLAMA_BASE_FILE or a GemmDtype */
    GemmDtype wdtype;         /* dtype of the big frozen matrices */
    GemmWeight embed;         /* [Vl, C] (first stage; and the last when tied) */
    GemmWeight lm_head;       /* [Vl, C]; shares embed's memory when tied (last stage) */
    float *norm_w;            /* [C] (last stage) */
    LlamaLayer *layers;       /* [L] */
    float *inv_freq;          /* [D/2] */
    AdapterCfg acfg;
    void *adapter_shared; /* the kind's model-wide state (AdapterKind.shared_new), or NULL */
    ParamTable params;
    uint64_t bytes_read;       /* frozen bytes read from disk by this rank */
    uint64_t frozen_bytes;     /* frozen bytes resident on this rank */
    uint64_t dtype_bytes[4];   /* of which in each GemmDtype (norms, biases, RoPE: F32) */
    uint64_t replicated_bytes; /* of which not divided by tp: norms, row-layer biases, RoPE
                                * table, and k/v when kv heads are replicated (KV < tp) */
    /* frozen allocations, for llama_free */
    int nblocks, capblocks;
    void **blocks;
    size_t *block_bytes;
} LlamaModel;

/* One micro-batch, laid out for the kernels. */
typedef struct {
    int64_t B, T;
    int32_t *ids;       /* [N] input ids */
    int32_t *targets;   /* [N] label of the next token in the same row, -1 if ignored */
    int64_t *pos;       /* [N] position ids */
    int32_t *doc_start; /* [N] per row, relative to the row's start */
    float *cos, *sin;   /* [N, D/2] RoPE tables */
} LlamaBatch;

/* What forward keeps for backward (llama_acts_init). LAYER gives the same numbers, bit for
 * bit: the recomputed forward runs the same kernels on the same inputs with the same dropout
 * keys (AdapterEnv), and the adapters' per-step state (DoRA's norms) is made once, by
 * step_begin. It costs one more forward of the decoder layers per backward (the o_proj
 * all-reduce included; down_proj only when it has an adapter, and without its all-reduce). */
typedef enum {
    LLAMA_RECOMPUTE_NONE = 0, /* every layer's activations saved */
    LLAMA_RECOMPUTE_LAYER     /* only the layer inputs; each layer recomputed in backward */
} LlamaRecompute;

/* "none" / "layer" (-1 if unknown), and back. */
int llama_recompute_parse(const char *s);
const char *llama_recompute_name(LlamaRecompute r);

/* An adapter buffer kept once per micro-batch in flight (AdapterKind.saves). */
typedef struct {
    float **p;   /* where the slot keeps it */
    float **buf; /* [nsets] */
} LlamaSwap;

#define LLAMA_ACT_LISTS                                                                            \
    14 /* res, ln1, ln2, rstd1, rstd2, q, k, v, att, lse, mid, gate, up, act                       \
        */

typedef struct {
    int64_t N, B, T, chunk;
    LlamaRecompute recompute;
    /* Pipeline stages keep several micro-batches in flight: nsets sets of what forward saves
     * (llama_acts_init's `sets`), the per-layer lists below and the adapters' saves pointing
     * at the set in use (llama_acts_select). With LLAMA_RECOMPUTE_LAYER only the layer inputs
     * (res) are per set. fresh: the res set whose last layer's saves the shared buffers hold
     * (the last forward's), so its backward need not run that layer again. */
    int nsets;
    float ***res_set;                      /* [nsets] res lists, [L+1] each */
    float **(*lists_set)[LLAMA_ACT_LISTS]; /* [nsets]: the per-layer lists of each set */
    int nswap, capswap;
    LlamaSwap *swap; /* the adapters' saves of every set */
    float **fresh;
    /* per layer, saved by forward (with LLAMA_RECOMPUTE_LAYER all but res point at one
     * buffer each: the layer being run) */
    float **res;        /* [L+1][N, C] residual stream: input of layer l; res[L] final; [l0, l1] */
    float **ln1, **ln2; /* [L][N, C] */
    float **rstd1, **rstd2;    /* [L][N] */
    float **q, **k, **v;       /* [L][N, Hl*D], [L][N, KVl*D] (q, k after RoPE) */
    float **att;               /* [L][N, Hl*D] */
    float **lse;               /* [L][B, Hl, T] */
    float **mid;               /* [L][N, C] residual after attention */
    float **gate, **up, **act; /* [L][N, Fl] */
    float *lnf, *rstdf;        /* [N, C], [N] */
    /* backward and loss scratch */
    float *dres, *dmid, *dln, *tmpc;     /* [N, C] */
    float *dq, *datt;                    /* [N, Hl*D] */
    float *dk, *dv;                      /* [N, KVl*D] */
    float *dgate, *dup, *dact;           /* [N, Fl] */
    float *logits;                       /* [chunk, Vl] */
    float *ce_mx, *ce_se, *ce_tl, *ce_w; /* [chunk] */
    size_t bytes;
    /* every allocation, for llama_acts_free */
    int nallocs, capallocs;
    void **allocs;
    size_t *alloc_bytes;
} LlamaActs;

/* The frozen matrices as the files store them (BF16 stays BF16, F32 and F16 become F32). */
#define LLAMA_BASE_FILE (-1)

/* Reads config.json and this rank's shards from DIR: at pp > 1 (g->pp) only the layers of
 * its stage, [stages[pp_rank], stages[pp_rank + 1]) (stages: g->pp + 1 entries, model/stage.h;
 * NULL at pp = 1), the embedding on the first stage and the final norm and lm_head on the
 * last (a tied lm_head: the last stage's own copy of the embedding). The seven projections of every
 * layer, the embedding and lm_head are stored as `base` (LLAMA_BASE_FILE or a GemmDtype: F32, BF16
 * rounded, INT8 / NF4 quantised tile by tile while loading, runtime/quant.h); norms, biases
 * and the RoPE table stay F32. Bad files / shapes / layouts (or a shard that cannot be stored
 * as `base`): 0 and st names the file and the tensor. */
int llama_load(LlamaModel *m, const char *dir, const Grid *g, int base, const int64_t *stages,
               MemCtx *mem, ErrStatus *st);
/* The dimensions llama_load sets before it reads a weight (cfg, tp, tp_rank, C .. Vl, kv0)
 * for TP rank tp_rank of tp, from config c alone; everything else zero (no weights, no
 * frozen bytes). For plans and estimates of a model that is not loaded (`shardlora plan`).
 * 0 with st when llama_load would refuse the layout (--tp against the heads, kv heads and
 * intermediate_size). */
int llama_shape(LlamaModel *m, const HfcConfig *c, int tp, int tp_rank, ErrStatus *st);
/* Creates the adapters (declare, finalize the flat buffers, init from the seed). */
void llama_init_adapters(LlamaModel *m, const AdapterCfg *acfg, Grid *g, MemCtx *mem);
/* Calls every slot's step_begin (adapter.h): once per optimizer step before the first
 * forward, and before evaluation or generation. */
void llama_adapters_step_begin(LlamaModel *m, const AdapterEnv *env);
/* Calls every slot's grad_post (adapter.h): after the gradients are summed and clipped,
 * before the optimizer step. */
void llama_adapters_grad_post(LlamaModel *m, const AdapterEnv *env);
void llama_free(LlamaModel *m, MemCtx *mem);

/* Activations for micro-batches of B sequences of T tokens, and the adapter slots' scratch
 * (with LLAMA_RECOMPUTE_LAYER one set per module for all layers, when the kind can share it:
 * AdapterKind.share), for this stage's layers. sets > 1 (a pipeline stage's micro-batches in
 * flight): that many sets of what forward saves, the adapters' included (AdapterKind.saves);
 * with LLAMA_RECOMPUTE_LAYER, or when an adapter kind has no saves, that many sets of layer
 * inputs and each layer recomputed in backward. */
void llama_acts_init(LlamaActs *a, const LlamaModel *m, int64_t B, int64_t T, LlamaRecompute rc,
                     int sets, MemCtx *mem);
/* The set of layer inputs forward and backward use from now on (0 .. nsets-1). */
void llama_acts_select(LlamaActs *a, int set);
void llama_acts_free(LlamaActs *a, const LlamaModel *m, MemCtx *mem);
void llama_batch_init(LlamaBatch *b, const LlamaModel *m, int64_t B, int64_t T, MemCtx *mem);
void llama_batch_free(LlamaBatch *b, const LlamaModel *m, MemCtx *mem);
/* Fills targets, doc_start and RoPE tables from ids/labels/pos already in b (labels [N]
 * with -100 for ignored; Hugging Face shift: the target of row t is labels[t+1]). */
void llama_batch_prepare(LlamaBatch *b, const LlamaModel *m, const int64_t *labels);

/* Forward over one micro-batch; returns sum over rows of w * token_loss with
 * w = loss_scale for counted targets (1 / global count of label tokens gives the mean).
 * *counted receives the number of counted targets in this micro-batch. With want_grad,
 * leaves dL/d(final norm input) in a->dres for llama_backward. A pipeline stage runs its
 * part: the first embeds b->ids, the others start from a->res[l0] (the stage before's
 * output); all but the last stop at a->res[l1] and return 0 (*counted 0). */
double llama_forward(LlamaModel *m, LlamaActs *a, const LlamaBatch *b, float loss_scale,
                     int want_grad, const AdapterEnv *env, const KernOps *k, KernCtx *kc, Grid *g,
                     int64_t *counted);
/* Called after layer l's backward has accumulated its adapter gradients (layers finish from
 * L-1 down to 0), so their gradient sync can start while the backward goes on. */
typedef void (*LlamaLayerDone)(void *ctx, int layer);

/* Backward through the layers after llama_forward with want_grad on the same batch (and
 * the same set of layer inputs); accumulates adapter gradients into m->params.grads. With
 * LLAMA_RECOMPUTE_LAYER it first runs each layer's forward again but the last's when that
 * is fresh (the same env: the same dropout masks). A pipeline stage but the last starts from
 * a->dres = dL/d res[l1] (the next stage's); every stage leaves dL/d res[l0] in a->dres.
 * layer_done may be NULL. */
void llama_backward(LlamaModel *m, LlamaActs *a, const LlamaBatch *b, const AdapterEnv *env,
                    const KernOps *k, KernCtx *kc, Grid *g, LlamaLayerDone layer_done,
                    void *done_ctx);

/* Model FLOPs per token of a training step (DESIGN.md §9), counting causal attention as the
 * kernels compute it: 4 * N_big (forward and input-gradient matmuls of the frozen weights,
 * lm_head included) + 6 * L * (H*D) * (T + 1) + adapter FLOPs. Attention: QK^T and PV
 * forward (2 matmuls) and backward (4) at 2 FLOPs per multiply-add over the (T + 1) / 2
 * keys a query sees on average under the causal mask; the masked half is skipped, not
 * computed, and the backward's recomputation of the scores is not counted (model FLOPs,
 * not hardware FLOPs). Packed documents see fewer keys, so with packing this is an upper
 * bound. *dense_attn (may be NULL) gets PaLM's dense count 12 * L * (H*D) * T, which
 * includes the masked half; *n_big (may be NULL) N_big. The adapter FLOPs are those of this
 * stage's layers (train sums them over a pipeline's stages). */
double llama_flops_per_token(const LlamaModel *m, int64_t T, double *n_big, double *dense_attn);

/* The vocabulary rows [*v0, *v0 + *vl) TP rank r holds (an uneven split is fine). */
void llama_vocab_range(int64_t V, int tp, int r, int64_t *v0, int64_t *vl);

/* ---------------------------------------------------------------- inference
 * Inference runs the same frozen shards, kernels and adapter slots as training, without
 * saving anything for backward. A forward takes segments: n new tokens of one sequence
 * slot at positions [p0, p0 + n), p0 being what the slot's KV cache already holds. A prompt
 * is one segment (prefill; in chunks when it is longer than the rows of a forward) and a
 * decode step is one 1-row segment per slot, so prefill chunks and decode rows share the
 * linears' GEMMs. Attention of a segment at p0 == 0 is the training kernel on the cached
 * keys; at p0 > 0 it is kvc_attention. The logits of each segment's last row are left in
 * vocab-parallel form (this rank's Vl columns). */
typedef struct {
    int32_t slot;  /* KV cache slot */
    int64_t p0, n; /* positions [p0, p0 + n); p0 == the slot's cached length */
} LlamaSeg;

/* Inference buffers for up to R rows per forward, S slots of Tmax positions (R rows of the
 * current forward; the legend's N). The cache holds the stage's layers only; last, lastn,
 * rstd_last and logits exist on the last stage only. */
typedef struct {
    int64_t R, S, Tmax;
    KvCache cache;
    int64_t *pos;           /* [R] positions */
    int32_t *doc0;          /* [R] zeros: one document per segment for the training kernel */
    float *cos, *sin;       /* [R, D/2] */
    float *x;               /* [R, C] residual stream */
    float *ln, *tmpc;       /* [R, C] */
    float *rstd;            /* [R] */
    float *q, *att;         /* [R, Hl*D] */
    float *k, *v;           /* [R, KVl*D] this forward's keys (after RoPE) and values */
    float *lse;             /* [Hl, R] */
    float *gate, *up, *act; /* [R, Fl] */
    float *scores;          /* [kvc_scores_floats(R, Tmax)] */
    float *last, *lastn;    /* [S, C] each segment's last residual row and its final norm */
    float *rstd_last;       /* [S] */
    float *logits;          /* [S, Vl] the local logits of each segment's last row */
    size_t bytes;           /* activation bytes, without the cache */
    int nallocs, capallocs;
    void **allocs;
    size_t *alloc_bytes;
    int adapters_alloc; /* adapter scratch allocated for R rows */
} LlamaInfer;

/* Allocates the cache and the buffers; the adapter slots get scratch for R rows (call after
 * the adapters are loaded, and after llama_merge_adapters when merging). */
void llama_infer_init(LlamaInfer *in, LlamaModel *m, int64_t S, int64_t Tmax, int64_t R,
                      MemCtx *mem);
void llama_infer_free(LlamaInfer *in, LlamaModel *m, MemCtx *mem);
/* Runs this stage's layers [l0, l1) over nseg segments (rows in segment order, ids [sum n])
 * and writes their keys and values into the cache; on the last stage leaves in->logits
 * [nseg, Vl] (row i: segment i's last row). The first stage embeds ids; any other stage
 * starts from in->x [sum n, C] as the caller filled it (the previous stage's output), and
 * a stage that is not the last leaves its output rows in in->x for the next. Every TP rank
 * of a stage calls it with the same segments. env->training must be 0. */
void llama_infer_forward(LlamaModel *m, LlamaInfer *in, const LlamaSeg *segs, int nseg,
                         const int32_t *ids, const AdapterEnv *env, const KernOps *k, KernCtx *kc,
                         Grid *g);

/* Merges every adapter slot into this rank's shard of its frozen weight through its kind's
 * merge hook (after its step_begin), on F32 blocks of rows with BF16 weights rounded back to
 * BF16 (the row formula `shardlora merge` uses: LoRA W += s B A with both factors local,
 * [no, r] and [r, ni], DESIGN.md §4; DoRA's row norms cost one all-reduce per block of a
 * row-parallel slot), then detaches the adapters so inference has no adapter cost.
 * Collective over the TP group. Returns the number of merged modules, or -1 with st set for
 * an adapter kind that has no merge. */
int llama_merge_adapters(LlamaModel *m, GemmCtx *gc, ErrStatus *st);

#endif
