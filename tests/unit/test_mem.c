/* Allocator: per-category accounting, zero fill and alignment, NUMA placement of frozen
 * memory (move_pages and /proc/self/numa_maps agree), and the pin modes under a lowered
 * RLIMIT_MEMLOCK in forked children (auto warns once and goes on, on dies with a message
 * naming mlock, off never tries). */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <numa.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/mem.h"
#include "tests/unit/check.h"

/* AddressSanitizer makes mlock a no-op that succeeds, so the pin modes cannot be tested in
 * the sanitized build (GCC defines __SANITIZE_ADDRESS__, clang has __has_feature). */
#if defined(__SANITIZE_ADDRESS__)
#define SL_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SL_UNDER_ASAN 1
#endif
#endif
#ifndef SL_UNDER_ASAN
#define SL_UNDER_ASAN 0
#endif

static int all_zero(const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i]) return 0;
    return 1;
}

static void test_parse(void) {
    CHECK_TRUE(mem_parse_pin("auto") == MEM_PIN_AUTO && mem_parse_pin("on") == MEM_PIN_ON &&
                   mem_parse_pin("off") == MEM_PIN_OFF && mem_parse_pin("yes") == -1 &&
                   mem_parse_pin(NULL) == -1,
               "mem_parse_pin");
    CHECK_TRUE(strcmp(mem_category_name(MEM_FROZEN), "frozen") == 0 &&
                   strcmp(mem_category_name(MEM_OTHER), "other") == 0,
               "mem_category_name");
}

static void test_accounting(void) {
    MemCtx m;
    mem_init(&m, MEM_PIN_AUTO);
    printf("numa_available %d node %d\n", m.numa_available, m.numa_node);
    void *p[MEM_NCATEGORY];
    size_t sz[MEM_NCATEGORY];
    for (int c = 0; c < MEM_NCATEGORY; c++) {
        sz[c] = 1000 * (size_t)(c + 1) + 3; /* odd sizes */
        p[c] = mem_alloc(&m, (MemCategory)c, sz[c]);
        CHECK_TRUE(p[c] != NULL, "%s alloc", mem_category_name((MemCategory)c));
        CHECK_TRUE(((uintptr_t)p[c] & 63) == 0, "%s not 64-byte aligned",
                   mem_category_name((MemCategory)c));
        CHECK_TRUE(all_zero(p[c], sz[c]), "%s not zero-filled", mem_category_name((MemCategory)c));
        memset(p[c], 0xab, sz[c]); /* the whole range is writable */
        CHECK_TRUE(m.bytes[c] == sz[c] && m.peak[c] == sz[c], "%s live %zu peak %zu",
                   mem_category_name((MemCategory)c), m.bytes[c], m.peak[c]);
    }
    /* a second block raises live and peak; freeing it lowers live only */
    void *q = mem_alloc(&m, MEM_ADAPTER, 4096);
    CHECK_TRUE(m.bytes[MEM_ADAPTER] == sz[MEM_ADAPTER] + 4096 &&
                   m.peak[MEM_ADAPTER] == sz[MEM_ADAPTER] + 4096,
               "adapter live/peak after second block");
    mem_free(&m, MEM_ADAPTER, q, 4096);
    CHECK_TRUE(m.bytes[MEM_ADAPTER] == sz[MEM_ADAPTER] &&
                   m.peak[MEM_ADAPTER] == sz[MEM_ADAPTER] + 4096,
               "adapter live/peak after free");
    CHECK_TRUE(mem_alloc(&m, MEM_OTHER, 0) == NULL && m.bytes[MEM_OTHER] == sz[MEM_OTHER],
               "zero-byte alloc");
    mem_free(&m, MEM_OTHER, NULL, 0);
    /* root (CAP_IPC_LOCK) or a normal limit: the small frozen block is pinned in auto mode */
    printf("frozen %zu bytes: pinned %zu, from libnuma %zu\n", sz[MEM_FROZEN], m.pinned_bytes,
           m.numa_bytes);
    CHECK_TRUE(m.pinned_bytes == sz[MEM_FROZEN] || m.pin_warned,
               "frozen block neither pinned nor warned about");
    CHECK_TRUE(m.numa_bytes == (m.numa_available ? sz[MEM_FROZEN] : 0), "numa bytes %zu",
               m.numa_bytes);
    mem_print_table(&m, "test_mem after allocating every category");
    for (int c = 0; c < MEM_NCATEGORY; c++)
        mem_free(&m, (MemCategory)c, p[c], sz[c]);
    size_t live = 0;
    for (int c = 0; c < MEM_NCATEGORY; c++)
        live += m.bytes[c];
    CHECK_TRUE(live == 0 && m.pinned_bytes == 0 && m.numa_bytes == 0,
               "after free: live %zu pinned %zu numa %zu", live, m.pinned_bytes, m.numa_bytes);
    CHECK_TRUE(m.peak[MEM_OPTIMIZER] == sz[MEM_OPTIMIZER], "peak kept after free");
}

