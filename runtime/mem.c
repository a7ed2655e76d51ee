/* NUMA-aware allocator with per-category accounting (see mem.h): frozen weights from
 * libnuma on the node of this process's CPUs, first-touched and mlock'ed per pin mode;
 * everything else from 64-byte aligned heap memory. */
#include "mem.h"

#include <errno.h>
#include <numa.h>
#include <numaif.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "log.h"

/* A frozen allocation is a page-granular mapping whose first page holds this header; the
 * caller gets the page after it. mem_free(p, bytes) alone cannot tell whether a given
 * block was pinned or came from libnuma (in auto mode some blocks may be pinned and later
 * ones not), so the block remembers it. One page per frozen tensor is noise next to the
 * tensor itself. */
typedef struct {
    uint64_t magic;
    size_t bytes;     /* bytes the caller asked for */
    size_t map_bytes; /* whole mapping, header page included */
    int pinned;       /* mlock succeeded on the caller's range */
    int from_numa;    /* numa_alloc_onnode (else mmap) */
} MemFrozenHeader;

#define MEM_FROZEN_MAGIC 0x5348524446524f5aull /* "SHRDFROZ" */
#define MEM_ALIGN 64

static const char *const mem_category_names[MEM_NCATEGORY] = {
    "frozen", "adapter", "optimizer", "activation", "comm", "other",
};

int mem_parse_pin(const char *s) {
    if (!s) return -1;
    if (strcmp(s, "auto") == 0) return MEM_PIN_AUTO;
    if (strcmp(s, "on") == 0) return MEM_PIN_ON;
    if (strcmp(s, "off") == 0) return MEM_PIN_OFF;
    return -1;
}

const char *mem_category_name(MemCategory c) {
    return (c >= 0 && c < MEM_NCATEGORY) ? mem_category_names[c] : "?";
}

static const char *mem_pin_name(MemPinMode p) {
    return p == MEM_PIN_ON ? "on" : p == MEM_PIN_OFF ? "off" : "auto";
}

static size_t mem_page_size(void) {
    long ps = sysconf(_SC_PAGESIZE);
    return ps > 0 ? (size_t)ps : 4096;
}

/* The node holding most of the CPUs in our affinity mask. A rank bound to one socket (the
 * normal mpirun --bind-to / Slurm --cpu-bind case) has exactly one; an unbound process
 * spans several and gets the majority node plus a warning, since its threads may migrate
 * away from the memory. */
static int mem_detect_node(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    int maxnode = numa_max_node();
    if (maxnode < 0) return -1;
    int *count = calloc((size_t)maxnode + 1, sizeof *count);
    SL_CHECK(count != NULL, "out of memory");
    int nspanned = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &set)) continue;
        int node = numa_node_of_cpu(cpu);
        if (node < 0 || node > maxnode) continue;
        if (count[node]++ == 0) nspanned++;
    }
    int best = -1;
    for (int n = 0; n <= maxnode; n++)
        if (count[n] > 0 && (best < 0 || count[n] > count[best])) best = n;
    free(count);
    if (nspanned > 1)
        log_warn("this process may run on CPUs of %d NUMA nodes; frozen weights go to node %d. "
                 "Bind each rank to one node (mpirun --bind-to numa|core, srun --cpu-bind) so "
                 "its memory stays local",
                 nspanned, best);
    return best;
}

void mem_init(MemCtx *m, MemPinMode pin) {
    memset(m, 0, sizeof *m);
    m->pin = pin;
    m->numa_node = -1;
    /* numa_available() < 0: no kernel NUMA support (or libnuma unusable); plain mmap then. */
    if (numa_available() >= 0) {
        m->numa_node = mem_detect_node();
        m->numa_available = m->numa_node >= 0;
    }
}

static void mem_format_limit(rlim_t v, char *buf, size_t n) {
    if (v == RLIM_INFINITY)
        snprintf(buf, n, "unlimited");
    else
        snprintf(buf, n, "%llu KiB", (unsigned long long)(v / 1024));
}

