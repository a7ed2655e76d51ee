/* PiSSA (Meng et al. 2024, "PiSSA: Principal Singular Values and Singular Vectors Adaptation")
 * on tensor-parallel shards (model/pissa.c). The initialisation itself is the entry
 * adapter_init_pissa (adapter_init.h: its init, declare, settings and PEFT export), which the
 * LoRA kinds call through the registry; this header has the pieces behind it. */
#ifndef SHARDLORA_MODEL_PISSA_H
#define SHARDLORA_MODEL_PISSA_H

#include <stdint.h>

#include "adapter.h"

/* Oversampling of the randomized SVD (Halko et al. 2011, §4.2: p = 5..10): the test matrix has
 * q = min(r + PISSA_OVERSAMPLE, min(out, in)) columns. PEFT's pissa_niter_N uses q = r
 * (torch.svd_lowrank); a few more columns make the top-r vectors converge in fewer iterations. */
#define PISSA_OVERSAMPLE 8

/* The PEFT conversion of a trained PiSSA adapter to a plain LoRA of rank 2r that applies to
 * the ORIGINAL base (peft_model.py save_pretrained with path_initial_model_for_weight_conversion,
 * LoraModel.subtract_mutated_init): Delta W = s (B A - B0 A0) = s' [B | -B0] [A ; A0] with
 * s' = s for alpha' = 2 alpha (alpha' = sqrt(2) alpha with rsLoRA) and r' = 2r.
 *   A2 [2r, in] = [A ; A0] (rows), B2 [out, 2r] = [B | -B0] (columns). Full tensors. */
void pissa_convert(float *A2, float *B2, const float *A, const float *B, const float *A0,
                   const float *B0, int r, int64_t in, int64_t out);
/* The alpha of the converted adapter (PEFT: 2 alpha, or sqrt(2) alpha with rsLoRA). */
double pissa_converted_alpha(double alpha, int use_rslora);

/* The initial factors A0 [r, in] and B0 [out, r] of a PiSSA slot, kept for the export's
 * conversion as frozen ParamTable entries (no gradient, no optimizer state; checkpoints carry
 * them) named <prefix>.PISSA_A0_SUFFIX / PISSA_B0_SUFFIX, sharded as lora_A / lora_B.
 * Declared through adapter_init_pissa.declare by the LoRA kinds' declare (after lora_A /
 * lora_B), written by its init. */
#define PISSA_A0_SUFFIX ".pissa_A0"
#define PISSA_B0_SUFFIX ".pissa_B0"
void pissa_declare_initial(AdapterSlot *s, ParamTable *pt);

#endif
