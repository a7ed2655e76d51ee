/* Small dense linear algebra in double (linalg.h): Gram-Schmidt, one-sided Jacobi SVD and
 * the symmetric pseudo-inverse built on it. */
#include "linalg.h"

#include <math.h>

void linalg_orth(double *X, int64_t n, int q) {
    for (int j = 0; j < q; j++) {
        for (int pass = 0; pass < 2; pass++)
            for (int k = 0; k < j; k++) {
                double d = 0;
                for (int64_t i = 0; i < n; i++)
                    d += X[i * q + k] * X[i * q + j];
                for (int64_t i = 0; i < n; i++)
                    X[i * q + j] -= d * X[i * q + k];
            }
        double nn = 0;
        for (int64_t i = 0; i < n; i++)
            nn += X[i * q + j] * X[i * q + j];
        nn = sqrt(nn);
        const double inv = nn > 1e-300 ? 1.0 / nn : 0.0;
        for (int64_t i = 0; i < n; i++)
            X[i * q + j] *= inv;
    }
}

void linalg_jacobi_svd(double *M, double *V, int64_t n, int q) {
    for (int i = 0; i < q; i++)
        for (int j = 0; j < q; j++)
            V[i * q + j] = i == j;
    for (int sweep = 0; sweep < 80; sweep++) {
        int rotated = 0;
        for (int p = 0; p < q; p++)
            for (int k = p + 1; k < q; k++) {
                double a = 0, b = 0, g = 0;
                for (int64_t i = 0; i < n; i++) {
                    a += M[i * q + p] * M[i * q + p];
                    b += M[i * q + k] * M[i * q + k];
                    g += M[i * q + p] * M[i * q + k];
                }
                if (fabs(g) <= 1e-15 * sqrt(a * b) || g == 0) continue;
                rotated = 1;
                /* the rotation that makes columns p and k orthogonal (Golub & Van Loan 8.6.3) */
                const double zeta = (b - a) / (2 * g);
                const double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1 + zeta * zeta));
                const double c = 1 / sqrt(1 + t * t), s = c * t;
                for (int64_t i = 0; i < n; i++) {
                    const double x = M[i * q + p], y = M[i * q + k];
                    M[i * q + p] = c * x - s * y;
                    M[i * q + k] = s * x + c * y;
                }
                for (int i = 0; i < q; i++) {
                    const double x = V[i * q + p], y = V[i * q + k];
                    V[i * q + p] = c * x - s * y;
                    V[i * q + k] = s * x + c * y;
                }
            }
        if (!rotated) break;
    }
}

void linalg_pinv_sym(double *P, double *M, double *V, int q, double rtol) {
    /* M V = U S: sigma_j = ||column j of M||, u_j = column j / sigma_j; pinv = V S^+ U^T */
    linalg_jacobi_svd(M, V, q, q);
    double smax = 0.0;
    for (int j = 0; j < q; j++) {
        double nn = 0.0;
        for (int i = 0; i < q; i++)
            nn += M[i * q + j] * M[i * q + j];
        smax = fmax(smax, sqrt(nn));
    }
    for (int j = 0; j < q; j++) { /* column j of M becomes u_j / sigma_j, or 0 below the cut */
        double nn = 0.0;
        for (int i = 0; i < q; i++)
            nn += M[i * q + j] * M[i * q + j];
        const double s = sqrt(nn), w = s > rtol * smax && s > 0 ? 1.0 / (s * s) : 0.0;
        for (int i = 0; i < q; i++)
            M[i * q + j] *= w;
    }
    for (int i = 0; i < q; i++)
        for (int k = 0; k < q; k++) {
            double acc = 0.0;
            for (int j = 0; j < q; j++)
                acc += V[i * q + j] * M[k * q + j];
            P[i * q + k] = acc;
        }
}