/* Pages per node of the mapping that contains addr, from /proc/self/numa_maps (the VMA
 * that starts at the highest address <= addr). counts[n] for n < maxn; returns the number
 * of pages on other nodes, -1 if no line found. Also returns the policy word. */
static long numa_maps_counts(const void *addr, long *counts, int maxn, char *policy, size_t psz) {
    FILE *f = fopen("/proc/self/numa_maps", "r");
    if (!f) return -1;
    char line[4096], best[4096] = "";
    uintptr_t best_start = 0;
    while (fgets(line, sizeof line, f)) {
        uintptr_t start = (uintptr_t)strtoull(line, NULL, 16);
        if (start <= (uintptr_t)addr && start >= best_start) {
            best_start = start;
            snprintf(best, sizeof best, "%s", line);
        }
    }
    fclose(f);
    if (!best[0]) return -1;
    printf("numa_maps: %s", best);
    for (int n = 0; n < maxn; n++)
        counts[n] = 0;
    long other = 0;
    char *save = NULL;
    int field = 0;
    for (char *tok = strtok_r(best, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
        if (field++ == 1) snprintf(policy, psz, "%s", tok);
        int node;
        long pages;
        if (sscanf(tok, "N%d=%ld", &node, &pages) == 2) {
            if (node >= 0 && node < maxn)
                counts[node] += pages;
            else
                other += pages;
        }
    }
    return other;
}

static void test_numa_placement(int force_no_numa) {
    MemCtx m;
    mem_init(&m, MEM_PIN_AUTO);
    if (force_no_numa) { /* exercise the plain mmap path too */
        m.numa_available = 0;
        m.numa_node = -1;
    }
    const size_t bytes = 8u << 20;
    unsigned char *p = mem_alloc(&m, MEM_FROZEN, bytes);
    CHECK_TRUE(p && ((uintptr_t)p & 4095) == 0, "frozen block page-aligned");
    CHECK_TRUE(all_zero(p, bytes), "frozen block zero-filled");
    int want = m.numa_available ? m.numa_node : -1;
    int on_node = 0, pages = 0, first = -2;
    for (size_t off = 0; off < bytes; off += 4096) {
        int node = mem_page_node(p + off);
        if (first == -2) first = node;
        pages++;
        on_node += want >= 0 ? node == want : node >= 0;
    }
    printf("frozen %s: %d of %d pages on node %d (first page: node %d), pinned %zu bytes\n",
           force_no_numa ? "(mmap path)" : "(libnuma path)", on_node, pages, want, first,
           m.pinned_bytes);
    if (numa_available() < 0) {
        printf("SKIP page placement: no NUMA support in this kernel (numa_available < 0)\n");
        CHECK_TRUE(1, "skipped explicitly");
    } else {
        CHECK_TRUE(on_node == pages, "%d of %d pages on the intended node", on_node, pages);
        /* the kernel's own view of the mapping agrees */
        long counts[64];
        char policy[64] = "";
        long other = numa_maps_counts(p, counts, 64, policy, sizeof policy);
        int node = want >= 0 ? want : first;
        CHECK_TRUE(other == 0 && node >= 0 && counts[node] >= pages,
                   "numa_maps: %ld pages on node %d (want >= %d), %ld elsewhere",
                   node >= 0 ? counts[node] : -1, node, pages, other);
        if (!force_no_numa) {
            char want_policy[32];
            snprintf(want_policy, sizeof want_policy, ":%d", want);
            CHECK_TRUE(strstr(policy, want_policy) != NULL, "numa_maps policy %s", policy);
        }
    }
    mem_free(&m, MEM_FROZEN, p, bytes);
    CHECK_TRUE(m.bytes[MEM_FROZEN] == 0 && m.pinned_bytes == 0 && m.numa_bytes == 0,
               "frozen accounting back to zero");
}

/* Drop CAP_IPC_LOCK (root ignores RLIMIT_MEMLOCK with it), then lower the limit. */
static int lower_memlock_limit(rlim_t bytes) {
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) == 0) {
        data[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
        data[CAP_IPC_LOCK / 32].permitted &= ~(1u << (CAP_IPC_LOCK % 32));
        if (syscall(SYS_capset, &hdr, data) != 0) return -1;
    }
    struct rlimit rl = {bytes, bytes};
    return setrlimit(RLIMIT_MEMLOCK, &rl);
}