/* Message for a refused mlock: what failed, the limit in force and how to raise it. */
static void mem_mlock_message(char *buf, size_t n, size_t bytes, int err, size_t pinned) {
    struct rlimit rl;
    char soft[32] = "?", hard[32] = "?";
    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
        mem_format_limit(rl.rlim_cur, soft, sizeof soft);
        mem_format_limit(rl.rlim_max, hard, sizeof hard);
    }
    snprintf(buf, n,
             "mlock of %zu bytes (%.1f MiB) of frozen weights failed: %s (errno %d); "
             "%.1f MiB already pinned; RLIMIT_MEMLOCK soft %s, hard %s. Raise it with "
             "`ulimit -l unlimited` before launching (under Slurm the job inherits the "
             "submitting shell's limit through PropagateResourceLimits, and slurmd itself "
             "needs LimitMEMLOCK=infinity)",
             bytes, (double)bytes / (1 << 20), strerror(err), err, (double)pinned / (1 << 20), soft,
             hard);
}

static void mem_count_alloc(MemCtx *m, MemCategory cat, size_t bytes) {
    m->bytes[cat] += bytes;
    if (m->bytes[cat] > m->peak[cat]) m->peak[cat] = m->bytes[cat];
}

static void *mem_alloc_frozen(MemCtx *m, size_t bytes) {
    size_t ps = mem_page_size();
    size_t body = (bytes + ps - 1) / ps * ps;
    SL_CHECK(body >= bytes && body + ps > body, "frozen allocation of %zu bytes overflows", bytes);
    size_t map_bytes = body + ps;

    void *base = NULL;
    int from_numa = 0;
    if (m->numa_available) {
        base = numa_alloc_onnode(map_bytes, m->numa_node);
        from_numa = base != NULL;
    } else {
        base = mmap(NULL, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED) base = NULL;
    }
    if (!base)
        SL_FATAL("cannot allocate %zu bytes (%.1f MiB) of %s memory%s: %s", bytes,
                 (double)bytes / (1 << 20), mem_category_name(MEM_FROZEN),
                 m->numa_available ? " on the local NUMA node" : "", strerror(errno));

    /* First touch: write every page now, so the pages are really placed (on the node the
     * mapping is bound to) before the weights are read in, not wherever a later touch
     * happens to run. Anonymous pages are already zero, so writing zeros keeps the
     * zero-fill contract; a read would only map the shared zero page. */
    volatile unsigned char *c = (volatile unsigned char *)base;
    for (size_t off = 0; off < map_bytes; off += ps)
        c[off] = 0;

    unsigned char *user = (unsigned char *)base + ps;
    int pinned = 0;
    if (m->pin != MEM_PIN_OFF) {
        if (mlock(user, body) == 0) {
            pinned = 1;
        } else {
            int err = errno;
            char msg[1024];
            mem_mlock_message(msg, sizeof msg, bytes, err, m->pinned_bytes);
            if (m->pin == MEM_PIN_ON) {
                if (from_numa)
                    numa_free(base, map_bytes);
                else
                    munmap(base, map_bytes);
                SL_FATAL("--pin-memory on: %s; or run with --pin-memory auto (pin what fits, "
                         "warn) or off",
                         msg);
            }
            /* auto: one warning per context, then go on unpinned (later blocks still try,
             * so whatever fits under the limit is pinned). */
            if (!m->pin_warned) {
                log_warn("--pin-memory auto: %s; continuing with unpinned frozen weights "
                         "(this warning is printed once)",
                         msg);
                m->pin_warned = 1;
            }
        }
    }

    MemFrozenHeader *h = (MemFrozenHeader *)base;
    h->magic = MEM_FROZEN_MAGIC;
    h->bytes = bytes;
    h->map_bytes = map_bytes;
    h->pinned = pinned;
    h->from_numa = from_numa;

    if (pinned) m->pinned_bytes += bytes;
    if (from_numa) m->numa_bytes += bytes;
    mem_count_alloc(m, MEM_FROZEN, bytes);
    return user;
}

