/* Command-line option parsing and help (see args.h). */
#include "args.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/err.h"
#include "../runtime/str.h"

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
    case ARG_STRS: {
        ArgStrs *l = s->dst;
        if (l->n == l->cap) {
            int cap = l->cap ? 2 * l->cap : 4;
            const char **nv = realloc(l->v, (size_t)cap * sizeof *nv);
            if (!nv) return err_status_set(st, "--%s: out of memory", s->name);
            l->v = nv;
            l->cap = cap;
        }
        l->v[l->n++] = v;
        return 1;
    }
    case ARG_CONFIG:
        return err_status_set(st, "--%s cannot be set here", s->name);
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

/* Sets option s from `v` given by `from`; a flag replaces a list that came from the config. */
static int args_apply(ArgSpec *s, const char *v, ArgSource from, ErrStatus *st) {
    if (s->type == ARG_STRS && from == ARG_FROM_FLAG && s->seen != ARG_FROM_FLAG)
        ((ArgStrs *)s->dst)->n = 0;
    if (!args_set(s, v, st)) return 0;
    s->seen = from;
    return 1;
}

/* The spec called `name`, with '_' read as '-'. */
static ArgSpec *args_lookup(ArgSpec *specs, int nspecs, const char *name) {
    char buf[128];
    size_t n = strlen(name);
    if (n >= sizeof buf) return NULL;
    for (size_t i = 0; i <= n; i++)
        buf[i] = name[i] == '_' ? '-' : name[i];
    return (ArgSpec *)args_find(specs, nspecs, buf);
}

static const char *args_keep(ArgConfig *c, const char *v, size_t n) {
    if (c->nowned == c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        char **no = realloc(c->owned, (size_t)cap * sizeof *no);
        if (!no) return NULL;
        c->owned = no;
        c->cap = cap;
    }
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, v, n);
    d[n] = 0;
    c->owned[c->nowned++] = d;
    return d;
}

/* One key of the config file set to value v[0..n); `where` names the place for errors. */
static int args_config_set(ArgSpec *specs, int nspecs, ArgConfig *c, const char *key, const char *v,
                           size_t n, const char *where, ErrStatus *st) {
    ArgSpec *s = args_lookup(specs, nspecs, key);
    if (!s || s->type == ARG_CONFIG)
        return err_status_set(st, "%s: unknown option '%s' (the keys are the flag names of --help)",
                              where, key);
    const char *kept = args_keep(c, v, n);
    if (!kept) return err_status_set(st, "%s: out of memory", where);
    ErrStatus inner;
    if (!args_apply(s, kept, ARG_FROM_CONFIG, &inner))
        return err_status_set(st, "%s: %s", where, inner.msg);
    return 1;
}

static int args_config_json(ArgSpec *specs, int nspecs, ArgConfig *c, const char *text,
                            ErrStatus *st) {
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    if (!root)
        return err_status_set(st, "%s: invalid JSON at line %d column %d: %s", c->path, je.line,
                              je.column, je.text);
    int ok = json_is_object(root)
                 ? 1
                 : err_status_set(st, "%s: expected a JSON object of options", c->path);
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!ok) break;
        char where[600], num[64];
        snprintf(where, sizeof where, "%s: key \"%s\"", c->path, key);
        json_t *items = json_is_array(val) ? val : NULL;
        size_t nitems = items ? json_array_size(items) : 1;
        ArgSpec *s = args_lookup(specs, nspecs, key);
        if (items && s && s->type != ARG_STRS) {
            ok = err_status_set(st, "%s: a list is only allowed for repeatable options", where);
            break;
        }
        for (size_t i = 0; ok && i < nitems; i++) {
            json_t *x = items ? json_array_get(items, i) : val;
            const char *v = NULL;
            if (json_is_string(x))
                v = json_string_value(x);
            else if (json_is_true(x))
                v = "true";
            else if (json_is_false(x))
                v = "false";
            else if (json_is_integer(x))
                snprintf(num, sizeof num, "%lld", (long long)json_integer_value(x)), v = num;
            else if (json_is_real(x))
                v = str_fmt_double(json_real_value(x), num, sizeof num);
            else if (json_is_null(x))
                continue;
            else
                ok = err_status_set(st, "%s: expected a string, number or boolean", where);
            if (ok) ok = args_config_set(specs, nspecs, c, key, v, strlen(v), where, st);
        }
    }
    json_decref(root);
    return ok;
}

/* s[0..*n) without surrounding blanks and one pair of double quotes. */
static const char *args_trim(const char *s, size_t *n) {
    while (*n && isspace((unsigned char)s[0]))
        s++, (*n)--;
    while (*n && isspace((unsigned char)s[*n - 1]))
        (*n)--;
    if (*n >= 2 && s[0] == '"' && s[*n - 1] == '"') s++, *n -= 2;
    return s;
}

