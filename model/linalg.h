/* Small dense linear algebra in double for the adapter initialisations: Gram-Schmidt and
 * one-sided Jacobi SVD (PiSSA's randomized SVD, model/pissa.c; LoRA-FA's pseudo-inverse,
 * model/lora.c). Row-major; sizes are a LoRA rank or a few times it on one side.
 * Legend: n rows, q columns. */
#ifndef SHARDLORA_MODEL_LINALG_H
#define SHARDLORA_MODEL_LINALG_H

#include <stdint.h>

/* Columns of X [n, q] orthonormalised in place by modified Gram-Schmidt, twice ("twice is
 * enough", Giraud et al. 2005); a column that vanishes becomes 0. */
void linalg_orth(double *X, int64_t n, int q);
/* One-sided Jacobi SVD (Hestenes 1958) of M [n, q]: M V = U S with V [q, q] orthogonal; on
 * return M holds U S (orthogonal columns, norms = the singular values) and V the rotations. */
void linalg_jacobi_svd(double *M, double *V, int64_t n, int q);
/* P [q, q] = pinv(M) of a symmetric M [q, q] (destroyed), as torch.linalg.pinv: singular
 * values <= rtol x the largest count as zero. V [q, q] scratch. */
void linalg_pinv_sym(double *P, double *M, double *V, int q, double rtol);

#endif
