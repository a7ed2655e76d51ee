/* The one fatal path, CHECK macros that never compile out, and parser status values.
 * A fatal error prints `file:line rank R: message` to stderr, flushes stdout and stderr,
 * calls the abort hook (parallel/ installs one that calls MPI_Abort so no rank hangs), and
 * when the hook returns (no hook, or MPI not running) exits with status 70 (EX_SOFTWARE). */
#ifndef SHARDLORA_RUNTIME_ERR_H
#define SHARDLORA_RUNTIME_ERR_H

#include <stddef.h>

/* The process exit statuses shardlora documents (README.md): the commands return them and
 * the fatal path below ends with EXIT_FATAL. */
enum {
    EXIT_OK_STATUS = 0,
    EXIT_USAGE = 2,     /* bad command line or impossible layout */
    EXIT_BAD_INPUT = 3, /* bad model, config or data files */
    EXIT_IO = 4,        /* cannot write outputs */
    EXIT_NONFINITE = 5, /* the loss or gradient became NaN/inf */
    EXIT_FATAL = 70,    /* an internal error (SL_CHECK / SL_FATAL): a bug, or memory the checks
                           before allocating did not foresee (--no-memory-check) */
    EXIT_REQUEUE = 75,  /* stopped on SIGUSR1/SIGTERM after writing a checkpoint: requeue */
};

/* Called once, after the message is printed, with the exit status. It may return (the
 * process then exits with that status); it must not return into the failing code. */
typedef void (*ErrAbortHook)(void *ctx, int exit_code);

/* Process-wide: the rank shown in messages and the hook. These are the only process-global
 * settings in the project (like a signal handler, an abort path has to be reachable from
 * anywhere). */
void err_set_rank(int rank);
int err_rank(void);
void err_set_abort_hook(ErrAbortHook hook, void *ctx);

_Noreturn void err_fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The condition's text goes in as an argument (it may contain '%'). */
_Noreturn void err_check_failed(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define SL_FATAL(...) err_fatal_at(__FILE__, __LINE__, __VA_ARGS__)
/* SL_CHECK(cond, "format", args...): never compiled out. */
#define SL_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) err_check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__);                     \
    } while (0)

/* Status returned by parsers and loaders: ok == 1, or msg names the file and the place
 * (byte offset, line, JSON path). */
typedef struct {
    int ok;
    char msg[1024];
} ErrStatus;

void err_status_ok(ErrStatus *st);
/* Sets ok = 0 and formats msg. Returns 0 so a parser can `return err_status_set(...)`. */
int err_status_set(ErrStatus *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
