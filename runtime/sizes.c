/* Checked size arithmetic (see sizes.h). */
#include "sizes.h"

int sizes_mul(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, out)) {
        *out = INT64_MAX;
        return 0;
    }
    return 1;
}

int sizes_add(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0 || __builtin_add_overflow(a, b, out)) {
        *out = INT64_MAX;
        return 0;
    }
    return 1;
}

int sizes_mul3(int64_t a, int64_t b, int64_t c, int64_t *out) {
    int64_t ab;
    return sizes_mul(a, b, &ab) && sizes_mul(ab, c, out) ? 1 : (*out = INT64_MAX, 0);
}

int64_t sizes_mul_sat(int64_t a, int64_t b) {
    int64_t p;
    sizes_mul(a < 0 ? 0 : a, b < 0 ? 0 : b, &p);
    return p;
}

int64_t sizes_add_sat(int64_t a, int64_t b) {
    int64_t s;
    sizes_add(a < 0 ? 0 : a, b < 0 ? 0 : b, &s);
    return s;
}
