/* Learning-rate schedules with linear warmup, as Hugging Face transformers'
 * get_{constant,linear,cosine}_schedule_with_warmup define them (torchtune's cosine is the
 * same formula). The factor is evaluated at s = step - 1 (LambdaLR's current_step for the
 * step-th optimizer update), so with warmup the first update has lr 0, as there:
 *   s < warmup:  lr * s / max(1, warmup)
 *   constant:    lr
 *   linear:      lr * max(0, (total - s) / max(1, total - warmup))
 *   cosine:      lr * max(0, 0.5 * (1 + cos(pi * (s - warmup) / max(1, total - warmup))))
 * (the cosine with num_cycles = 0.5: one half wave from lr down to 0 at s = total).
 *
 * Resumed with another total (shardlora's rule, README "Resuming"): after the warmup the
 * decay is a function of its progress p in [0, 1], linear lr * (1 - p), cosine
 * lr * 0.5 * (1 + cos(pi * p)), constant lr; the plain schedule has p = (s - warmup) /
 * (total - warmup). An anchor (step a, progress pa) bends it: from s = a on,
 *   p(s) = pa + (1 - pa) * (s - a) / max(1, total - a)
 * so the lr is continuous at a, follows the same shape over the remaining steps and
 * reaches 0 at s = total. The plain schedule is the anchor (warmup, 0); a resume after
 * step P with a new total takes the anchor (max(P - 1, warmup), p of the old rule there):
 * step P's lr, the last one the checkpoint's run used, goes on (a finished run's last lr is
 * not 0, so extending it still trains); an unfinished warmup is kept; and the old schedule
 * comes back when the total did not change. */
#ifndef SHARDLORA_MODEL_SCHED_H
#define SHARDLORA_MODEL_SCHED_H

#include <stdint.h>

typedef enum { SCHED_CONSTANT = 0, SCHED_LINEAR, SCHED_COSINE } SchedKind;

/* Where the decay is anchored: at s = step (updates done) it has progress p in [0, 1]. */
typedef struct {
    int64_t step;
    double progress;
} SchedAnchor;

/* "constant" | "linear" | "cosine" (or Hugging Face's "constant_with_warmup" = constant);
 * -1 otherwise. */
int sched_parse(const char *name);
const char *sched_name(SchedKind k);

/* The learning rate of optimizer step `step` (1-based) of `total`. */
double sched_lr(SchedKind k, double lr, int64_t step, int64_t warmup, int64_t total);

/* The plain schedule's anchor: (warmup, 0). */
SchedAnchor sched_anchor_plain(int64_t warmup);
/* The anchor of a run resumed after `done` steps with a new total, from the rule `a` of
 * `total` steps the checkpoint's run followed (the decay goes on from step done's lr). */
SchedAnchor sched_anchor_resume(SchedAnchor a, int64_t warmup, int64_t total, int64_t done);
/* The decay progress p in [0, 1] at s = step - 1 after the anchor (0 before it). */
double sched_progress(SchedAnchor a, int64_t step, int64_t total);
/* The learning rate of step `step` (1-based) under the anchored rule: the warmup, then the
 * shape at sched_progress. With sched_anchor_plain(warmup) it equals sched_lr. */
double sched_lr_resumed(SchedKind k, double lr, int64_t step, int64_t warmup, SchedAnchor a,
                        int64_t total);

#endif
