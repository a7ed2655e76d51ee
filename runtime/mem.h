/* NUMA-aware allocator with per-category accounting.
 * Frozen weights come from libnuma on the node of the CPUs this process is bound to, then
 * mlock'ed when RLIMIT_MEMLOCK allows (pin mode auto|on|off). Every allocation is counted
 * in one category so the run can print a memory table per rank at start-up and tests can
 * read it. Allocate at setup; nothing is allocated inside the step loop. */
#ifndef SHARDLORA_RUNTIME_MEM_H
#define SHARDLORA_RUNTIME_MEM_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum {
    MEM_FROZEN = 0, /* frozen base weights (this rank's shards) */
    MEM_ADAPTER,    /* adapter parameters + gradients */
    MEM_OPTIMIZER,  /* optimizer state (Adam m, v / momentum) */
    MEM_ACTIVATION, /* activations and scratch of forward/backward */
    MEM_COMM,       /* communication buffers */
    MEM_OTHER,      /* everything else (batches, tables) */
    MEM_NCATEGORY
} MemCategory;

typedef enum { MEM_PIN_AUTO = 0, MEM_PIN_ON, MEM_PIN_OFF } MemPinMode;

typedef struct {
    MemPinMode pin;
    int numa_node;               /* node of the CPUs this process runs on (-1: no NUMA) */
    int numa_available;          /* libnuma usable */
    int pin_warned;              /* auto mode warned once already */
    size_t bytes[MEM_NCATEGORY]; /* live bytes per category */
    size_t peak[MEM_NCATEGORY];  /* peak live bytes per category */
    size_t pinned_bytes;         /* bytes currently mlock'ed */
    size_t numa_bytes;           /* bytes currently from numa_alloc_onnode */
} MemCtx;

/* Parse "auto|on|off"; returns -1 if unknown. */
int mem_parse_pin(const char *s);
const char *mem_category_name(MemCategory c);

/* Detect NUMA node of the current CPU binding. Never fails (falls back to no NUMA). */
void mem_init(MemCtx *m, MemPinMode pin);

/* 64-byte aligned, zero-filled. Frozen memory (MEM_FROZEN) is NUMA-local and pinned per
 * the mode; MEM_PIN_ON fails fatally if mlock is refused; AUTO warns once and goes on.
 * Other categories: aligned heap memory. Returns NULL only for bytes == 0.
 * Fatal (via SL_FATAL) when memory cannot be had, naming the category and size. */
void *mem_alloc(MemCtx *m, MemCategory cat, size_t bytes);
/* Frees memory from mem_alloc (same category and size as allocated). NULL is a no-op. */
void mem_free(MemCtx *m, MemCategory cat, void *p, size_t bytes);

/* NUMA node the page at p is on (via move_pages), or -1 if unknown. For tests. */
int mem_page_node(const void *p);

/* Print the table (category, live MiB, peak MiB; pinned and NUMA node) with a title line,
 * via log_rank (every rank prints its own). */
void mem_print_table(const MemCtx *m, const char *title);

#endif
