/* PEFT adapters <-> the model's sharded adapter slots (DESIGN.md §4, §7; io/peft.h for the
 * files). Import: a PEFT adapter directory gives the adapter configuration (targets, per
 * (layer, module) rank and alpha from rank_pattern / alpha_pattern / layers_to_transform,
 * rsLoRA) and the values of this rank's shards, read as slices, so any tp loads any adapter.
 * Export: full tensors (gathered, or read from a checkpoint) become
 * adapter_model.safetensors + adapter_config.json + README.md (a model card), written
 * together: into a staging directory, then renamed into place.
 *
 * Typical import (every rank; the caller agrees on the verdict over the grid):
 *   AdioCfg c;  adio_attach(&m, dir, &c, g, mem, &st)   (after llama_load; keep c alive
 *               as long as m: m->acfg points at its per-slot arrays) ... adio_cfg_free(&c)
 * or, to set the seed / dropout first: peft_read; adio_cfg_from_peft; llama_init_adapters;
 * adio_load; peft_close. */
#ifndef SHARDLORA_MODEL_ADAPTER_IO_H
#define SHARDLORA_MODEL_ADAPTER_IO_H

#include <stdint.h>

#include "../io/peft.h"
#include "adapter.h"
#include "llama.h"

/* An adapter configuration with the exact (JSON) alphas, for import and export. */
typedef struct {
    AdapterCfg acfg;      /* for llama_init_adapters; acfg.slot_r / slot_alpha point into this
                           * struct (NULL when every target of every layer has r and alpha) */
    int64_t L;            /* layers */
    double alpha;         /* acfg.alpha as a double (the value in the file or the flag) */
    double dropout;       /* acfg.dropout as a double */
    int *slot_r;          /* [L * MOD_NMODULES], 0 = no adapter there; or NULL (uniform) */
    float *slot_alpha;    /* [L * MOD_NMODULES] or NULL */
    double *slot_alpha_d; /* [L * MOD_NMODULES] or NULL */
    char *base_model;     /* base_model_name_or_path ("" if unknown) */
} AdioCfg;

/* A uniform configuration: r and alpha on `targets` (ModuleId bits) of every layer; kind
 * "lora", initialisation `init` (adapter_init.h; NULL = "default"). */
void adio_cfg_uniform(AdioCfg *c, int64_t L, unsigned targets, int r, double alpha, int use_rslora,
                      double dropout, const char *init, const char *base_model);
void adio_cfg_free(AdioCfg *c);
/* The rank and alpha of (layer, module); r = 0: no adapter there. */
void adio_cfg_slot(const AdioCfg *c, int64_t layer, int module, int *r, double *alpha);

/* The kind of a PEFT adapter: DoRA when use_dora, VeRA when peft_type is "VERA", else LoRA. */
const AdapterKind *adio_kind_of_peft(const PeftAdapter *a);
/* The configuration of a PEFT adapter on model m (loaded, adapters not yet created):
 * per-slot rank and alpha by PEFT's rules, and every tensor of the file checked against it.
 * The kind: DoRA when use_dora, VeRA when peft_type is "VERA", else LoRA.
 * Refused, with st naming the file and the key: a tensor whose shape differs from what the config
 * and the model imply (both shapes named), a tensor of no module of this model or of an untargeted
 * one, a tensor kind shardlora does not train (embeddings, biases, ...), a targeted module without
 * its tensors, target_modules that match no module. acfg.seed is 0; acfg.init "default". */
int adio_cfg_from_peft(AdioCfg *c, const PeftAdapter *a, const LlamaModel *m, ErrStatus *st);
/* Reads this rank's slice of every adapter tensor (after llama_init_adapters with the
 * configuration from adio_cfg_from_peft) into m->params.values. */
int adio_load(LlamaModel *m, PeftAdapter *a, ErrStatus *st);
/* peft_read + adio_cfg_from_peft + llama_init_adapters + adio_load + peft_close. */
int adio_attach(LlamaModel *m, const char *dir, AdioCfg *c, Grid *g, MemCtx *mem, ErrStatus *st);

/* The adapter configuration as the JSON a checkpoint manifest keeps (compared on resume):
 * {"kind", "r", "alpha", "dropout", "use_rslora", "init", "target_modules"} and, when not
 * uniform, "slot_r" / "slot_alpha" arrays [L * 7]. malloc'd. */
char *adio_cfg_to_json(const AdioCfg *c);
/* The inverse; L from the slot arrays or, when uniform, the given L. */
int adio_cfg_from_json(AdioCfg *c, const char *json, int64_t L, ErrStatus *st);

