/* The fatal path and status helpers (see err.h). */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int g_err_rank = -1;
static ErrAbortHook g_err_hook;
static void *g_err_hook_ctx;

void err_set_rank(int rank) {
    g_err_rank = rank;
}

int err_rank(void) {
    return g_err_rank < 0 ? 0 : g_err_rank;
}

void err_set_abort_hook(ErrAbortHook hook, void *ctx) {
    g_err_hook = hook;
    g_err_hook_ctx = ctx;
}

static _Noreturn void err_finish(int code) {
    fflush(stdout);
    fflush(stderr);
    if (g_err_hook) g_err_hook(g_err_hook_ctx, code);
    exit(code);
}

void err_fatal_at(const char *file, int line, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s:%d rank %d: %s\n", file, line, err_rank(), msg);
    err_finish(EXIT_FATAL);
}

void err_check_failed(const char *file, int line, const char *cond, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s:%d rank %d: check failed: %s: %s\n", file, line, err_rank(), cond, msg);
    err_finish(EXIT_FATAL);
}

void err_status_ok(ErrStatus *st) {
    st->ok = 1;
    st->msg[0] = 0;
}

int err_status_set(ErrStatus *st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->msg, sizeof st->msg, fmt, ap);
    va_end(ap);
    st->ok = 0;
    return 0;
}
