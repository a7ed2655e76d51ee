/* Command-line option parsing and help (see args.h). */
#include "args.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const ArgSpec *args_find(const ArgSpec *specs, int nspecs, const char *name) {
    for (int i = 0; i < nspecs; i++)
        if (strcmp(specs[i].name, name) == 0) return &specs[i];
    return NULL;
}

static int args_set(ArgSpec *s, const char *v, ErrStatus *st) {
    char *end = NULL;
    errno = 0;
    switch (s->type) {
    case ARG_STR:
        *(const char **)s->dst = v;
        return 1;
    case ARG_INT: {
        long long x = strtoll(v, &end, 10);
        if (errno || !*v || *end)
            return err_status_set(st, "--%s: '%s' is not an integer", s->name, v);
        *(int64_t *)s->dst = x;
        return 1;
    }
    case ARG_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || !*v || *end || v[0] == '-')
            return err_status_set(st, "--%s: '%s' is not a non-negative integer", s->name, v);
        *(uint64_t *)s->dst = x;
        return 1;
    }
    case ARG_FLOAT: {
        double x = strtod(v, &end);
        if (errno || !*v || *end)
            return err_status_set(st, "--%s: '%s' is not a number", s->name, v);
        *(double *)s->dst = x;
        return 1;
    }
    case ARG_BOOL:
        if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "on") == 0) {
            *(int *)s->dst = 1;
            return 1;
        }
        if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "off") == 0) {
            *(int *)s->dst = 0;
            return 1;
        }
        return err_status_set(st, "--%s: '%s' is not a boolean (true/false)", s->name, v);
    }
    return err_status_set(st, "--%s: bad option type", s->name);
}

int args_parse(ArgSpec *specs, int nspecs, int argc, char **argv, int first, int *help,
               ErrStatus *st) {
    err_status_ok(st);
    *help = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = 1;
            return 1;
        }
        if (strncmp(a, "--", 2) != 0)
            return err_status_set(st, "unexpected argument '%s' (options start with --)", a);
        char name[128];
        const char *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        if (len >= sizeof name) return err_status_set(st, "option too long: %s", a);
        memcpy(name, a + 2, len);
        name[len] = 0;
        ArgSpec *s = (ArgSpec *)args_find(specs, nspecs, name);
        if (!s) return err_status_set(st, "unknown option --%s (see --help)", name);
        const char *v = eq ? eq + 1 : NULL;
        if (!v && s->type == ARG_BOOL) v = "1";
        if (!v) {
            if (i + 1 >= argc) return err_status_set(st, "--%s needs a value", name);
            v = argv[++i];
        }
        if (!args_set(s, v, st)) return 0;
        s->seen = 1;
    }
    for (int i = 0; i < nspecs; i++)
        if (specs[i].required && !specs[i].seen)
            return err_status_set(st, "--%s is required (see --help)", specs[i].name);
    return 1;
}

void args_print_help(FILE *f, const char *usage, const char *about, const ArgSpec *specs,
                     int nspecs) {
    fprintf(f, "usage: %s\n\n%s\n\noptions:\n", usage, about);
    for (int i = 0; i < nspecs; i++) {
        const ArgSpec *s = &specs[i];
        char left[96], def[128] = "";
        snprintf(left, sizeof left, "--%s%s%s", s->name, s->type == ARG_BOOL ? "" : " ",
                 s->type == ARG_BOOL ? "" : (s->metavar ? s->metavar : "X"));
        if (s->required) {
            snprintf(def, sizeof def, " (required)");
        } else {
            switch (s->type) {
            case ARG_STR:
                if (*(const char **)s->dst) snprintf(def, sizeof def, " [default: %s]", *(const char **)s->dst);
                break;
            case ARG_INT: snprintf(def, sizeof def, " [default: %lld]", (long long)*(int64_t *)s->dst); break;
            case ARG_U64: snprintf(def, sizeof def, " [default: %llu]", (unsigned long long)*(uint64_t *)s->dst); break;
            case ARG_FLOAT: snprintf(def, sizeof def, " [default: %g]", *(double *)s->dst); break;
            case ARG_BOOL: snprintf(def, sizeof def, " [default: %s]", *(int *)s->dst ? "on" : "off"); break;
            }
        }
        fprintf(f, "  %-30s %s%s\n", left, s->help, def);
    }
    fprintf(f, "  %-30s %s\n", "--help", "print this help and exit");
}
