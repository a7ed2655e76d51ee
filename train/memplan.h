/* The memory a rank will need, estimated before the buffers are allocated, in the memory
 * table's categories (runtime/mem.h: frozen, adapter, optimizer, activation, comm, other),
 * and what this node allows: min(MemAvailable, the cgroup's memory limit minus its usage)
 * shared among the ranks on the node. A run that would not fit is refused with one line
 * naming the option to change, instead of growing until the machine runs out.
 *
 * The formulas mirror the allocations of model/llama.c (llama_acts_init, llama_batch_init,
 * llama_infer_init), model/lora.c (adapter scratch), model/params.c (values + gradients),
 * model/optim.c (state), runtime/gemm.c and the attention scratch (runtime/kernels.h).
 * Legend: B sequences per micro-batch, T tokens per sequence, N = B*T rows; the model's
 * dimensions as in model/llama.h (suffix l: this TP rank's part). */
#ifndef SHARDLORA_TRAIN_MEMPLAN_H
#define SHARDLORA_TRAIN_MEMPLAN_H

#include <stddef.h>
#include <stdint.h>

#include "../model/llama.h"
#include "../runtime/mem.h"

/* What sizes the buffers. */
typedef struct {
    int64_t B, T;       /* train / eval micro-batches (B = 0: none) */
    int training;       /* gradients, optimizer state and what backward needs */
    int r;              /* adapter rank (0: no adapter) */
    const char *kind;   /* adapter kind (model/adapter.h; NULL: lora) */
    unsigned targets;   /* modules with an adapter (bit per ModuleId) */
    int dropout;        /* adapter dropout on: input copies per slot */
    int recompute;      /* LLAMA_RECOMPUTE_LAYER: one layer's activations and adapter
                         * scratch, besides the layer inputs (llama_acts_init) */
    int sets;           /* micro-batches in flight on a pipeline stage (pipe_sets; 0: 1):
                         * their layer inputs, with recompute */
    int optim_states;   /* floats of optimizer state per trainable float (AdamW 2, SGD 1) */
    int threads;        /* threads per rank (0: the CPUs this rank may use) */
    int mfu_probe;      /* train measures the GEMM peak with three 1536^2 matrices */
    int64_t S, Tmax, R; /* generate: sequences, positions per sequence, rows per forward */
} MemplanIn;

typedef struct {
    int64_t bytes[MEM_NCATEGORY]; /* estimated peak bytes per category */
    int64_t total;
} MemPlan;

/* The estimate for this rank of model m (loaded: its frozen bytes are exact). Saturates at
 * INT64_MAX instead of overflowing. */
void memplan_estimate(MemPlan *p, const LlamaModel *m, const MemplanIn *in);

/* The frozen bytes TP rank tp_rank of tp will load for config c, holding the decoder layers
 * [l0, l1) of a pipeline (0, -1: all of them; the embedding with layer 0, the final norm and
 * lm_head with the last layer, a tied lm_head as a copy of the embedding), before anything is read:
 * exactly what llama_load's frozen_bytes will be when the big matrices (the seven projections,
 * embedding, lm_head) are held as dt (their quantised codes and scales as runtime/quant.h
 * sizes them), norms, biases and the RoPE table as F32. 0 for a layout llama_load refuses or
 * a shard dt cannot store (nf4: columns not a multiple of 64). */
int64_t memplan_frozen(const HfcConfig *c, int tp, int tp_rank, int64_t l0, int64_t l1,
                       GemmDtype dt);

/* The bytes this node can still give, for all its ranks: min(MemAvailable of /proc/meminfo,
 * cgroup v2 memory.max - memory.current or v1 limit - usage); -1 if unknown. */
int64_t memplan_node_available(void);

/* Prints the estimate as a table (one line per category, GiB / MiB) under `title`. */
void memplan_print(const MemPlan *p, const char *title);

#endif
