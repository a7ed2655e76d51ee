/* Tensor-parallel linear layers (see linear.h). */
#include "linear.h"

#include "../runtime/err.h"
#include "adapter.h"

ShardDesc shard_even(ShardKind kind, int64_t out, int64_t in, int tp, int tp_rank) {
    ShardDesc s = {kind, out, in, 0, out, 0, in};
    if (kind == SHARD_COL) {
        SL_CHECK(out % tp == 0, "out %lld not divisible by tp %d", (long long)out, tp);
        s.no = out / tp;
        s.o0 = s.no * tp_rank;
    } else if (kind == SHARD_ROW) {
        SL_CHECK(in % tp == 0, "in %lld not divisible by tp %d", (long long)in, tp);
        s.ni = in / tp;
        s.i0 = s.ni * tp_rank;
    }
    return s;
}

ShardDesc shard_rows(int64_t out, int64_t in, int64_t o0, int64_t no) {
    ShardDesc s = {SHARD_COL, out, in, o0, no, 0, in};
    return s;
}

void lin_forward(GemmCtx *g, const Linear *l, const AdapterEnv *env, float *Y, const float *X,
                 int64_t N) {
    const int64_t no = l->shard.no;
    gemm_xwt(g, Y, X, &l->w, N, 0.0f);
    const float *sc =
        l->adapter && l->adapter->kind->out_scale ? l->adapter->kind->out_scale(l->adapter) : NULL;
    if (sc) {
        for (int64_t n = 0; n < N; n++) {
            float *y = Y + n * no;
            for (int64_t o = 0; o < no; o++)
                y[o] *= sc[o];
        }
    }
    if (l->bias && l->add_bias) {
        for (int64_t n = 0; n < N; n++) {
            float *y = Y + n * no;
            for (int64_t o = 0; o < no; o++)
                y[o] += l->bias[o];
        }
    }
    if (l->adapter) l->adapter->kind->forward(l->adapter, env, Y, X, N);
}

void lin_backward(GemmCtx *g, const Linear *l, const AdapterEnv *env, float *dX, const float *dY,
                  const float *X, int64_t N, float beta) {
    const float *sc =
        l->adapter && l->adapter->kind->out_scale ? l->adapter->kind->out_scale(l->adapter) : NULL;
    if (sc) {
        /* the base path's dY is scaled per output column (adapter.h out_scale) */
        const int64_t no = l->shard.no;
        float *d = l->adapter->dys;
        SL_CHECK(d && N <= l->adapter->max_rows, "out_scale without dY scratch for %lld rows",
                 (long long)N);
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < no; o++)
                d[n * no + o] = dY[n * no + o] * sc[o];
        gemm_xw(g, dX, d, &l->w, N, beta);
    } else {
        gemm_xw(g, dX, dY, &l->w, N, beta);
    }
    if (l->adapter) l->adapter->kind->backward(l->adapter, env, dX, dY, X, N);
}
