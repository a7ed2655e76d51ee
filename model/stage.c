/* Pipeline stage split and --pp-layers (see stage.h). */
#include "stage.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void stage_cost_model(StageCost *sc, const HfcConfig *c, int64_t T) {
    const double C = (double)c->hidden_size, F = (double)c->intermediate_size,
                 HD = (double)(c->num_heads * c->head_dim),
                 KD = (double)(c->num_kv_heads * c->head_dim), V = (double)c->vocab_size;
    /* the per-layer terms of llama_flops_per_token: 4 x (q, o: C*H*D; k, v: C*KV*D;
     * gate, up, down: C*F) for the forward and input-gradient matmuls of the frozen weights,
     * and causal attention 6 * (H*D) * (T + 1) */
    sc->layer = 4.0 * (C * HD * 2 + C * KD * 2 + 3 * C * F) + 6.0 * HD * (double)(T + 1);
    sc->first = 0;
    sc->last = 4.0 * V * C;
}

static double stage_layer(const double *cost, int64_t i) {
    return cost ? cost[i] : 1.0;
}

/* Can L layers go into P non-empty stages of cost <= B? Greedy: each stage but the last takes
 * as many layers as fit (leaving one for every later stage). That reaches at least as far as
 * any split with stages <= B, so it fails only when none exists; this holds in floating point
 * too, a forward sum of non-negative terms from a later start being no larger. first (may be
 * NULL) gets the split when it fits. */
static int stage_fits(int64_t L, int P, const double *cost, double fe, double le, double B,
                      int64_t *first) {
    int64_t i = 0;
    for (int s = 0; s < P; s++) {
        if (first) first[s] = i;
        double acc = s == 0 ? fe : 0;
        if (s == P - 1) {
            for (; i < L; i++)
                acc += stage_layer(cost, i);
            acc += le;
            if (first) first[P] = L;
            return acc <= B;
        }
        acc += stage_layer(cost, i++);
        if (!(acc <= B)) return 0;
        const int64_t end = L - (P - 1 - s); /* the later stages need a layer each */
        while (i < end && acc + stage_layer(cost, i) <= B)
            acc += stage_layer(cost, i++);
    }
    return 0; /* not reached: P >= 1 */
}

static uint64_t stage_bits(double x) {
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static double stage_double(uint64_t u) {
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static int stage_check_pl(int64_t L, int P, ErrStatus *st) {
    if (P < 1) return err_status_set(st, "--pp %d: the pipeline needs at least 1 stage", P);
    if (P > L)
        return err_status_set(st, "--pp %d: more pipeline stages than the model's %lld layers", P,
                              (long long)L);
    return 1;
}

int stage_split(int64_t L, int P, const double *layer_cost, double first_extra, double last_extra,
                int64_t *first, ErrStatus *st) {
    err_status_ok(st);
    if (!stage_check_pl(L, P, st)) return 0;
    if (!(isfinite(first_extra) && first_extra >= 0 && isfinite(last_extra) && last_extra >= 0))
        return err_status_set(st,
                              "stage costs: the first / last stage extras %g / %g are not "
                              "finite and >= 0",
                              first_extra, last_extra);
    for (int64_t i = 0; layer_cost && i < L; i++)
        if (!(isfinite(layer_cost[i]) && layer_cost[i] >= 0))
            return err_status_set(st, "stage costs: layer %lld costs %g, not finite and >= 0",
                                  (long long)i, layer_cost[i]);
    /* The smallest feasible bound, searched over the bit patterns of non-negative doubles
     * (ordered as the values are): exact, at most 64 greedy passes. */
    uint64_t lo = 0, hi = stage_bits(INFINITY);
    if (!stage_fits(L, P, layer_cost, first_extra, last_extra, 0.0, NULL)) {
        while (hi - lo > 1) {
            const uint64_t mid = lo + (hi - lo) / 2;
            if (stage_fits(L, P, layer_cost, first_extra, last_extra, stage_double(mid), NULL))
                hi = mid;
            else
                lo = mid;
        }
    } else {
        hi = 0;
    }
    SL_CHECK(stage_fits(L, P, layer_cost, first_extra, last_extra, stage_double(hi), first),
             "stage_split: the bound found does not fit");
    return 1;
}

double stage_max_cost(int P, const double *layer_cost, double first_extra, double last_extra,
                      const int64_t *first) {
    double worst = 0;
    for (int s = 0; s < P; s++) {
        double acc = s == 0 ? first_extra : 0;
        for (int64_t i = first[s]; i < first[s + 1]; i++)
            acc += stage_layer(layer_cost, i);
        if (s == P - 1) acc += last_extra;
        if (acc > worst) worst = acc;
    }
    return worst;
}

int stage_parse_layers(const char *spec, int64_t L, int P, int64_t *first, ErrStatus *st) {
    err_status_ok(st);
    if (!stage_check_pl(L, P, st)) return 0;
    int n = 1;
    for (const char *c = spec; *c; c++)
        n += *c == ',';
    if (n != P)
        return err_status_set(st, "--pp-layers %s: %d stage(s) given, --pp is %d", spec, n, P);
    const char *p = spec;
    int64_t sum = 0;
    for (int s = 0; s < P; s++) {
        const size_t len = strcspn(p, ",");
        char *end = NULL;
        errno = 0;
        const long long v = strtoll(p, &end, 10);
        if (len == 0 || end != p + len || errno == ERANGE ||
            !(isdigit((unsigned char)*p) || *p == '-'))
            return err_status_set(st, "--pp-layers %s: stage %d's '%.*s' is not a whole number",
                                  spec, s, (int)len, p);
        if (v < 1)
            return err_status_set(st,
                                  "--pp-layers %s: stage %d gets %lld layers; every stage needs "
                                  "at least 1",
                                  spec, s, v);
        first[s] = sum;
        sum = v > L - sum ? L + 1 : sum + v; /* past L it cannot add up: no overflow */
        p += len + (p[len] == ',');
    }
    if (sum != L)
        return err_status_set(
            st, "--pp-layers %s: the stages sum to %s%lld layers, the model has %lld", spec,
            sum > L ? "more than " : "", (long long)(sum > L ? L : sum), (long long)L);
    first[P] = L;
    return 1;
}
