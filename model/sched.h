/* Learning-rate schedules with linear warmup, as Hugging Face transformers'
 * get_{constant,linear,cosine}_schedule_with_warmup define them (torchtune's cosine is the
 * same formula). The factor is evaluated at s = step - 1 (LambdaLR's current_step for the
 * step-th optimizer update), so with warmup the first update has lr 0, as there:
 *   s < warmup:  lr * s / max(1, warmup)
 *   constant:    lr
 *   linear:      lr * max(0, (total - s) / max(1, total - warmup))
 *   cosine:      lr * max(0, 0.5 * (1 + cos(pi * (s - warmup) / max(1, total - warmup))))
 * (the cosine with num_cycles = 0.5: one half wave from lr down to 0 at s = total). */
#ifndef SHARDLORA_MODEL_SCHED_H
#define SHARDLORA_MODEL_SCHED_H

#include <stdint.h>

typedef enum { SCHED_CONSTANT = 0, SCHED_LINEAR, SCHED_COSINE } SchedKind;

/* "constant" | "linear" | "cosine" (or Hugging Face's "constant_with_warmup" = constant);
 * -1 otherwise. */
int sched_parse(const char *name);
const char *sched_name(SchedKind k);

/* The learning rate of optimizer step `step` (1-based) of `total`. */
double sched_lr(SchedKind k, double lr, int64_t step, int64_t warmup, int64_t total);

#endif