/* One full adapter tensor. */
typedef struct {
    const char *name;   /* PEFT key */
    int64_t rows, cols; /* rows = 0: a 1-D tensor [cols] (a kind's export_tensors sets it,
                         * e.g. DoRA's lora_magnitude_vector) */
    const float *data;  /* [rows, cols] */
} AdioTensor;

/* What the model card says about the training run (strings may be NULL). run_config's
 * "card" object, when present, gives the card's own sections (what a checkpoint keeps, so
 * `shardlora export` writes the card training wrote):
 *   "base_model": Hub id for the front matter (absent: no base_model line),
 *   "train_data" / "eval_data": {"files": [{"name", "bytes"}], "documents", "rows",
 *                                "tokens", "counted_tokens"},
 *   "best_eval": {"loss", "ppl", "step"},  "versions": {"shardlora", "mpi", "blas"}. */
typedef struct {
    const char *run_config;    /* JSON text (the checkpoint's run configuration) */
    const char *optimizer;     /* e.g. "adamw" */
    const char *optim_hparams; /* JSON text */
    int64_t step;              /* optimizer steps done (< 0: unknown) */
    int tp, dp;                /* layout trained at (0: unknown) */
    const char *base_model;    /* Hub id that replaces run_config's card.base_model, or NULL */
} AdioCard;

/* Whether s is a Hugging Face Hub repository id as huggingface_hub's validate_repo_id
 * accepts it: "name" or "owner/name", each part 1-96 of [A-Za-z0-9_.-], not starting or
 * ending with '-' or '.', without "--" or "..". need_owner: only "owner/name" (what a
 * config.json's _name_or_path must look like to be taken for a Hub id, not a local path). */
int adio_hub_id_ok(const char *s, int need_owner);

/* One linear of the base model in `shardlora merge` (launch/cmd_merge.c streams the frozen
 * weight's rows through the kind's merge_* hooks in bounded chunks). */
typedef struct {
    /* set by the caller */
    const char *module; /* "model.layers.3.self_attn.q_proj" */
    const StTensor *w;  /* the frozen weight (its name and shape, for messages) */
    const char *w_path; /* the model file holding it (for messages) */
    int64_t rows, cols; /* W [rows, cols] */
    /* set by merge_plan */
    int adapted;          /* 0: W is copied as it is */
    int r;                /* the module's rank */
    float scale;          /* s of W + s B A (1 for a kind without one) */
    const StTensor *t[3]; /* the kind's tensors of this module (t[0] names it in errors) */
    const char *bad_note; /* what else makes merge_rows call a row bad ("" or e.g.
                           * " or have a zero norm"), for the error message */
    size_t item_floats;   /* F32 scratch merge_begin fills once per weight */
    size_t row_floats;    /* F32 scratch per row of a chunk, for merge_rows */
} AdioMergeItem;

/* Helpers of the kinds' merge_plan. 1 when `module` is one of the seven linears of a decoder
 * layer ("model.layers.3.self_attn.q_proj"; "all-linear" names every linear, PEFT leaves
 * lm_head out). */
int adio_merge_adaptable(const char *module);
/* A module without adapter tensors: 1 when a does not target it; else 0 with st saying that
 * the module has no `want` (eval and train refuse such a file, and a merge that skipped the
 * module would write a model the adapter does not describe). */
int adio_merge_untargeted(const PeftAdapter *a, const char *module, const char *want,
                          ErrStatus *st);
/* 0 with st set unless module is targeted by a (PEFT would not put a layer there and would
 * drop the tensor t with a warning; a merge that did the same would hide a mismatch). */
int adio_merge_targeted(const PeftAdapter *a, const char *module, const StTensor *t, ErrStatus *st);
/* 0 with st set unless t is F32 / BF16 / F16 with shape [d0] (d1 < 0) or [d0, d1]; `why`
 * completes the message ("(r = 4 for this module)"); the item's weight is named in it. */
int adio_merge_check(const AdioMergeItem *it, const PeftAdapter *a, const StTensor *t, int64_t d0,
                     int64_t d1, const char *why, ErrStatus *st);
/* "[2, 3]" of t into buf. */
void adio_shape_str(char *buf, size_t n, const StTensor *t);

/* A kind's own PEFT handling (AdapterKind.io; NULL = plain LoRA keys and config, no merge),
 * in the kind's file, so a variant's import / export / merge lives with it; an
 * initialisation may have one too (AdapterInit.io: PiSSA's export), called before the
 * kind's. Every slot is optional. */
