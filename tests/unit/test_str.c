/* runtime/str: the shortest round-trip number format and its JSON rewrite, checked against
 * strtod (the reader every JSON parser agrees with) on random doubles and on the cases
 * people type. */
#include "../../runtime/str.h"

#include "check.h"

static void check_fmt(double x, const char *want) {
    char buf[32];
    str_fmt_double(x, buf, sizeof buf);
    CHECK_TRUE(strcmp(buf, want) == 0, "str_fmt_double(%.17g) = %s, expected %s", x, buf, want);
}

static void check_shorten(const char *in, const char *want) {
    char *t = str_dup(in);
    str_json_shorten(t);
    CHECK_TRUE(strcmp(t, want) == 0, "str_json_shorten(%s) = %s, expected %s", in, t, want);
    free(t);
}

/* str_getline over a memory stream: lengths, the bound, NULs, no final newline. */
static void test_getline(void) {
    static const char data[] = "ab\n\ncdefgh\nx\0y\nlast";
    FILE *f = fmemopen((void *)data, sizeof data - 1, "r");
    char *line = NULL;
    size_t cap = 0;
    int cut = -1;
    struct {
        ssize_t n;
        const char *keep;
        size_t klen;
        int cut;
    } want[] = {{3, "ab\n", 3, 0},   {1, "\n", 1, 0},   {7, "cdef", 4, 1},
                {4, "x\0y\n", 4, 0}, {4, "last", 4, 0}, {-1, NULL, 0, 0}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ssize_t n = str_getline(&line, &cap, f, 4, &cut);
        CHECK_TRUE(n == want[i].n, "line %zu: read %zd bytes, expected %zd", i, n, want[i].n);
        if (n < 0 || want[i].n < 0) continue;
        CHECK_TRUE(cut == want[i].cut && memcmp(line, want[i].keep, want[i].klen) == 0 &&
                       line[want[i].klen] == 0 && cap <= 5,
                   "line %zu: cut %d, cap %zu", i, cut, cap);
    }
    fclose(f);
    free(line);
}

int main(void) {
    test_getline();
    check_fmt(0.05, "0.05");
    check_fmt(2e-4, "0.0002");
    check_fmt(1e-8, "1e-08");
    check_fmt(16, "16");
    check_fmt(-0.1, "-0.1");
    check_fmt(1.0 / 3.0, "0.3333333333333333");
    check_fmt(0.1f, "0.10000000149011612"); /* a float widened: all 17 digits are needed */
    /* random doubles of every magnitude read back exactly and no shorter form does */
    uint64_t s = 7;
    int exact = 1, minimal = 1;
    for (int i = 0; i < 20000; i++) {
        s = str_mix64(s + 0x9e3779b97f4a7c15ull);
        double x = ldexp((double)(s >> 11) / 9007199254740992.0, (int)(s % 200) - 100);
        char buf[32], shorter[400];
        str_fmt_double(x, buf, sizeof buf);
        if (strtod(buf, NULL) != x) exact = 0;
        int digits = 0, lead = 1; /* significant digits: leading zeros do not count */
        for (const char *c = buf; *c && *c != 'e'; c++) {
            if (*c >= '1' && *c <= '9') lead = 0;
            digits += !lead && *c >= '0' && *c <= '9';
        }
        snprintf(shorter, sizeof shorter, "%.*g", digits > 1 ? digits - 1 : 1, x);
        if (digits > 1 && strtod(shorter, NULL) == x) minimal = 0;
    }
    CHECK_TRUE(exact, "a formatted double did not read back");
    CHECK_TRUE(minimal, "a formatted double had a shorter exact form");
    check_shorten("{\"lr\": 0.050000000000000003, \"n\": 12, \"a\": [1.0, 2.5e-05]}",
                  "{\"lr\": 0.05, \"n\": 12, \"a\": [1.0, 2.5e-05]}");
    check_shorten("{\"s\": \"0.050000000000000003 \\\" 1.20000000000000001\", \"x\": -1e+300}",
                  "{\"s\": \"0.050000000000000003 \\\" 1.20000000000000001\", \"x\": -1e+300}");
    check_shorten("[16.0, 0.10000000000000001]", "[16.0, 0.1]");
    return check_finish();
}