void *mem_alloc(MemCtx *m, MemCategory cat, size_t bytes) {
    SL_CHECK(cat >= 0 && cat < MEM_NCATEGORY, "bad memory category %d", (int)cat);
    if (bytes == 0) return NULL;
    if (cat == MEM_FROZEN) return mem_alloc_frozen(m, bytes);

    void *p = NULL;
    int rc = posix_memalign(&p, MEM_ALIGN, bytes);
    if (rc != 0 || !p)
        SL_FATAL("cannot allocate %zu bytes (%.1f MiB) of %s memory: %s", bytes,
                 (double)bytes / (1 << 20), mem_category_name(cat), strerror(rc ? rc : ENOMEM));
    memset(p, 0, bytes);
    mem_count_alloc(m, cat, bytes);
    return p;
}

void mem_free(MemCtx *m, MemCategory cat, void *p, size_t bytes) {
    if (!p) return;
    SL_CHECK(cat >= 0 && cat < MEM_NCATEGORY, "bad memory category %d", (int)cat);
    SL_CHECK(m->bytes[cat] >= bytes, "mem_free of %zu bytes of %s memory, only %zu live", bytes,
             mem_category_name(cat), m->bytes[cat]);
    if (cat == MEM_FROZEN) {
        size_t ps = mem_page_size();
        MemFrozenHeader *h = (MemFrozenHeader *)((unsigned char *)p - ps);
        SL_CHECK(h->magic == MEM_FROZEN_MAGIC, "mem_free: %p is not a frozen block from mem_alloc",
                 p);
        SL_CHECK(h->bytes == bytes, "mem_free: frozen block of %zu bytes freed as %zu bytes",
                 h->bytes, bytes);
        size_t map_bytes = h->map_bytes;
        int from_numa = h->from_numa;
        if (h->pinned) {
            munlock(p, map_bytes - ps);
            m->pinned_bytes -= bytes;
        }
        h->magic = 0; /* a second free of the same block trips the check above */
        if (from_numa) {
            numa_free(h, map_bytes);
            m->numa_bytes -= bytes;
        } else {
            munmap(h, map_bytes);
        }
    } else {
        free(p);
    }
    m->bytes[cat] -= bytes;
}

int mem_page_node(const void *p) {
    size_t ps = mem_page_size();
    void *page = (void *)((uintptr_t)p & ~(uintptr_t)(ps - 1));
    int status = -1;
    /* nodes == NULL: query only; status gets the node or a negative errno. */
    if (move_pages(0, 1, &page, NULL, &status, 0) != 0) return -1;
    return status >= 0 ? status : -1;
}

void mem_print_table(const MemCtx *m, const char *title) {
    const double mib = 1.0 / (1 << 20);
    size_t total = 0;
    log_rank("memory: %s", title ? title : "");
    log_rank("  %-11s %11s %11s", "category", "live MiB", "peak MiB");
    for (int c = 0; c < MEM_NCATEGORY; c++) {
        log_rank("  %-11s %11.1f %11.1f", mem_category_names[c], (double)m->bytes[c] * mib,
                 (double)m->peak[c] * mib);
        total += m->bytes[c];
    }
    log_rank("  %-11s %11.1f", "total", (double)total * mib);
    if (m->numa_available)
        log_rank("  pinned %.1f MiB (pin %s), NUMA node %d (%.1f MiB from libnuma)",
                 (double)m->pinned_bytes * mib, mem_pin_name(m->pin), m->numa_node,
                 (double)m->numa_bytes * mib);
    else
        log_rank("  pinned %.1f MiB (pin %s), NUMA node none", (double)m->pinned_bytes * mib,
                 mem_pin_name(m->pin));
}