struct json_t;
typedef struct AdioKindIo {
    /* Extra members of the checkpoint's adapter configuration JSON for the kind's settings,
     * appended after the common ones: ", \"key\": value, ..." into buf. */
    void (*cfg_json)(const AdapterCfg *c, char *buf, size_t n);
    /* Reads them back from the parsed JSON object into c; 0 with st set on error. */
    int (*cfg_from_json)(AdapterCfg *c, const struct json_t *root, ErrStatus *st);
    /* adapter_config.json: sets the kind's fields of pc (e.g. use_dora) after the common ones. */
    void (*peft_config)(const AdioCfg *c, PeftConfig *pc);
    /* Export: checks the tensors (instead of "every tensor is a lora_A / lora_B of a slot")
     * and may replace them: *out = t, *nout = n to keep them, or a malloc'd list (its data
     * owned by *keep, freed by adio_export) e.g. PiSSA's rank-2r conversion, VeRA's shared
     * projections. */
    int (*export_tensors)(const AdioCfg *c, const AdioTensor *t, int n, AdioTensor **out, int *nout,
                          void **keep, ErrStatus *st);
    /* Import: a key suffix other than .lora_A.weight / .lora_B.weight that the kind reads
     * itself (returns 1 to accept the key); for a key that names no module (a shared
     * tensor, e.g. VeRA's base_model.vera_A) the whole key. */
    int (*import_key)(const AdioCfg *c, const char *suffix);
    /* Import: the kind's own checks of adapter a on model m, instead of LoRA's (every
     * targeted module has lora_A [r, in] and lora_B [out, r]), after the common ones (c's
     * targets and per-slot ranks set, every key accepted); sets the kind's settings in
     * c->acfg (e.g. VeRA's projection key and dimensions). 0 with st set: refused. */
    int (*import_cfg)(AdioCfg *c, const PeftAdapter *a, const LlamaModel *m, ErrStatus *st);
    /* Model card: the "initialisation" line, instead of the initialisation's (VeRA's). */
    const char *card_init;
    /* Model card: the settings table's rows in place of lora_alpha and scale, into buf. */
    void (*card_rows)(const AdioCfg *c, char *buf, size_t n);

    /* `shardlora merge` (merge_plan NULL: the kind cannot be merged from a file). */
    /* The merged weight in one line, for --help (e.g. "W + s·B A"). */
    const char *merge_help;
    /* Finds and checks it->module's tensors in a (messages name the file and each key),
     * marks them in used[] (indices into a->tensors.tensors) and sets the plan's fields; a
     * module without tensors stays adapted = 0 (an error when a targets it). */
    int (*merge_plan)(AdioMergeItem *it, const PeftAdapter *a, unsigned char *used, ErrStatus *st);
    /* After every item is planned: what all items share (VeRA's projections), *bytes its
     * size (NULL *shared is fine); may mark more tensors used. */
    int (*merge_shared)(PeftAdapter *a, const AdioMergeItem *items, int n, unsigned char *used,
                        void **shared, uint64_t *bytes, ErrStatus *st);
    void (*merge_shared_free)(void *shared);
    /* Once per adapted weight before its rows: ibuf [item_floats] (e.g. lora_A, read whole). */
    int (*merge_begin)(const AdioMergeItem *it, PeftAdapter *a, const void *shared, float *ibuf,
                       ErrStatus *st);
    /* W [k, cols]: rows [row0, row0 + k) of the weight in F32, replaced by the merged rows
     * (rbuf [k * row_floats] scratch; threads >= 1). Every row comes out the same whatever k,
     * row0 or threads. Returns how many rows came out bad (non-finite), or -1 with st set
     * when a read failed. */
    int64_t (*merge_rows)(const AdioMergeItem *it, PeftAdapter *a, const void *shared,
                          const float *ibuf, float *rbuf, float *W, int64_t row0, int64_t k,
                          int threads, ErrStatus *st);
} AdioKindIo;

/* Writes DIR/adapter_model.safetensors (F32, tensors sorted by name, metadata format=pt),
 * DIR/adapter_config.json and DIR/README.md into an existing DIR. Every tensor must belong
 * to a slot of c with the slot's rank. The three files are written (and fsynced) in
 * DIR/.export-tmp/ first and then renamed into DIR, so a failure while writing leaves DIR
 * as it was. */
int adio_export(const char *dir, const AdioCfg *c, const AdioTensor *t, int n, const AdioCard *card,
                ErrStatus *st);

#endif
