/* OUT/metrics.csv (see mcsv.h). */
#include "mcsv.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../io/afile.h"
#include "../runtime/err.h"
#include "../runtime/log.h"
#include "../runtime/str.h"

/* a longer metrics.csv line was not written by shardlora: dropped when trimming */
#define MCSV_LINE_MAX ((size_t)1 << 20)

/* x in its shortest round-trip form; nan, inf or -inf when it is not finite (what Python's
 * float() and pandas read). */
static const char *mcsv_num(double x, char *buf, size_t n) {
    if (isnan(x)) return "nan";
    if (isinf(x)) return x > 0 ? "inf" : "-inf";
    return str_fmt_double(x, buf, n);
}

/* Rewrites the file as the header and its rows of steps <= last (a resumed run writes the
 * later ones again); 0 if there is no file. */
static int mcsv_trim(const char *path, int64_t last) {
    ErrStatus ignore; /* no file (or not a regular one): nothing to trim */
    FILE *f = afile_fopen_input(path, &ignore);
    if (!f) return 0;
    char *line = NULL, *keep = str_dup(MCSV_HEADER "\n");
    size_t cap = 0, klen = strlen(keep);
    ssize_t n;
    int cut;
    while ((n = str_getline(&line, &cap, f, MCSV_LINE_MAX, &cut)) > 0) {
        if (cut || !(line[0] >= '0' && line[0] <= '9' && atoll(line) <= last)) continue;
        keep = realloc(keep, klen + (size_t)n + 1);
        SL_CHECK(keep, "out of memory");
        memcpy(keep + klen, line, (size_t)n);
        klen += (size_t)n;
    }
    fclose(f);
    free(line);
    ErrStatus st;
    if (!afile_write_all(path, keep, klen, &st)) log_warn("%s", st.msg);
    free(keep);
    return 1;
}

/* Writes one row and flushes; the first failure is a warning. */
static void mcsv_put(MCsv *c, const char *row) {
    if (!c->f || c->failed) return;
    ErrStatus st;
    if (!afile_append_record(fileno(c->f), c->path, row, strlen(row), &st)) {
        c->failed = 1;
        log_warn("%s; no more CSV rows (training goes on; the file ends with the last whole row)",
                 st.msg);
    }
}

int mcsv_open(MCsv *c, const char *out, int64_t first_step) {
    memset(c, 0, sizeof *c);
    c->path = str_join_path(out, "metrics.csv");
    const int header = first_step > 1 && mcsv_trim(c->path, first_step - 1);
    c->f = fopen(c->path, first_step > 1 ? "a" : "w");
    if (!c->f) {
        log_warn("%s: cannot write: %s; no CSV metrics (training goes on)", c->path,
                 strerror(errno));
        free(c->path);
        c->path = NULL;
        return 0;
    }
    if (!header) mcsv_put(c, MCSV_HEADER "\n");
    return !c->failed;
}

void mcsv_close(MCsv *c) {
    if (c->f && fclose(c->f) != 0 && !c->failed)
        log_warn("%s: cannot write: %s", c->path, strerror(errno));
    c->f = NULL;
    free(c->path);
    c->path = NULL;
}

void mcsv_step(MCsv *c, const TrainerStep *s, double epoch, double lr, double tps, double mfu) {
    if (!c->f) return;
    char b[6][32], row[256];
    snprintf(row, sizeof row, "%lld,%s,%s,%s,%s,%lld,%s,%s,%d,,,\n", (long long)s->step,
             mcsv_num(epoch, b[0], 32), mcsv_num(s->loss, b[1], 32), mcsv_num(lr, b[2], 32),
             mcsv_num(s->grad_norm, b[3], 32), (long long)s->counted, mcsv_num(tps, b[4], 32),
             mcsv_num(mfu, b[5], 32), !s->finite);
    mcsv_put(c, row);
}

void mcsv_eval(MCsv *c, int64_t step, double epoch, double loss, int64_t tokens) {
    if (!c->f) return;
    char b[3][32], row[192];
    snprintf(row, sizeof row, "%lld,%s,,,,,,,,%s,%s,%lld\n", (long long)step,
             mcsv_num(epoch, b[0], 32), mcsv_num(loss, b[1], 32), mcsv_num(exp(loss), b[2], 32),
             (long long)tokens);
    mcsv_put(c, row);
}