/* Child: allocate two frozen blocks bigger than the limit under `mode`. Exit 0 if they
 * come back unpinned and warned at most once, 1 otherwise; a fatal error exits non-zero
 * on its own. */
static int pin_child(MemPinMode mode) {
    if (lower_memlock_limit(64 << 10) != 0) {
        fprintf(stderr, "cannot lower RLIMIT_MEMLOCK: %s\n", strerror(errno));
        return 3;
    }
    MemCtx m;
    mem_init(&m, mode);
    const size_t bytes = 1u << 20;
    void *a = mem_alloc(&m, MEM_FROZEN, bytes);
    void *b = mem_alloc(&m, MEM_FROZEN, bytes);
    int ok = a && b && m.pinned_bytes == 0 && m.bytes[MEM_FROZEN] == 2 * bytes &&
             m.pin_warned == (mode == MEM_PIN_AUTO) && all_zero(a, bytes);
    mem_free(&m, MEM_FROZEN, a, bytes);
    mem_free(&m, MEM_FROZEN, b, bytes);
    return ok ? 0 : 1;
}

/* Fork, run pin_child(mode) with stderr captured; returns the exit status. */
static int run_pin_child(MemPinMode mode, char *err, size_t errsz) {
    int fd[2];
    if (pipe(fd) != 0) return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        _exit(pin_child(mode));
    }
    close(fd[1]);
    return check_child_output(fd[0], pid, err, errsz);
}

static int count_substr(const char *s, const char *sub) {
    int n = 0;
    for (const char *p = strstr(s, sub); p; p = strstr(p + 1, sub))
        n++;
    return n;
}

static void test_pin_modes(void) {
    if (SL_UNDER_ASAN) {
        printf("SKIP pin modes: AddressSanitizer intercepts mlock (it always succeeds)\n");
        CHECK_TRUE(1, "skipped explicitly");
        return;
    }
    char err[8192];
    int rc = run_pin_child(MEM_PIN_AUTO, err, sizeof err);
    printf("pin auto under a 64 KiB limit: exit %d, stderr:\n%s", rc, err);
    CHECK_TRUE(rc == 0, "auto: child exit %d", rc);
    CHECK_TRUE(count_substr(err, "mlock of") == 1, "auto: expected one mlock warning");
    CHECK_TRUE(strstr(err, "ulimit -l unlimited") && strstr(err, "RLIMIT_MEMLOCK soft 64 KiB"),
               "auto: warning does not say how to raise the limit");

    rc = run_pin_child(MEM_PIN_ON, err, sizeof err);
    printf("pin on under a 64 KiB limit: exit %d, stderr:\n%s", rc, err);
    CHECK_TRUE(rc != 0 && rc != 3, "on: child exit %d, want a fatal error", rc);
    CHECK_TRUE(strstr(err, "mlock") && strstr(err, "1048576 bytes") &&
                   strstr(err, "PropagateResourceLimits"),
               "on: message lacks mlock / size / how to raise the limit");

    rc = run_pin_child(MEM_PIN_OFF, err, sizeof err);
    printf("pin off under a 64 KiB limit: exit %d, stderr: %s\n", rc, err[0] ? err : "(empty)");
    CHECK_TRUE(rc == 0 && err[0] == 0, "off: exit %d", rc);
}

/* Freeing with the wrong size is caught, not silently mis-accounted. */
static void test_bad_free(void) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 2);
        MemCtx m;
        mem_init(&m, MEM_PIN_OFF);
        void *p = mem_alloc(&m, MEM_FROZEN, 10000);
        mem_free(&m, MEM_FROZEN, p, 9999);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK_TRUE(WIFEXITED(st) && WEXITSTATUS(st) != 0, "wrong-size free of a frozen block accepted");
}

int main(void) {
    test_parse();
    test_accounting();
    test_numa_placement(0);
    test_numa_placement(1);
    test_pin_modes();
    test_bad_free();
    return check_finish();
}
