/* model/linalg: the one-sided Jacobi SVD reconstructs M (U S V^T) with orthonormal V, and
 * linalg_pinv_sym satisfies the Moore-Penrose conditions (M P M = M, P M P = P, M P
 * symmetric) on a full-rank and on a rank-deficient symmetric matrix, where the cut-off must
 * drop the null directions. Matrices from a fixed LCG. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/linalg.h"
#include "tests/unit/check.h"

static double lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 9007199254740992.0 - 0.5;
}

static double max_abs_diff(const double *a, const double *b, int n) {
    double m = 0;
    for (int i = 0; i < n; i++)
        m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

static void matmul(double *C, const double *A, const double *B, int n, int k, int m) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            double acc = 0;
            for (int t = 0; t < k; t++)
                acc += A[i * k + t] * B[t * m + j];
            C[i * m + j] = acc;
        }
}

static void test_svd(void) {
    enum { N = 40, Q = 9 };
    double M[N * Q], M0[N * Q], V[Q * Q], R[N * Q], VtV[Q * Q], Vt[Q * Q];
    uint64_t s = 1;
    for (int i = 0; i < N * Q; i++)
        M0[i] = M[i] = lcg(&s);
    linalg_jacobi_svd(M, V, N, Q);
    for (int i = 0; i < Q; i++)
        for (int j = 0; j < Q; j++)
            Vt[i * Q + j] = V[j * Q + i];
    matmul(R, M, Vt, N, Q, Q); /* (U S) V^T */
    double e = max_abs_diff(R, M0, N * Q);
    CHECK_TRUE(e < 1e-12, "U S V^T differs from M by %.3e", e);
    matmul(VtV, Vt, V, Q, Q, Q);
    double o = 0;
    for (int i = 0; i < Q; i++)
        for (int j = 0; j < Q; j++)
            o = fmax(o, fabs(VtV[i * Q + j] - (i == j)));
    double ortho = 0; /* columns of U S orthogonal */
    for (int p = 0; p < Q; p++)
        for (int k = p + 1; k < Q; k++) {
            double g = 0;
            for (int i = 0; i < N; i++)
                g += M[i * Q + p] * M[i * Q + k];
            ortho = fmax(ortho, fabs(g));
        }
    CHECK_TRUE(o < 1e-12 && ortho < 1e-12, "V^T V - I %.3e, U S columns' dot products %.3e", o,
               ortho);
    printf("svd [%d, %d]: |U S V^T - M| %.3e, |V^T V - I| %.3e, column dots %.3e\n", N, Q, e, o,
           ortho);
}

/* M = G G^T with G [q, k]: rank k. */
static void test_pinv(int q, int k) {
    double *G = malloc(sizeof(double) * (size_t)(q * k)),
           *M = malloc(sizeof(double) * (size_t)(q * q));
    double *M0 = malloc(sizeof(double) * (size_t)(q * q)),
           *P = malloc(sizeof(double) * (size_t)(q * q));
    double *V = malloc(sizeof(double) * (size_t)(q * q)),
           *T = malloc(sizeof(double) * (size_t)(q * q));
    double *U = malloc(sizeof(double) * (size_t)(q * q));
    uint64_t s = (uint64_t)(q * 31 + k);
    for (int i = 0; i < q * k; i++)
        G[i] = lcg(&s);
    for (int i = 0; i < q; i++)
        for (int j = 0; j < q; j++) {
            double acc = 0;
            for (int t = 0; t < k; t++)
                acc += G[i * k + t] * G[j * k + t];
            M0[i * q + j] = acc;
        }
    memcpy(M, M0, sizeof(double) * (size_t)(q * q));
    linalg_pinv_sym(P, M, V, q, 1e-10);
    matmul(T, M0, P, q, q, q);
    matmul(U, T, M0, q, q, q); /* M P M */
    double e1 = max_abs_diff(U, M0, q * q);
    matmul(T, P, M0, q, q, q);
    matmul(U, T, P, q, q, q); /* P M P */
    double e2 = max_abs_diff(U, P, q * q), pmax = 0;
    for (int i = 0; i < q * q; i++)
        pmax = fmax(pmax, fabs(P[i]));
    matmul(T, M0, P, q, q, q);
    double sym = 0;
    for (int i = 0; i < q; i++)
        for (int j = 0; j < q; j++)
            sym = fmax(sym, fabs(T[i * q + j] - T[j * q + i]));
    CHECK_TRUE(e1 < 1e-10 && e2 < 1e-10 * fmax(1, pmax * pmax) && sym < 1e-10,
               "pinv q=%d rank %d: |MPM - M| %.3e, |PMP - P| %.3e (|P| %.3e), |MP - (MP)^T| %.3e",
               q, k, e1, e2, pmax, sym);
    printf("pinv q=%d rank %d: |MPM - M| %.3e, |PMP - P| %.3e, asymmetry of MP %.3e\n", q, k, e1,
           e2, sym);
    free(G), free(M), free(M0), free(P), free(V), free(T), free(U);
}

int main(void) {
    test_svd();
    test_pinv(8, 8);
    test_pinv(12, 5);
    return check_finish();
}
