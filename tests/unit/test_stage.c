/* model/stage: stage_split against a brute force over every contiguous split (small L, P,
 * random integer and fractional costs, with and without first / last extras), P = 1 and
 * P = L, uniform costs, the cost model against llama_flops_per_token, and the refusals of
 * stage_split and stage_parse_layers (one line each, naming the flag). */
#include "../../model/llama.h"
#include "../../model/stage.h"
#include "check.h"

/* A valid split: first[0] = 0, first[P] = L, every stage non-empty. */
static int split_valid(int64_t L, int P, const int64_t *first) {
    if (first[0] != 0 || first[P] != L) return 0;
    for (int s = 0; s < P; s++)
        if (first[s + 1] <= first[s]) return 0;
    return 1;
}

/* The smallest largest-stage cost over all C(L-1, P-1) splits, by enumerating the cut sets:
 * cut[s] = first[s + 1] for s < P - 1, advanced like an odometer. */
static double brute_min(int64_t L, int P, const double *cost, double fe, double le) {
    int64_t first[16];
    first[0] = 0;
    first[P] = L;
    for (int s = 1; s < P; s++)
        first[s] = s;
    double best = INFINITY;
    for (;;) {
        double m = stage_max_cost(P, cost, fe, le, first);
        if (m < best) best = m;
        int s = P - 1; /* advance the last cut that can move */
        while (s >= 1 && first[s] >= L - (P - s))
            s--;
        if (s < 1) break;
        first[s]++;
        for (int k = s + 1; k < P; k++)
            first[k] = first[k - 1] + 1;
    }
    return best;
}

static void test_optimal(void) {
    uint64_t x = 12345;
    int cases = 0, bad = 0;
    for (int64_t L = 1; L <= 12; L++)
        for (int P = 1; P <= L; P++)
            for (int rep = 0; rep < 12; rep++) {
                double cost[16], fe = 0, le = 0;
                for (int64_t i = 0; i < L; i++) {
                    x = x * 6364136223846793005ull + 1442695040888963407ull;
                    /* integers (exact sums) for half the reps, fractions for the rest:
                     * both sides sum a stage in the same order, so equality is exact */
                    cost[i] = rep < 6 ? (double)((x >> 33) % 20) : (double)(x >> 11) * 0x1p-50;
                }
                if (rep % 3 >= 1) fe = (double)((x >> 40) % 15);
                if (rep % 3 == 2) le = (double)((x >> 20) % 40);
                int64_t first[17];
                ErrStatus st;
                int ok = stage_split(L, P, cost, fe, le, first, &st);
                double got = ok ? stage_max_cost(P, cost, fe, le, first) : -1;
                double want = brute_min(L, P, cost, fe, le);
                cases++;
                if (!ok || !split_valid(L, P, first) || got != want) {
                    bad++;
                    if (bad < 5)
                        printf("L %lld P %d rep %d: max %g, brute force %g (%s)\n", (long long)L, P,
                               rep, got, want, ok ? "split" : st.msg);
                }
            }
    CHECK_TRUE(bad == 0, "%d of %d splits not optimal", bad, cases);
    printf("%s stage_split optimal in %d cases (L <= 12, all P, random costs and extras)\n",
           bad ? "FAIL" : "PASS", cases);
}

static void test_shapes(void) {
    ErrStatus st;
    int64_t f[40];
    /* P = 1: one stage holding everything */
    CHECK_TRUE(stage_split(7, 1, NULL, 3, 4, f, &st) && f[0] == 0 && f[1] == 7, "P = 1: %s",
               st.msg);
    /* P = L: one layer each, whatever the costs */
    const double c5[5] = {9, 1, 1, 1, 9};
    CHECK_TRUE(stage_split(5, 5, c5, 100, 0, f, &st), "P = L: %s", st.msg);
    for (int s = 0; s <= 5; s++)
        CHECK_TRUE(f[s] == s, "P = L: first[%d] = %lld", s, (long long)f[s]);
    /* uniform: 32 layers in 3 stages, no extras: 11, 11, 10 (earlier stages fullest) */
    CHECK_TRUE(stage_split(32, 3, NULL, 0, 0, f, &st) && f[1] == 11 && f[2] == 22 && f[3] == 32,
               "32 / 3: %lld %lld %lld", (long long)f[1], (long long)f[2], (long long)f[3]);
    /* a heavy lm_head (3 layers' worth) on 32 layers, 4 stages: the last stage holds fewer
     * layers; the optimum is 9 (9 + 9 + 9 + (5 + 3) or 9, 9, 8, 6 + 3) */
    CHECK_TRUE(stage_split(32, 4, NULL, 0, 3, f, &st) && stage_max_cost(4, NULL, 0, 3, f) == 9 &&
                   f[4] - f[3] + 3 <= 9,
               "lm_head-heavy: max %g", stage_max_cost(4, NULL, 0, 3, f));
    /* zero costs: any split, still valid */
    const double z[4] = {0, 0, 0, 0};
    CHECK_TRUE(stage_split(4, 2, z, 0, 0, f, &st) && split_valid(4, 2, f), "zero costs");
}

