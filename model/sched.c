/* Learning-rate schedules (formulas in sched.h). */
#include "sched.h"

#include <math.h>
#include <string.h>

static const char *const sched_names[] = {"constant", "linear", "cosine"};

int sched_parse(const char *name) {
    /* Hugging Face's lr_scheduler_type spelling of the constant rate after a linear warmup
     * (its "constant" has no warmup; ours takes --warmup-steps either way) */
    if (strcmp(name, "constant_with_warmup") == 0) return SCHED_CONSTANT;
    for (int i = 0; i < (int)(sizeof sched_names / sizeof sched_names[0]); i++)
        if (strcmp(name, sched_names[i]) == 0) return i;
    return -1;
}

const char *sched_name(SchedKind k) {
    return sched_names[k];
}

double sched_lr(SchedKind k, double lr, int64_t step, int64_t warmup, int64_t total) {
    const double s = (double)(step - 1);
    if (s < (double)warmup) return lr * s / (double)(warmup > 1 ? warmup : 1);
    const double span = (double)(total - warmup > 1 ? total - warmup : 1);
    switch (k) {
    case SCHED_LINEAR:
        return lr * fmax(0.0, ((double)total - s) / span);
    case SCHED_COSINE:
        return lr * fmax(0.0, 0.5 * (1.0 + cos(M_PI * (s - (double)warmup) / span)));
    case SCHED_CONSTANT:
        break;
    }
    return lr;
}
