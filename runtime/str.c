/* String and buffer helpers (see str.h). */
#include "str.h"

#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

char *str_ndup(const char *s, size_t n) {
    size_t len = strnlen(s, n);
    char *d = malloc(len + 1);
    SL_CHECK(d != NULL, "out of memory");
    memcpy(d, s, len);
    d[len] = 0;
    return d;
}

char *str_dup(const char *s) {
    return str_ndup(s, strlen(s));
}

char *str_printf(const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    SL_CHECK(n >= 0, "bad format '%s'", fmt);
    char *out = malloc((size_t)n + 1);
    SL_CHECK(out != NULL, "out of memory");
    vsnprintf(out, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return out;
}

char *str_join_path(const char *dir, const char *name) {
    size_t a = strlen(dir);
    return str_printf("%s%s%s", dir, a > 0 && dir[a - 1] != '/' ? "/" : "", name);
}

void *str_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    SL_CHECK(q != NULL, "out of memory (%zu bytes)", n);
    return q;
}

ssize_t str_getline(char **line, size_t *cap, FILE *f, size_t max, int *cut) {
    size_t n = 0, kept = 0;
    int c;
    *cut = 0;
    flockfile(f);
    while ((c = getc_unlocked(f)) != EOF) {
        if (kept < max) {
            if (kept + 2 > *cap) {
                size_t want = *cap < 256 ? 256 : *cap * 2;
                if (want > max + 1) want = max + 1;
                if (want < kept + 2) want = kept + 2;
                *line = str_xrealloc(*line, want);
                *cap = want;
            }
            (*line)[kept++] = (char)c;
        } else {
            *cut = 1;
        }
        n++;
        if (c == '\n') break;
    }
    funlockfile(f);
    if (n == 0) return -1;
    if (*cap == 0) *line = str_xrealloc(*line, *cap = 1);
    (*line)[kept] = 0;
    return n > (size_t)SSIZE_MAX ? SSIZE_MAX : (ssize_t)n;
}

char *str_read_stream(FILE *f, size_t *n) {
    size_t cap = 1 << 16, len = 0;
    char *p = str_xrealloc(NULL, cap);
    for (;;) {
        if (len + 4096 > cap) p = str_xrealloc(p, cap *= 2);
        size_t r = fread(p + len, 1, cap - len - 1, f);
        len += r;
        if (r == 0) break;
    }
    p[len] = 0;
    *n = len;
    return p;
}

void str_join_names(char *buf, size_t n, const char *sep, const char *(*name_at)(int i)) {
    size_t len = 0;
    const char *name;
    if (n) buf[0] = 0;
    for (int i = 0; len < n && (name = name_at(i)) != NULL; i++) {
        snprintf(buf + len, n - len, "%s%s", i ? sep : "", name);
        len = strlen(buf);
    }
}

const char *str_fmt_duration(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e9)
        snprintf(buf, n, "?");
    else if (s >= 3600)
        snprintf(buf, n, "%dh%02dm%02ds", (int)(s / 3600), (int)(s / 60) % 60, (int)s % 60);
    else if (s >= 60)
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, n, "%.1fs", s);
    return buf;
}

const char *str_fmt_double(double x, char *buf, size_t n) {
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, x);
        if (strtod(buf, NULL) == x || x != x) break;
    }
    return buf;
}

void str_json_shorten(char *t) {
    char *w = t;
    for (const char *r = t; *r;) {
        if (*r == '"') { /* a string, escapes included, copied as it is */
            *w++ = *r++;
            while (*r && *r != '"') {
                if (*r == '\\' && r[1]) *w++ = *r++;
                *w++ = *r++;
            }
            if (*r) *w++ = *r++;
            continue;
        }
        if (*r == '-' || (*r >= '0' && *r <= '9')) {
            size_t len = strspn(r, "-+0123456789.eE");
            char num[64], shortest[32];
            if (len < sizeof num && strcspn(r, ".eE") < len) {
                memcpy(num, r, len);
                num[len] = 0;
                str_fmt_double(strtod(num, NULL), shortest, sizeof shortest);
                /* jansson's "1.0" style stays a real: keep a '.' or exponent */
                size_t sl = strlen(shortest);
                if (strcspn(shortest, ".eEn") == sl && sl + 2 < sizeof shortest)
                    memcpy(shortest + sl, ".0", 3), sl += 2;
                if (sl <= len) {
                    memcpy(w, shortest, sl);
                    w += sl, r += len;
                    continue;
                }
            }
            memmove(w, r, len);
            w += len, r += len;
            continue;
        }
        *w++ = *r++;
    }
    *w = 0;
}

uint64_t str_mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
