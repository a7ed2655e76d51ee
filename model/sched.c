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

SchedAnchor sched_anchor_plain(int64_t warmup) {
    return (SchedAnchor){warmup, 0.0};
}

double sched_progress(SchedAnchor a, int64_t step, int64_t total) {
    const int64_t s = step - 1;
    if (s <= a.step) return s == a.step ? a.progress : 0.0;
    const double span = (double)(total - a.step > 1 ? total - a.step : 1);
    const double p = a.progress + (1.0 - a.progress) * (double)(s - a.step) / span;
    return fmin(1.0, fmax(0.0, p));
}

SchedAnchor sched_anchor_resume(SchedAnchor a, int64_t warmup, int64_t total, int64_t done) {
    const int64_t at = done - 1 > warmup ? done - 1 : warmup; /* s of step `done` */
    if (at < a.step) return a; /* still before the old anchor: its rule is the plain one */
    return (SchedAnchor){at, sched_progress(a, at + 1, total)};
}

double sched_lr_resumed(SchedKind k, double lr, int64_t step, int64_t warmup, SchedAnchor a,
                        int64_t total) {
    const double s = (double)(step - 1);
    if (s < (double)warmup) return lr * s / (double)(warmup > 1 ? warmup : 1);
    const double p = sched_progress(a, step, total);
    switch (k) {
    case SCHED_LINEAR:
        return lr * (1.0 - p);
    case SCHED_COSINE:
        return lr * 0.5 * (1.0 + cos(M_PI * p));
    case SCHED_CONSTANT:
        break;
    }
    return lr;
}
