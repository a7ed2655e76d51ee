/* The set-up every model command shares (train, eval, generate): a Session owns the memory
 * context, the model (frozen shards + adapter slots), the GEMM and kernel contexts and, for
 * training and evaluation, the activation and batch buffers. The Grid is the caller's
 * (launch/ starts MPI and parses the options); everything else is made here, once, and freed
 * by session_free in reverse order.
 *
 * Typical use (every rank):
 *   session_open(&s, &g, dir, pin, &st)        memory + this rank's shards of the model
 *   [adapters: llama_init_adapters / adio_attach on &s.m]
 *   session_compute_init(&s, threads, cols, rows)   GEMM threads + kernel scratch
 *   session_batches_init(&s, B, T, rc)         activations, batch, labels (train / eval)
 *   ...
 *   session_free(&s)
 *
 * Legend: B sequences per micro-batch, T tokens per sequence, N = B*T rows. */
#ifndef SHARDLORA_TRAIN_SESSION_H
#define SHARDLORA_TRAIN_SESSION_H

#include <stdint.h>

#include "../model/llama.h"
#include "../parallel/grid.h"
#include "../runtime/gemm.h"
#include "../runtime/kernels.h"
#include "../runtime/mem.h"

typedef struct {
    Grid *g; /* the caller's */
    MemCtx mem;
    LlamaModel m;
    GemmCtx gc;
    KernCtx kc;
    const KernOps *kops;
    char compute_why[160]; /* what the base's GEMMs compute in, and why (gemm_set_compute) */
    /* training / evaluation (session_batches_init) */
    int64_t B, T;
    LlamaActs acts;
    LlamaBatch batch;
    int64_t *labels; /* [N] Hugging Face labels (-100 ignored) of the current micro-batch */
    int have_model, have_compute, have_batches;
} Session;

/* mem_init + llama_load: this rank's shards of the model in DIR (of its pipeline stage:
 * stages = the split, g->pp + 1 entries, or NULL at pp = 1), stored as `base`
 * (LLAMA_BASE_FILE or a GemmDtype). 0 with st naming the file and the tensor on bad input
 * (the caller agrees on the verdict over the grid). */
int session_open(Session *s, Grid *g, const char *model_dir, MemPinMode pin, int base,
                 const int64_t *stages, ErrStatus *st);
/* GEMM threads (0: the CPUs this rank may use) for products up to max_cols columns, and
 * kernel scratch for attention over up to `rows` rows; kops: the kernel table to run. The
 * base's GEMMs compute in F32 (session_set_compute changes it). */
void session_compute_init(Session *s, int threads, int64_t max_cols, int64_t rows,
                          const KernOps *kops);
/* The base's GEMMs in `compute` (-1: auto, mpicmd_compute_auto's rule, or a GemmCompute);
 * what runs and why into s->compute_why. Returns what runs. */
int session_set_compute(Session *s, int compute);
/* The widest product of the decoder's linears (max of hidden and ffn). */
int64_t session_max_cols(const Session *s);
/* Activations (what forward saves for backward: all of it, or with LLAMA_RECOMPUTE_LAYER
 * the layer inputs), the batch and its labels for micro-batches of B sequences of T tokens.
 * sets > 1 (a pipeline stage with micro-batches in flight, train/pipe.h) keeps that many
 * micro-batches' saves (llama_acts_init). */
void session_batches_init(Session *s, int64_t B, int64_t T, LlamaRecompute rc, int sets);
/* One line naming the model (architecture, sizes, weight dtype) into buf. */
const char *session_describe_model(const Session *s, char *buf, size_t n);
void session_free(Session *s);

/* Where the rows of a micro-batch come from: row(ctx, i, T, ids, labels, pos) writes row i
 * (ids [T], labels [T] with -100 ignored, position ids [T]). What i means is the source's:
 * a stream index (training) or a row number (evaluation). */
typedef struct {
    void *ctx;
    void (*row)(void *ctx, int64_t i, int64_t T, int32_t *ids, int64_t *labels, int64_t *pos);
} RowSource;

/* Rows [first, first + B) of src into the session's batch and labels, prepared for the
 * kernels (llama_batch_prepare); rows from index `end` on are empty (nothing counted: they
 * pad the last round of an evaluation). */
void session_fill_batch(Session *s, const RowSource *src, int64_t first, int64_t end);
/* The same into batch b (one of B x T sequences, llama_batch_init: a pipeline's micro-batch in
 * flight); s->labels receives the labels. */
void session_fill(Session *s, LlamaBatch *b, const RowSource *src, int64_t first, int64_t end);

#endif
