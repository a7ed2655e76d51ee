/* Rank-aware logging: `[shardlora rR] message` (warnings `[shardlora rR] warning: ...`),
 * all on stderr: stdout carries only a command's results (generate's text, eval's JSON,
 * tokenize's ids, ...), so a script can pipe them. Info lines from rank 0 only (log_rank:
 * from every rank); warnings and debug lines from every rank that calls them; each only
 * when the level allows. */
#ifndef SHARDLORA_RUNTIME_LOG_H
#define SHARDLORA_RUNTIME_LOG_H

typedef enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 } LogLevel;

/* Process-wide level (default info; set once at start-up from --log-level). */
void log_set_level(LogLevel level);
LogLevel log_level(void);
/* Parse "error|warn|info|debug"; returns -1 if unknown. */
int log_parse_level(const char *s);

/* Printed by rank 0 only. */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Printed by every rank that calls it, at level debug. */
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Printed by every rank that calls it (warnings are often rank-specific). */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Every rank, info level. */
void log_rank(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