static int args_config_lines(ArgSpec *specs, int nspecs, ArgConfig *c, const char *text,
                             ErrStatus *st) {
    int lineno = 0;
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        lineno++;
        char where[600];
        snprintf(where, sizeof where, "%s:%d", c->path, lineno);
        size_t ln = n;
        const char *l = args_trim(p, &ln);
        p += n + (e ? 1 : 0);
        if (!ln || l[0] == '#') continue;
        const char *sep = memchr(l, '=', ln);
        const char *colon = memchr(l, ':', ln);
        if (!sep || (colon && colon < sep)) sep = colon;
        if (!sep) return err_status_set(st, "%s: expected 'key = value'", where);
        size_t kn = (size_t)(sep - l), vn = ln - kn - 1;
        const char *k = args_trim(l, &kn), *v = args_trim(sep + 1, &vn);
        char key[128];
        if (!kn || kn >= sizeof key) return err_status_set(st, "%s: bad key", where);
        memcpy(key, k, kn);
        key[kn] = 0;
        if (vn >= 2 && v[0] == '[' && v[vn - 1] == ']') {
            const ArgSpec *s = args_lookup(specs, nspecs, key);
            if (s && s->type != ARG_STRS)
                return err_status_set(st, "%s: a list is only allowed for repeatable options",
                                      where);
            const char *q = v + 1, *end = v + vn - 1;
            while (q < end) {
                const char *comma = memchr(q, ',', (size_t)(end - q));
                size_t in = (size_t)((comma ? comma : end) - q);
                const char *item = args_trim(q, &in);
                if (in && !args_config_set(specs, nspecs, c, key, item, in, where, st)) return 0;
                q = comma ? comma + 1 : end;
            }
        } else if (!args_config_set(specs, nspecs, c, key, v, vn, where, st)) {
            return 0;
        }
    }
    return 1;
}

/* Reads the config file named by the last --config in argv, if any. */
static int args_read_config(ArgSpec *specs, int nspecs, int argc, char **argv, int first,
                            ErrStatus *st) {
    ArgSpec *cs = NULL;
    for (int i = 0; i < nspecs; i++)
        if (specs[i].type == ARG_CONFIG) cs = &specs[i];
    if (!cs) return 1;
    ArgConfig *c = cs->dst;
    size_t nlen = strlen(cs->name);
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) || strncmp(a + 2, cs->name, nlen)) continue;
        if (a[2 + nlen] == '=')
            c->path = a + 3 + nlen;
        else if (!a[2 + nlen] && i + 1 < argc)
            c->path = argv[++i];
        else if (!a[2 + nlen])
            return err_status_set(st, "--%s needs a value", cs->name);
    }
    if (!c->path) return 1;
    cs->seen = ARG_FROM_FLAG;
    FILE *f = fopen(c->path, "rb");
    if (!f)
        return err_status_set(st, "--%s %s: cannot read: %s", cs->name, c->path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 8192;
            char *nt = realloc(text, cap);
            SL_CHECK(nt, "out of memory");
            text = nt;
        }
        size_t got = fread(text + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    /* a directory opens but does not read (EISDIR): an error, not an empty file */
    const int read_failed = ferror(f), err = errno;
    fclose(f);
    if (read_failed) {
        free(text);
        return err_status_set(st, "--%s %s: cannot read: %s", cs->name, c->path, strerror(err));
    }
    text[len] = 0;
    if (strlen(text) != len) {
        free(text);
        return err_status_set(st, "%s: not a text file (NUL byte)", c->path);
    }
    size_t skip = 0;
    while (skip < len && isspace((unsigned char)text[skip]))
        skip++;
    int ok = text[skip] == '{' ? args_config_json(specs, nspecs, c, text, st)
                               : args_config_lines(specs, nspecs, c, text, st);
    free(text);
    return ok;
}

int args_parse(ArgSpec *specs, int nspecs, int argc, char **argv, int first, int *help,
               ErrStatus *st) {
    err_status_ok(st);
    *help = 0;
    for (int i = first; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *help = 1;
            return 1;
        }
    if (!args_read_config(specs, nspecs, argc, argv, first, st)) return 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            return err_status_set(st, "unexpected argument '%s' (options start with --)", a);
        char name[128];
        const char *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        if (len >= sizeof name) return err_status_set(st, "option too long: %s", a);
        memcpy(name, a + 2, len);
        name[len] = 0;
        ArgSpec *s = (ArgSpec *)args_find(specs, nspecs, name);
        const char *v = eq ? eq + 1 : NULL;
        if (!s && strncmp(name, "no-", 3) == 0 && !eq) {
            s = (ArgSpec *)args_find(specs, nspecs, name + 3);
            if (s && s->type != ARG_BOOL) s = NULL;
            v = "0";
        }
        if (!s) return err_status_set(st, "unknown option --%s (see --help)", name);
        if (s->type == ARG_CONFIG) {
            if (!eq) i++; /* read above */
            continue;
        }
        if (!v && s->type == ARG_BOOL) v = "1";
        if (!v) {
            if (i + 1 >= argc) return err_status_set(st, "--%s needs a value", name);
            v = argv[++i];
        }
        if (!args_apply(s, v, ARG_FROM_FLAG, st)) return 0;
    }
    for (int i = 0; i < nspecs; i++)
        if (specs[i].required && !specs[i].seen)
            return err_status_set(st, "--%s is required (see --help)", specs[i].name);
    return 1;
}

