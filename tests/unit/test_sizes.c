/* runtime/sizes (checked products and sums), llama_vocab_range at the extremes of
 * vocab_size (the signed overflow UBSan found at V = 2^63 - 1), and afile_append_record (the
 * whole-line writes of metrics.jsonl) on a full device. */
#include <fcntl.h>

#include "../../io/afile.h"
#include "../../model/llama.h"
#include "../../runtime/sizes.h"
#include "check.h"

static void expect(const char *what, int cond) {
    check_count++;
    if (!cond) check_failures++;
    printf("%s %s\n", cond ? "PASS" : "FAIL", what);
}

static void test_sizes(void) {
    int64_t v;
    expect("sizes_mul 2^31 x 2^31",
           sizes_mul((int64_t)1 << 31, (int64_t)1 << 31, &v) && v == (int64_t)1 << 62);
    expect("sizes_mul 2^32 x 2^32 overflows",
           !sizes_mul((int64_t)1 << 32, (int64_t)1 << 32, &v) && v == INT64_MAX);
    expect("sizes_mul refuses a negative factor", !sizes_mul(-1, 5, &v));
    expect("sizes_add INT64_MAX + 1 overflows", !sizes_add(INT64_MAX, 1, &v));
    expect("sizes_mul3 1e7 x 1e7 x 1e7 overflows", !sizes_mul3(10000000, 10000000, 10000000, &v));
    expect("sizes_mul3 fits", sizes_mul3(1000, 1000, 1000, &v) && v == 1000000000);
    expect("sizes_mul_sat saturates", sizes_mul_sat(INT64_MAX, 2) == INT64_MAX);
    expect("sizes_add_sat saturates", sizes_add_sat(INT64_MAX, INT64_MAX) == INT64_MAX);
}

/* The ranges of every rank tile [0, V) in order, each at most ceil(V / tp) rows. */
static void test_vocab_range(int64_t V, int tp) {
    int64_t next = 0, ok = 1;
    const int64_t vper = V / tp + (V % tp != 0);
    for (int r = 0; r < tp; r++) {
        int64_t v0, vl;
        llama_vocab_range(V, tp, r, &v0, &vl);
        ok = ok && v0 == next && vl >= 0 && vl <= vper && v0 <= V;
        next = v0 + vl;
    }
    char what[128];
    snprintf(what, sizeof what, "llama_vocab_range V=%lld tp=%d tiles [0, V)", (long long)V, tp);
    expect(what, ok && next == V);
}

static void test_append_full(void) {
    int fd = open("/dev/full", O_WRONLY);
    if (fd < 0) {
        expect("/dev/full opens", 0);
        return;
    }
    ErrStatus st;
    const int ok = afile_append_record(fd, "/dev/full", "{\"step\": 1}\n", 12, &st);
    close(fd);
    printf("  %s\n", st.msg);
    expect("afile_append_record on /dev/full fails naming the path and ENOSPC",
           !ok && strstr(st.msg, "/dev/full: cannot write: No space left on device"));
    /* a whole record on a file that has room: appended as is */
    check_tmp_init("sizes");
    const char *p = check_tmp_path("log.jsonl");
    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    const int ok2 =
        afile_append_record(fd, p, "a\n", 2, &st) && afile_append_record(fd, p, "b\n", 2, &st);
    close(fd);
    char buf[8] = {0};
    FILE *f = fopen(p, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    expect("afile_append_record appends whole records",
           ok2 && n == 4 && strcmp(buf, "a\nb\n") == 0);
}

int main(void) {
    test_sizes();
    const int64_t Vs[] = {1, 7, 32000, 32001, 151936, INT32_MAX, INT64_MAX, INT64_MAX - 1};
    const int tps[] = {1, 2, 3, 4, 7, 8, 64};
    for (size_t i = 0; i < sizeof Vs / sizeof Vs[0]; i++)
        for (size_t j = 0; j < sizeof tps / sizeof tps[0]; j++)
            test_vocab_range(Vs[i], tps[j]);
    test_append_full();
    check_rm_rf(check_tmp);
    return check_finish();
}
