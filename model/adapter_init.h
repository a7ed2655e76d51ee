/* The initialisations of LoRA's factors, a registry like the kinds' (adapter.h): each is an
 * AdapterInit entry (name, one-line help, which kinds it applies to, its function, and its
 * own PEFT export / checkpoint JSON hooks), registered by one line in adapter_init.c's
 * table. A kind with LoRA factors (lora, lora-fa, dora) calls the configured one from its
 * declare (extra tensors) and init (the values); launch/ builds help texts and errors from
 * the registry (adapter_init_names, adapter_init_compat).
 *
 *   default   A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming_uniform(a = sqrt(5))), B = 0
 *   gaussian  A ~ N(0, 1/r), B = 0 (PEFT's init_lora_weights="gaussian")
 *   pissa     A, B from the top-r singular vectors of W, W replaced by the residual
 *             (model/pissa.c)
 *
 * Legend: r rank, no / ni local out / in of the slot. */
#ifndef SHARDLORA_MODEL_ADAPTER_INIT_H
#define SHARDLORA_MODEL_ADAPTER_INIT_H

#include <stddef.h>

#include "adapter.h"

typedef struct AdapterInit {
    const char *name; /* --init NAME; the checkpoint JSON's "init" */
    const char *help; /* one line for --help */
    /* What it needs of a kind: 1 = LoRA factors (kind->own_init NULL); 2 = also the plain
     * merged form W + s B A (no out_scale), as PiSSA's residual assumes. 0 = any kind. */
    int needs;
    /* Writes lora_A [r, ni] and lora_B [no, r] of slot s (after params_finalize). */
    void (*init)(AdapterSlot *s, ParamTable *pt);
    /* Optional (NULL = none). */
    /* After the kind's declare: the initialisation's own tensors (PiSSA's frozen A0, B0). */
    void (*declare)(AdapterSlot *s, ParamTable *pt);
    /* Sets one of its settings by name in o (AdapterCfg.init_opts); 0 = not its setting. */
    int (*set_option)(AdapterOpts *o, const char *key, double value);
    /* adapter_config.json's init_lora_weights ("default" / "gaussian"); NULL = "default". */
    const char *peft_init;
    /* The model card's "initialisation" line. */
    const char *card;
    /* Its PEFT export and checkpoint-JSON hooks, called before the kind's (adapter_io.h):
     * PiSSA's rank-2r conversion and pissa_iters. */
    const struct AdioKindIo *io;
} AdapterInit;

/* The entries (adapter_init.c, pissa.c); adapter_init.c's table registers them. */
extern const AdapterInit adapter_init_default;
extern const AdapterInit adapter_init_gaussian;
extern const AdapterInit adapter_init_pissa; /* model/pissa.c */

/* NULL if unknown. */
const AdapterInit *adapter_init_by_name(const char *name);
/* The i-th registered initialisation, NULL past the last. */
const AdapterInit *adapter_init_at(int i);
/* The registered names, "|"-separated, into buf (for help texts and errors). */
void adapter_init_names(char *buf, size_t n);
/* The initialisation of c (c->init; "" = "default"); fatal if c names an unknown one. */
const AdapterInit *adapter_init_of(const AdapterCfg *c);
/* NULL when init applies to kind k; else why not, without the init's name, in buf (e.g.
 * "needs --adapter lora or lora-fa", "does not apply to --adapter vera (VeRA initialises its
 * own projections)"), the kinds listed from the registry. */
const char *adapter_init_compat(const AdapterInit *init, const AdapterKind *k, char *buf, size_t n);

#endif
