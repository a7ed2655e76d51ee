/* Checked size arithmetic: products and sums of sizes from users and files that must fit
 * int64_t (and size_t) without overflow, so a huge value is refused instead of wrapping
 * around into a small allocation or undefined behaviour. */
#ifndef SHARDLORA_RUNTIME_SIZES_H
#define SHARDLORA_RUNTIME_SIZES_H

#include <stdint.h>

/* *out = a * b; 0 (and *out = INT64_MAX) when a, b < 0 or the product overflows int64_t. */
int sizes_mul(int64_t a, int64_t b, int64_t *out);
/* *out = a + b under the same rule. */
int sizes_add(int64_t a, int64_t b, int64_t *out);
/* a * b * c (0 on overflow or a negative factor). */
int sizes_mul3(int64_t a, int64_t b, int64_t c, int64_t *out);
/* a * b saturated at INT64_MAX (negative factors count as 0); for estimates. */
int64_t sizes_mul_sat(int64_t a, int64_t b);
int64_t sizes_add_sat(int64_t a, int64_t b);

#endif