void args_free(ArgSpec *specs, int nspecs) {
    for (int i = 0; i < nspecs; i++) {
        if (specs[i].type == ARG_STRS) {
            ArgStrs *l = specs[i].dst;
            free(l->v);
            memset(l, 0, sizeof *l);
        } else if (specs[i].type == ARG_CONFIG) {
            ArgConfig *c = specs[i].dst;
            for (int k = 0; k < c->nowned; k++)
                free(c->owned[k]);
            free(c->owned);
            c->owned = NULL;
            c->nowned = c->cap = 0;
        }
    }
}

static json_t *args_value_json(const ArgSpec *s) {
    switch (s->type) {
    case ARG_STR: {
        const char *v = *(const char *const *)s->dst;
        return v ? json_string(v) : json_null();
    }
    case ARG_INT:
        return json_integer((json_int_t) * (const int64_t *)s->dst);
    case ARG_U64:
        return json_integer((json_int_t) * (const uint64_t *)s->dst);
    case ARG_FLOAT:
        return json_real(*(const double *)s->dst);
    case ARG_BOOL:
        return json_boolean(*(const int *)s->dst);
    case ARG_STRS: {
        const ArgStrs *l = s->dst;
        json_t *a = json_array();
        for (int k = 0; k < l->n; k++)
            json_array_append_new(a, json_string(l->v[k]));
        return a;
    }
    case ARG_CONFIG: {
        const ArgConfig *c = s->dst;
        return c->path ? json_string(c->path) : json_null();
    }
    }
    return json_null();
}

json_t *args_to_json(const ArgSpec *specs, int nspecs) {
    json_t *o = json_object();
    for (int i = 0; i < nspecs; i++)
        json_object_set_new(o, specs[i].name, args_value_json(&specs[i]));
    return o;
}

void args_print_resolved(FILE *f, const ArgSpec *specs, int nspecs) {
    static const char *from[] = {"default", "config", "flag"};
    for (int i = 0; i < nspecs; i++) {
        json_t *v = args_value_json(&specs[i]);
        char *txt = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        if (txt) str_json_shorten(txt);
        fprintf(f, "  %-22s = %-40s (%s)\n", specs[i].name, txt ? txt : "?", from[specs[i].seen]);
        free(txt);
        json_decref(v);
    }
}

void args_print_help(FILE *f, const char *usage, const char *about, const ArgSpec *specs,
                     int nspecs) {
    fprintf(f, "usage: %s\n\n%s\n\noptions:\n", usage, about);
    for (int i = 0; i < nspecs; i++) {
        const ArgSpec *s = &specs[i];
        char left[96], def[128] = "";
        if (s->type == ARG_BOOL && strncmp(s->name, "no-", 3) != 0)
            snprintf(left, sizeof left, "--%s, --no-%s", s->name, s->name);
        else if (s->type == ARG_BOOL)
            snprintf(left, sizeof left, "--%s", s->name);
        else
            snprintf(left, sizeof left, "--%s %s%s", s->name, s->metavar ? s->metavar : "X",
                     s->type == ARG_STRS ? " ..." : "");
        if (s->required) {
            snprintf(def, sizeof def, " (required)");
        } else {
            switch (s->type) {
            case ARG_STR:
                if (*(const char **)s->dst)
                    snprintf(def, sizeof def, " [default: %s]", *(const char **)s->dst);
                break;
            case ARG_INT:
                snprintf(def, sizeof def, " [default: %lld]", (long long)*(int64_t *)s->dst);
                break;
            case ARG_U64:
                snprintf(def, sizeof def, " [default: %llu]",
                         (unsigned long long)*(uint64_t *)s->dst);
                break;
            case ARG_FLOAT:
                snprintf(def, sizeof def, " [default: %g]", *(double *)s->dst);
                break;
            case ARG_BOOL:
                snprintf(def, sizeof def, " [default: %s]", *(int *)s->dst ? "on" : "off");
                break;
            case ARG_STRS:
                if (!strstr(s->help, "repeatable")) snprintf(def, sizeof def, " (repeatable)");
                break;
            case ARG_CONFIG:
                break;
            }
        }
        fprintf(f, "  %-30s %s%s\n", left, s->help, def);
    }
    fprintf(f, "  %-30s %s\n", "--help", "print this help and exit");
}

int args_command(ArgSpec *specs, int nspecs, int argc, char **argv, int first, const char *cmd,
                 const char *usage, const char *about, int *rc) {
    int help = 0;
    ErrStatus st;
    *rc = 0;
    if (!args_parse(specs, nspecs, argc, argv, first, &help, &st)) {
        fprintf(stderr, "shardlora %s: %s\n", cmd, st.msg);
        *rc = EXIT_USAGE;
        return 0;
    }
    if (help) args_print_help(stdout, usage, about, specs, nspecs);
    return !help;
}