/* L * layer + first + last of the cost model = llama_flops_per_token of a model with no
 * adapters (its other function: the MFU count). */
static void test_cost_model(void) {
    HfcConfig c;
    hfc_defaults(&c, HFC_LLAMA);
    c.hidden_size = 96, c.intermediate_size = 256, c.num_layers = 5, c.num_heads = 6;
    c.num_kv_heads = 2, c.head_dim = 16, c.vocab_size = 1000;
    LlamaModel m;
    memset(&m, 0, sizeof m);
    m.C = c.hidden_size, m.F = c.intermediate_size, m.L = c.num_layers, m.H = c.num_heads;
    m.KV = c.num_kv_heads, m.D = c.head_dim, m.V = c.vocab_size;
    m.layers = calloc((size_t)m.L, sizeof *m.layers); /* no adapters */
    const int64_t T = 77;
    StageCost sc;
    stage_cost_model(&sc, &c, T);
    double want = llama_flops_per_token(&m, T, NULL, NULL);
    double got = (double)m.L * sc.layer + sc.first + sc.last;
    CHECK_TRUE(fabs(got - want) <= 1e-12 * want, "cost model %.17g, llama_flops_per_token %.17g",
               got, want);
    CHECK_TRUE(sc.first == 0 && sc.last == 4.0 * 1000 * 96, "extras %g %g", sc.first, sc.last);
    printf("%s cost model: L*layer + first + last = %.17g, llama_flops_per_token = %.17g\n",
           fabs(got - want) <= 1e-12 * want ? "PASS" : "FAIL", got, want);
    free(m.layers);
}

/* ok == 0, one line (no newline) that contains want. */
static void refused(int ok, const ErrStatus *st, const char *want, const char *what) {
    CHECK_TRUE(!ok && strstr(st->msg, want) && !strchr(st->msg, '\n'), "%s: '%s' (want '%s')", what,
               ok ? "accepted" : st->msg, want);
}

static void test_parse(void) {
    ErrStatus st;
    int64_t f[8];
    CHECK_TRUE(stage_parse_layers("10,11,11", 32, 3, f, &st) && f[0] == 0 && f[1] == 10 &&
                   f[2] == 21 && f[3] == 32,
               "10,11,11: %s", st.msg);
    CHECK_TRUE(stage_parse_layers("32", 32, 1, f, &st) && f[0] == 0 && f[1] == 32, "P = 1: %s",
               st.msg);
    CHECK_TRUE(stage_parse_layers("1,1,1", 3, 3, f, &st) && f[2] == 2 && f[3] == 3, "P = L: %s",
               st.msg);
    refused(stage_parse_layers("10,11", 32, 3, f, &st), &st, "2 stage(s) given, --pp is 3",
            "too few entries");
    refused(stage_parse_layers("10,11,5,6", 32, 3, f, &st), &st, "4 stage(s) given",
            "too many entries");
    refused(stage_parse_layers("10,0,22", 32, 3, f, &st), &st, "stage 1 gets 0 layers",
            "a zero entry");
    refused(stage_parse_layers("-2,12,22", 32, 3, f, &st), &st, "stage 0 gets -2 layers",
            "a negative entry");
    refused(stage_parse_layers("10,11,10", 32, 3, f, &st), &st,
            "sum to 31 layers, the model has 32", "short sum");
    refused(stage_parse_layers("10,11,99999999999999999999", 32, 3, f, &st), &st, "not a whole",
            "out of range");
    refused(stage_parse_layers("10,11,9223372036854775807", 32, 3, f, &st), &st,
            "more than 32 layers", "huge sum");
    refused(stage_parse_layers("10,x,11", 32, 3, f, &st), &st, "stage 1's 'x' is not a whole",
            "not a number");
    refused(stage_parse_layers("10,,22", 32, 3, f, &st), &st, "stage 1's '' is not a whole",
            "empty entry");
    refused(stage_parse_layers("10, 11,11", 32, 3, f, &st), &st, "not a whole", "a space");
    refused(stage_parse_layers("10,11,11", 32, 0, f, &st), &st, "--pp 0", "P = 0");
    refused(stage_parse_layers("1,1,1,1,1", 4, 5, f, &st), &st, "more pipeline stages than",
            "P > L (parse)");
    refused(stage_split(4, 5, NULL, 0, 0, f, &st), &st,
            "--pp 5: more pipeline stages than the "
            "model's 4 layers",
            "P > L (split)");
    refused(stage_split(4, 0, NULL, 0, 0, f, &st), &st, "--pp 0", "P = 0 (split)");
    const double neg[2] = {1, -1};
    refused(stage_split(2, 1, neg, 0, 0, f, &st), &st, "layer 1 costs -1", "a negative cost");
    refused(stage_split(2, 1, NULL, NAN, 0, f, &st), &st, "extras", "a NaN extra");
}

int main(void) {
    test_optimal();
    test_shapes();
    test_cost_model();
    test_parse();
    return check_finish();
}
