/* Rank-aware logging (see log.h). */
#include "log.h"
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static LogLevel g_log_level = LOG_INFO;

void log_set_level(LogLevel level) {
    g_log_level = level;
}

LogLevel log_level(void) {
    return g_log_level;
}

int log_parse_level(const char *s) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return -1;
}

static void log_emit(FILE *f, const char *tag, const char *fmt, va_list ap) {
    char msg[4096];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(f, "[shardlora r%d]%s %s\n", err_rank(), tag, msg);
    fflush(f);
}

void log_info(const char *fmt, ...) {
    if (g_log_level < LOG_INFO || err_rank() != 0) return;
    va_list ap;
    va_start(ap, fmt);
    log_emit(stderr, "", fmt, ap);
    va_end(ap);
}

void log_debug(const char *fmt, ...) {
    if (g_log_level < LOG_DEBUG) return;
    va_list ap;
    va_start(ap, fmt);
    log_emit(stderr, " debug:", fmt, ap);
    va_end(ap);
}

void log_warn(const char *fmt, ...) {
    if (g_log_level < LOG_WARN) return;
    va_list ap;
    va_start(ap, fmt);
    log_emit(stderr, " warning:", fmt, ap);
    va_end(ap);
}

void log_rank(const char *fmt, ...) {
    if (g_log_level < LOG_INFO) return;
    va_list ap;
    va_start(ap, fmt);
    log_emit(stderr, "", fmt, ap);
    va_end(ap);
}
