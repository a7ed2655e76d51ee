/* TensorBoard event files (see tboard.h). */
#include "tboard.h"

#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../io/afile.h"
#include "../io/crc32c.h"
#include "../runtime/err.h"
#include "../runtime/log.h"
#include "../runtime/str.h"
#include "train/tboard.pb-c.h"

/* TFRecord's masked CRC (TensorFlow's tsl/lib/hash/crc32c.h: a CRC over data that holds
 * CRCs is weak, so the stored value is rotated right by 15 and offset). */
static uint32_t tboard_masked_crc(const uint8_t *data, size_t len) {
    const uint32_t c = crc32c(data, len);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static void tboard_put_le(uint8_t *out, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++)
        out[i] = (uint8_t)(v >> (8 * i));
}

size_t tboard_frame(uint8_t *out, const uint8_t *data, size_t len) {
    tboard_put_le(out, (uint64_t)len, 8);
    tboard_put_le(out + 8, tboard_masked_crc(out, 8), 4);
    memcpy(out + 12, data, len);
    tboard_put_le(out + 12 + len, tboard_masked_crc(data, len), 4);
    return len + 16;
}

static double tboard_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Frames and writes one Event, then flushes; the first failure is a warning. */
static void tboard_write(TBoard *tb, const Sltb__Event *ev) {
    if (!tb->f || tb->failed) return;
    const size_t len = sltb__event__get_packed_size(ev);
    if (len > TBOARD_MAX_EVENT) {
        tb->failed = 1;
        log_warn("%s: an event of %zu bytes is over the limit of %d; no more TensorBoard events",
                 tb->path, len, TBOARD_MAX_EVENT);
        return;
    }
    sltb__event__pack(ev, tb->rec + 12);
    const size_t n = tboard_frame(tb->rec, tb->rec + 12, len);
    ErrStatus st; /* a whole record or none: readers stop at the last whole one */
    if (!afile_append_record(fileno(tb->f), tb->path, tb->rec, n, &st)) {
        tb->failed = 1;
        log_warn("%s; no more TensorBoard events (training goes on)", st.msg);
    }
}

/* A new file named as TensorBoard's writers name theirs; ".N" is added when a file of this
 * second and host exists already (a run resumed within the second). */
static FILE *tboard_create(const char *dir, char **path) {
    char host[256] = "localhost";
    if (gethostname(host, sizeof host) != 0) strcpy(host, "localhost");
    host[sizeof host - 1] = 0;
    const long long now = (long long)time(NULL);
    for (int k = 0; k < 100; k++) {
        *path = k ? str_printf("%s/events.out.tfevents.%lld.%s.%d", dir, now, host, k)
                  : str_printf("%s/events.out.tfevents.%lld.%s", dir, now, host);
        const int fd = open(*path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0) {
            FILE *f = fdopen(fd, "wb");
            if (!f) close(fd);
            return f;
        }
        if (errno != EEXIST) return NULL;
        free(*path);
    }
    *path = str_printf("%s/events.out.tfevents.%lld.%s", dir, now, host);
    errno = EEXIST;
    return NULL;
}

int tboard_open(TBoard *tb, const char *dir, int64_t first_step) {
    memset(tb, 0, sizeof *tb);
    tb->f = tboard_create(dir, &tb->path);
    if (!tb->f) {
        log_warn("%s: cannot create: %s; no TensorBoard events (training goes on)", tb->path,
                 strerror(errno));
        free(tb->path);
        tb->path = NULL;
        return 0;
    }
    Sltb__Event ev = SLTB__EVENT__INIT;
    ev.wall_time = tboard_now();
    ev.what_case = SLTB__EVENT__WHAT_FILE_VERSION;
    ev.file_version = (char *)"brain.Event:2";
    tboard_write(tb, &ev);
    Sltb__SessionLog log = SLTB__SESSION_LOG__INIT;
    log.status = SLTB__SESSION_LOG__SESSION_STATUS__START;
    ev.step = first_step;
    ev.what_case = SLTB__EVENT__WHAT_SESSION_LOG;
    ev.session_log = &log;
    tboard_write(tb, &ev);
    return !tb->failed;
}

void tboard_close(TBoard *tb) {
    if (tb->f && fclose(tb->f) != 0 && !tb->failed)
        log_warn("%s: cannot write: %s", tb->path, strerror(errno));
    tb->f = NULL;
    free(tb->path);
    tb->path = NULL;
}

void tboard_scalars(TBoard *tb, int64_t step, const TBoardScalar *v, int n) {
    if (!tb->f || tb->failed) return;
    SL_CHECK(n >= 0 && n <= TBOARD_MAX_SCALARS, "tboard_scalars: %d scalars", n);
    Sltb__SummaryValue vals[TBOARD_MAX_SCALARS], *ptrs[TBOARD_MAX_SCALARS];
    for (int i = 0; i < n; i++) {
        sltb__summary_value__init(&vals[i]);
        vals[i].tag = (char *)v[i].tag;
        vals[i].value_case = SLTB__SUMMARY_VALUE__VALUE_SIMPLE_VALUE;
        vals[i].simple_value = (float)v[i].value;
        ptrs[i] = &vals[i];
    }
    Sltb__Summary sum = SLTB__SUMMARY__INIT;
    sum.n_value = (size_t)n;
    sum.value = ptrs;
    Sltb__Event ev = SLTB__EVENT__INIT;
    ev.wall_time = tboard_now();
    ev.step = step;
    ev.what_case = SLTB__EVENT__WHAT_SUMMARY;
    ev.summary = &sum;
    tboard_write(tb, &ev);
}

void tboard_train(TBoard *tb, const TrainerStep *s, double epoch, double lr, double tps,
                  double mfu) {
    const TBoardScalar v[] = {
        {"train/loss", s->loss}, {"train/learning_rate", lr}, {"train/grad_norm", s->grad_norm},
        {"train/epoch", epoch},  {"train/tokens_per_s", tps}, {"train/mfu", mfu},
    };
    tboard_scalars(tb, s->step, v, (int)(sizeof v / sizeof v[0]));
}

void tboard_eval(TBoard *tb, int64_t step, double loss) {
    const TBoardScalar v[] = {{"eval/loss", loss}, {"eval/perplexity", exp(loss)}};
    tboard_scalars(tb, step, v, (int)(sizeof v / sizeof v[0]));
}
