/* Command-line option parsing and help (see args.h). */
#include "args.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../io/afile.h"
#include "../runtime/err.h"
#include "../runtime/str.h"

enum { ARGS_NAME_MAX = 128 };

/* ---------------------------------------------------------------- the table */

static int args_is_option(const ArgSpec *s) {
    return s->type != ARG_GROUP && s->type != ARG_ALIAS;
}

const ArgSpec *args_find(const ArgSpec *specs, int nspecs, const char *name) {
    for (int i = 0; i < nspecs; i++)
        if (args_is_option(&specs[i]) && strcmp(specs[i].name, name) == 0) return &specs[i];
    return NULL;
}

/* name[0..len) with '_' read as '-' into buf[ARGS_NAME_MAX]; 0 when too long. */
static int args_dashed(const char *name, size_t len, char *buf) {
    buf[0] = 0;
    if (len >= ARGS_NAME_MAX) return 0;
    for (size_t i = 0; i < len; i++)
        buf[i] = name[i] == '_' ? '-' : name[i];
    buf[len] = 0;
    return 1;
}

/* The option or alias row called `name` (dashed); NULL if none. */
static ArgSpec *args_row(ArgSpec *specs, int nspecs, const char *name) {
    for (int i = 0; i < nspecs; i++)
        if (specs[i].type != ARG_GROUP && strcmp(specs[i].name, name) == 0) return &specs[i];
    return NULL;
}

/* The option a row sets: itself, or an alias's target. */
static ArgSpec *args_target(ArgSpec *specs, int nspecs, ArgSpec *row) {
    return row->type == ARG_ALIAS ? (ArgSpec *)args_find(specs, nspecs, row->target) : row;
}

/* A row that needs no value: a boolean option, an alias of one, or a fixed-value alias. */
static int args_is_flag(ArgSpec *specs, int nspecs, ArgSpec *row) {
    return (row->type == ARG_ALIAS && row->value) ||
           args_target(specs, nspecs, row)->type == ARG_BOOL;
}

/* A table is code: a bad one (an alias of nothing, a name twice) is a bug, fatal at once. */
static void args_check_table(const ArgSpec *specs, int nspecs) {
    for (int i = 0; i < nspecs; i++) {
        const ArgSpec *s = &specs[i];
        if (s->type == ARG_GROUP) {
            SL_CHECK(s->group > ARGG_NONE && s->group < ARGG_COUNT,
                     "option table: row %d heads no group", i);
            continue;
        }
        SL_CHECK(s->name, "option table: row %d has no name", i);
        SL_CHECK(s->type != ARG_ALIAS || (s->target && args_find(specs, nspecs, s->target)),
                 "option table: --%s is an alias of no option", s->name);
        for (int j = 0; j < i; j++)
            SL_CHECK(specs[j].type == ARG_GROUP || strcmp(specs[j].name, s->name) != 0,
                     "option table: --%s twice", s->name);
    }
}

/* ---------------------------------------------------------------- values */

/* 1 or 0 for a boolean word (true/false, yes/no, on/off, 1/0; any case), -1 otherwise. */
static int args_bool(const char *v) {
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no",
                                                                                "off"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(v, yes[i]) == 0) return 1;
        if (strcasecmp(v, no[i]) == 0) return 0;
    }
    return -1;
}

/* *s->dst from the text v; `name` is the spelling messages use. */
static int args_set(ArgSpec *s, const char *name, const char *v, ErrStatus *st) {
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
            if (!nv) return err_status_set(st, "--%s: out of memory", name);
            l->v = nv;
            l->cap = cap;
        }
        l->v[l->n++] = v;
        return 1;
    }
    case ARG_INT: {
        long long x = strtoll(v, &end, 10);
        if (errno || !*v || *end)
            return err_status_set(st, "--%s: '%s' is not an integer", name, v);
        *(int64_t *)s->dst = x;
        return 1;
    }
    case ARG_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || !*v || *end || v[0] == '-')
            return err_status_set(st, "--%s: '%s' is not a non-negative integer", name, v);
        *(uint64_t *)s->dst = x;
        return 1;
    }
    case ARG_FLOAT: {
        double x = strtod(v, &end);
        if (errno || !*v || *end) return err_status_set(st, "--%s: '%s' is not a number", name, v);
        *(double *)s->dst = x;
        return 1;
    }
    case ARG_BOOL: {
        const int b = args_bool(v);
        if (b < 0) return err_status_set(st, "--%s: '%s' is not a boolean (true/false)", name, v);
        *(int *)s->dst = b;
        return 1;
    }
    case ARG_CONFIG:
    case ARG_GROUP:
    case ARG_ALIAS:
        break;
    }
    return err_status_set(st, "--%s cannot be set here", name);
}

/* Sets option s from `v` given by `from`; a flag replaces a list that came from the config. */
static int args_apply(ArgSpec *s, const char *name, const char *v, ArgSource from, ErrStatus *st) {
    if (s->type == ARG_STRS && from == ARG_FROM_FLAG && s->seen != ARG_FROM_FLAG)
        ((ArgStrs *)s->dst)->n = 0;
    if (!args_set(s, name, v, st)) return 0;
    s->seen = from;
    return 1;
}

/* Sets the option `row` names (itself, or an alias's target) from v given by `from`; pre is
 * how messages spell names ("--" for flags, "" for config keys). A fixed-value alias takes
 * a boolean: true sets its value, false nothing. One source naming an option twice, under
 * two names, is refused: which of the two was meant is not ours to guess. */
static int args_give(ArgSpec *specs, int nspecs, ArgSpec *row, const char *v, ArgSource from,
                     const char *pre, ErrStatus *st) {
    ArgSpec *s = args_target(specs, nspecs, row);
    if (row->type == ARG_ALIAS && row->value) {
        const int b = args_bool(v);
        if (b < 0)
            return err_status_set(st, "--%s: '%s' is not a boolean (true/false)", row->name, v);
        if (!b) return 1;
        v = row->value;
    }
    if (s->seen == (int)from && s->seen_as && strcmp(s->seen_as, row->name) != 0)
        return err_status_set(st, "%s%s and %s%s both set %s%s; give one of them", pre, s->seen_as,
                              pre, row->name, pre, s->name);
    if (!args_apply(s, row->name, v, from, st)) return 0;
    s->seen_as = row->name;
    return 1;
}

/* ---------------------------------------------------------------- did you mean */

int args_distance(const char *a, const char *b) {
    /* optimal string alignment: Levenshtein's edits plus a swap of two neighbours (Damerau
     * 1964), each substring edited once; three rows of the dynamic programme */
    const size_t n = strlen(a), m = strlen(b);
    if (n >= ARGS_NAME_MAX || m >= ARGS_NAME_MAX) return INT_MAX / 2;
    int r0[ARGS_NAME_MAX + 1], r1[ARGS_NAME_MAX + 1], r2[ARGS_NAME_MAX + 1];
    for (size_t j = 0; j <= m; j++)
        r1[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        r2[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            int v = r1[j - 1] + (a[i - 1] != b[j - 1]);
            if (r1[j] + 1 < v) v = r1[j] + 1;
            if (r2[j - 1] + 1 < v) v = r2[j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && r0[j - 2] + 1 < v)
                v = r0[j - 2] + 1;
            r2[j] = v;
        }
        memcpy(r0, r1, sizeof r0);
        memcpy(r1, r2, sizeof r1);
    }
    return r1[m];
}

/* name with '-' written as '_' when `underscores` (to answer in the user's spelling). */
static const char *args_spell(const char *name, int underscores, char *buf) {
    snprintf(buf, ARGS_NAME_MAX, "%s", name);
    for (char *p = buf; underscores && *p; p++)
        if (*p == '-') *p = '_';
    return buf;
}

/* "; did you mean --learning-rate (= --lr)?" naming the known name closest to `name`
 * (dashed) when it is near enough to be a typo: 1 edit for names up to 4 characters, 2 up to
 * 9, 3 beyond; "" otherwise. pre: "--" for flags, "" for config keys. */
static void args_suggest(const ArgSpec *specs, int nspecs, const char *name, const char *pre,
                         int underscores, char *buf, size_t n) {
    const size_t len = strlen(name);
    int best = (len <= 4 ? 1 : len <= 9 ? 2 : 3) + 1;
    const ArgSpec *found = NULL;
    for (int i = 0; i < nspecs; i++) {
        const ArgSpec *s = &specs[i];
        if (s->type == ARG_GROUP || s->type == ARG_CONFIG) continue;
        const int d = args_distance(name, s->name);
        if (d < best) best = d, found = s;
    }
    buf[0] = 0;
    if (!found) return;
    char a[ARGS_NAME_MAX], t[ARGS_NAME_MAX];
    args_spell(found->name, underscores, a);
    if (found->type != ARG_ALIAS)
        snprintf(buf, n, "; did you mean %s%s?", pre, a);
    else
        snprintf(buf, n, "; did you mean %s%s (= %s%s%s%s)?", pre, a, pre,
                 args_spell(found->target, underscores, t), found->value ? " " : "",
                 found->value ? found->value : "");
}

/* ---------------------------------------------------------------- config files */

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

/* The option or alias row the config key names ('-' or '_'); 0 with st naming `where`, the
 * key and the closest known name otherwise. */
static int args_config_row(ArgSpec *specs, int nspecs, const char *key, const char *where,
                           ArgSpec **row, ErrStatus *st) {
    char name[ARGS_NAME_MAX], hint[3 * ARGS_NAME_MAX];
    *row = args_dashed(key, strlen(key), name) ? args_row(specs, nspecs, name) : NULL;
    if (*row && (*row)->type != ARG_CONFIG) return 1;
    args_suggest(specs, nspecs, name, "", strchr(key, '_') != NULL, hint, sizeof hint);
    if (hint[0]) return err_status_set(st, "%s: unknown option '%s'%s", where, key, hint);
    return err_status_set(st, "%s: unknown option '%s' (the keys are the flag names of --help)",
                          where, key);
}

/* A list (JSON array, YAML list) sets repeatable options only. */
static int args_config_list_ok(ArgSpec *specs, int nspecs, ArgSpec *row, const char *where,
                               ErrStatus *st) {
    if (args_target(specs, nspecs, row)->type == ARG_STRS) return 1;
    return err_status_set(st, "%s: a list is only allowed for repeatable options", where);
}

/* The key's row set to v[0..n) (copied into c's strings). */
static int args_config_give(ArgSpec *specs, int nspecs, ArgConfig *c, ArgSpec *row, const char *v,
                            size_t n, const char *where, ErrStatus *st) {
    const char *kept = args_keep(c, v, n);
    if (!kept) return err_status_set(st, "%s: out of memory", where);
    ErrStatus inner;
    if (!args_give(specs, nspecs, row, kept, ARG_FROM_CONFIG, "", &inner))
        return err_status_set(st, "%s: %s", where, inner.msg);
    return 1;
}

/* One JSON value of a key as text into num[64] (or its own string); NULL for null, and
 * *bad when it is no string, number or boolean. */
static const char *args_json_text(json_t *x, char *num, int *bad) {
    *bad = 0;
    if (json_is_string(x)) return json_string_value(x);
    if (json_is_true(x)) return "true";
    if (json_is_false(x)) return "false";
    if (json_is_integer(x)) {
        snprintf(num, 64, "%lld", (long long)json_integer_value(x));
        return num;
    }
    if (json_is_real(x)) return str_fmt_double(json_real_value(x), num, 64);
    *bad = !json_is_null(x);
    return NULL;
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
        ArgSpec *row = NULL;
        ok = args_config_row(specs, nspecs, key, where, &row, st);
        json_t *items = json_is_array(val) ? val : NULL;
        if (ok && items) ok = args_config_list_ok(specs, nspecs, row, where, st);
        const size_t nitems = items ? json_array_size(items) : 1;
        for (size_t i = 0; ok && i < nitems; i++) {
            int bad;
            const char *v = args_json_text(items ? json_array_get(items, i) : val, num, &bad);
            if (bad) ok = err_status_set(st, "%s: expected a string, number or boolean", where);
            if (ok && v) ok = args_config_give(specs, nspecs, c, row, v, strlen(v), where, st);
        }
    }
    json_decref(root);
    return ok;
}

/* s[0..*n) without surrounding blanks. */
static const char *args_trim(const char *s, size_t *n) {
    while (*n && isspace((unsigned char)s[0]))
        s++, (*n)--;
    while (*n && isspace((unsigned char)s[*n - 1]))
        (*n)--;
    return s;
}

/* The `key: value` / `key = value` reader: a flat YAML mapping (or INI-like lines). */
typedef struct {
    ArgSpec *specs;
    int nspecs;
    ArgConfig *c;
    ArgSpec *open; /* a key with nothing after it: null, unless `- item` lines follow */
    int open_items;
    int any_key; /* a `---` document marker may only come first */
} ArgLines;

/* Where a quoted scalar may begin: at the start of a value or a flow-list item. */
static int args_quote_starts(const char *l, size_t i) {
    return i == 0 || isspace((unsigned char)l[i - 1]) || strchr("[,=:", l[i - 1]);
}

/* The length of l[0..n) before its comment: '#' at the start or after a blank, outside
 * quotes (YAML's rule, so `url#anchor` stays). */
static size_t args_uncomment(const char *l, size_t n) {
    char q = 0;
    for (size_t i = 0; i < n; i++) {
        if ((q == '"' && l[i] == '\\') ||
            (q == '\'' && l[i] == '\'' && i + 1 < n && l[i + 1] == '\'')) {
            i++; /* an escaped character, or '' inside single quotes */
        } else if (q) {
            if (l[i] == q) q = 0;
        } else if ((l[i] == '"' || l[i] == '\'') && args_quote_starts(l, i)) {
            q = l[i];
        } else if (l[i] == '#' && (i == 0 || isspace((unsigned char)l[i - 1]))) {
            return i;
        }
    }
    return n;
}

/* Decodes the quoted scalar q[0..n) (q[0] the quote) into out; returns its length, or -1
 * with st set. "double": \\ \" \n \t \/ escapes; 'single': '' is one quote. */
static long args_unquote(const char *q, size_t n, char *out, const char *where, ErrStatus *st) {
    static const char from[] = "\\\"nt/", to[] = "\\\"\n\t/";
    const char quote = q[0];
    size_t o = 0, i = 1;
    for (; i < n; i++) {
        char ch = q[i];
        if (ch == quote && quote == '\'' && i + 1 < n && q[i + 1] == '\'') {
            i++;
        } else if (ch == quote) {
            break;
        } else if (quote == '"' && ch == '\\') {
            const char *k = i + 1 < n ? strchr(from, q[i + 1]) : NULL;
            if (!k) {
                err_status_set(st, "%s: unsupported escape in a double-quoted value", where);
                return -1;
            }
            ch = to[k - from];
            i++;
        }
        out[o++] = ch;
    }
    if (i >= n) {
        err_status_set(st, "%s: unterminated %s-quoted value", where,
                       quote == '"' ? "double" : "single");
        return -1;
    }
    if (i + 1 != n) {
        err_status_set(st, "%s: text after the closing quote", where);
        return -1;
    }
    return (long)o;
}

/* One scalar v[0..n) (blanks trimmed) set to `row`: quoted, or plain where ~, null and an
 * empty value are YAML's null (nothing set: the default stays). YAML's other kinds of value
 * are refused. */
static int args_scalar(ArgLines *p, ArgSpec *row, const char *v, size_t n, const char *where,
                       ErrStatus *st) {
    v = args_trim(v, &n);
    if (!n || (n == 1 && v[0] == '~') ||
        (n == 4 && (!memcmp(v, "null", 4) || !memcmp(v, "Null", 4) || !memcmp(v, "NULL", 4))))
        return 1;
    if (strchr("{[", v[0]))
        return err_status_set(st, "%s: nested %s are not supported (flat keys only)", where,
                              v[0] == '{' ? "mappings" : "lists");
    if (strchr("|>", v[0]))
        return err_status_set(st, "%s: block scalars (| and >) are not supported", where);
    if (strchr("&*!", v[0]))
        return err_status_set(st, "%s: YAML anchors, aliases and tags are not supported", where);
    if (v[0] != '"' && v[0] != '\'')
        return args_config_give(p->specs, p->nspecs, p->c, row, v, n, where, st);
    char *buf = malloc(n);
    SL_CHECK(buf, "out of memory");
    const long len = args_unquote(v, n, buf, where, st);
    const int ok =
        len >= 0 && args_config_give(p->specs, p->nspecs, p->c, row, buf, (size_t)len, where, st);
    free(buf);
    return ok;
}

/* `[a, "b", c]`: each item (commas outside quotes) set to `row`. */
static int args_flow_list(ArgLines *p, ArgSpec *row, const char *v, size_t n, const char *where,
                          ErrStatus *st) {
    if (n < 2 || v[n - 1] != ']')
        return err_status_set(st, "%s: a list opened with [ must close with ] on its line", where);
    if (!args_config_list_ok(p->specs, p->nspecs, row, where, st)) return 0;
    size_t start = 1;
    char q = 0;
    for (size_t i = 1; i < n; i++) {
        const char ch = v[i];
        if ((q == '"' && ch == '\\') ||
            (q == '\'' && ch == '\'' && i + 1 < n && v[i + 1] == '\'')) {
            i++;
        } else if (q) {
            if (ch == q) q = 0;
        } else if ((ch == '"' || ch == '\'') && args_quote_starts(v, i)) {
            q = ch;
        } else if (ch == ',' || i == n - 1) {
            if (!args_scalar(p, row, v + start, i - start, where, st)) return 0;
            start = i + 1;
        }
    }
    if (q) return err_status_set(st, "%s: unterminated quoted value in the list", where);
    return 1;
}

/* `key: value` or `key = value`. */
static int args_key_line(ArgLines *p, const char *l, size_t n, size_t indent, const char *where,
                         ErrStatus *st) {
    const char *eq = memchr(l, '=', n), *colon = memchr(l, ':', n);
    const char *sep = !eq || (colon && colon < eq) ? colon : eq;
    if (!sep) return err_status_set(st, "%s: expected 'key: value' or 'key = value'", where);
    /* YAML nests by indenting; `key = value` lines may be indented as they like */
    if (indent > 0 && p->open && p->open_items == 0)
        return err_status_set(st,
                              "%s: nested mappings are not supported (under '%s'; flat keys "
                              "only)",
                              where, p->open->name);
    if (indent > 0 && sep == colon)
        return err_status_set(st, "%s: an indented key (nested mappings are not supported)", where);
    p->open = NULL;
    size_t kn = (size_t)(sep - l), vn = n - kn - 1;
    const char *k = args_trim(l, &kn), *v = args_trim(sep + 1, &vn);
    if (kn >= 2 && (k[0] == '"' || k[0] == '\'') && k[kn - 1] == k[0]) k++, kn -= 2;
    char key[ARGS_NAME_MAX];
    if (!kn || kn >= sizeof key) return err_status_set(st, "%s: bad key", where);
    memcpy(key, k, kn);
    key[kn] = 0;
    ArgSpec *row;
    if (!args_config_row(p->specs, p->nspecs, key, where, &row, st)) return 0;
    p->any_key = 1;
    if (!vn) {
        p->open = row;
        p->open_items = 0;
        return 1;
    }
    if (v[0] == '[') return args_flow_list(p, row, v, vn, where, st);
    return args_scalar(p, row, v, vn, where, st);
}

/* `- item` under a key with no value of its own: a YAML block list. */
static int args_item_line(ArgLines *p, const char *l, size_t n, const char *where, ErrStatus *st) {
    if (!p->open) return err_status_set(st, "%s: a list item with no key above it", where);
    if (!p->open_items && !args_config_list_ok(p->specs, p->nspecs, p->open, where, st)) return 0;
    p->open_items++;
    size_t in = n - 1;
    const char *item = args_trim(l + 1, &in);
    const char *colon = in && item[0] != '"' && item[0] != '\'' ? memchr(item, ':', in) : NULL;
    if (colon && (colon == item + in - 1 || isspace((unsigned char)colon[1])))
        return err_status_set(st, "%s: nested mappings are not supported (flat keys only)", where);
    if (in && item[0] == '-')
        return err_status_set(st, "%s: nested lists are not supported (flat keys only)", where);
    return args_scalar(p, p->open, item, in, where, st);
}

static int args_config_lines(ArgSpec *specs, int nspecs, ArgConfig *c, const char *text,
                             ErrStatus *st) {
    ArgLines p = {specs, nspecs, c, NULL, 0, 0};
    int lineno = 0;
    for (const char *q = text; *q;) {
        const char *e = strchr(q, '\n');
        size_t n = e ? (size_t)(e - q) : strlen(q);
        const char *l = q;
        q += n + (e ? 1 : 0);
        lineno++;
        char where[600];
        snprintf(where, sizeof where, "%s:%d", c->path, lineno);
        n = args_uncomment(l, n);
        size_t indent = 0;
        while (indent < n && (l[indent] == ' ' || l[indent] == '\t'))
            indent++;
        size_t ln = n - indent;
        const char *t = args_trim(l + indent, &ln);
        if (!ln || (ln == 3 && memcmp(t, "---", 3) == 0 && !p.any_key)) continue;
        const int ok = t[0] == '-' && (ln == 1 || isspace((unsigned char)t[1]))
                           ? args_item_line(&p, t, ln, where, st)
                           : args_key_line(&p, t, ln, indent, where, st);
        if (!ok) return 0;
    }
    return 1;
}

/* Reads the config file named by the last --config in argv, if any: a JSON object when its
 * first character is '{', else lines of a flat YAML mapping -- `key: value` with plain,
 * 'single'- or "double"-quoted scalars (~, null or nothing: leave the default), `# comments`,
 * lists as `[a, b]` or `- item` lines under the key, a leading `---` -- or `key = value`
 * lines (the same values). Nested mappings, anchors, tags and block scalars are refused with
 * file:line. */
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
    /* a FIFO or directory is refused without blocking; a config is a few kB */
    ErrStatus why;
    size_t len = 0;
    char *text = afile_read_input(c->path, (size_t)16 << 20, &len, &why);
    if (!text) return err_status_set(st, "--%s %s", cs->name, why.msg);
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

/* ---------------------------------------------------------------- the command line */

/* argv[*i] (with argv[*i + 1] when it takes the value); *i left at the last one used. */
static int args_flag(ArgSpec *specs, int nspecs, int argc, char **argv, int *i, ErrStatus *st) {
    const char *a = argv[*i];
    if (strncmp(a, "--", 2) != 0)
        return err_status_set(st, "unexpected argument '%s' (options start with --)", a);
    const char *eq = strchr(a + 2, '=');
    const size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
    char name[ARGS_NAME_MAX];
    if (!args_dashed(a + 2, len, name)) return err_status_set(st, "option too long: %s", a);
    ArgSpec *row = args_row(specs, nspecs, name);
    const char *v = eq ? eq + 1 : NULL;
    if (!row && strncmp(name, "no-", 3) == 0 && !eq) {
        row = args_row(specs, nspecs, name + 3);
        if (row && !args_is_flag(specs, nspecs, row)) row = NULL;
        v = "0";
    }
    if (!row) {
        char hint[3 * ARGS_NAME_MAX];
        args_suggest(specs, nspecs, name, "--", memchr(a + 2, '_', len) != NULL, hint, sizeof hint);
        return err_status_set(st, "unknown option --%.*s%s", (int)len, a + 2,
                              hint[0] ? hint : " (see --help)");
    }
    if (row->type == ARG_CONFIG) {
        if (!eq) (*i)++; /* read before the flags */
        return 1;
    }
    if (!v && args_is_flag(specs, nspecs, row)) v = "1";
    if (!v) {
        if (*i + 1 >= argc) return err_status_set(st, "--%s needs a value", name);
        v = argv[++*i];
    }
    return args_give(specs, nspecs, row, v, ARG_FROM_FLAG, "--", st);
}

int args_parse(ArgSpec *specs, int nspecs, int argc, char **argv, int first, int *help,
               ErrStatus *st) {
    args_check_table(specs, nspecs);
    err_status_ok(st);
    *help = 0;
    for (int i = first; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *help = 1;
            return 1;
        }
    if (!args_read_config(specs, nspecs, argc, argv, first, st)) return 0;
    for (int i = first; i < argc; i++)
        if (!args_flag(specs, nspecs, argc, argv, &i, st)) return 0;
    for (int i = 0; i < nspecs; i++)
        if (args_is_option(&specs[i]) && specs[i].required && !specs[i].seen)
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

/* ---------------------------------------------------------------- printing */

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
    case ARG_GROUP:
    case ARG_ALIAS:
        break;
    }
    return json_null();
}

json_t *args_to_json(const ArgSpec *specs, int nspecs) {
    json_t *o = json_object();
    for (int i = 0; i < nspecs; i++)
        if (args_is_option(&specs[i]))
            json_object_set_new(o, specs[i].name, args_value_json(&specs[i]));
    return o;
}

void args_print_resolved(FILE *f, const ArgSpec *specs, int nspecs) {
    static const char *from[] = {"default", "config", "flag"};
    for (int i = 0; i < nspecs; i++) {
        if (!args_is_option(&specs[i])) continue;
        json_t *v = args_value_json(&specs[i]);
        char *txt = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        if (txt) str_json_shorten(txt);
        fprintf(f, "  %-27s = %-40s (%s)\n", specs[i].name, txt ? txt : "?", from[specs[i].seen]);
        free(txt);
        json_decref(v);
    }
}

/* " [default: X]", " (required)" or " (repeatable)" for option s. */
static void args_default(const ArgSpec *s, char *def, size_t n) {
    char num[64];
    def[0] = 0;
    if (s->required) {
        snprintf(def, n, " (required)");
        return;
    }
    switch (s->type) {
    case ARG_STR:
        if (*(const char **)s->dst) snprintf(def, n, " [default: %s]", *(const char **)s->dst);
        break;
    case ARG_INT:
        snprintf(def, n, " [default: %lld]", (long long)*(int64_t *)s->dst);
        break;
    case ARG_U64:
        snprintf(def, n, " [default: %llu]", (unsigned long long)*(uint64_t *)s->dst);
        break;
    case ARG_FLOAT: {
        /* %g when it is exact (30, not 3e+01), else the shortest exact form */
        const double x = *(double *)s->dst;
        snprintf(num, sizeof num, "%g", x);
        if (strtod(num, NULL) != x) str_fmt_double(x, num, sizeof num);
        snprintf(def, n, " [default: %s]", num);
        break;
    }
    case ARG_BOOL:
        snprintf(def, n, " [default: %s]", *(int *)s->dst ? "on" : "off");
        break;
    case ARG_STRS:
        if (!strstr(s->help, "repeatable")) snprintf(def, n, " (repeatable)");
        break;
    case ARG_CONFIG:
    case ARG_GROUP:
    case ARG_ALIAS:
        break;
    }
}

/* " (also --learning-rate)" / " (also --use-dora = --adapter dora)": s's aliases. */
static void args_aliases(const ArgSpec *specs, int nspecs, const ArgSpec *s, char *buf, size_t n) {
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < nspecs && off < n; i++) {
        const ArgSpec *a = &specs[i];
        if (a->type != ARG_ALIAS || strcmp(a->target, s->name) != 0) continue;
        off += (size_t)snprintf(buf + off, n - off, "%s--%s", off ? ", " : " (also ", a->name);
        if (a->value && off < n)
            off += (size_t)snprintf(buf + off, n - off, " = --%s %s", s->name, a->value);
    }
    if (off && off < n) snprintf(buf + off, n - off, ")");
}

static void args_print_option(FILE *f, const ArgSpec *specs, int nspecs, const ArgSpec *s) {
    char left[96], def[128], also[512];
    if (s->type == ARG_BOOL && strncmp(s->name, "no-", 3) != 0)
        snprintf(left, sizeof left, "--%s, --no-%s", s->name, s->name);
    else if (s->type == ARG_BOOL)
        snprintf(left, sizeof left, "--%s", s->name);
    else
        snprintf(left, sizeof left, "--%s %s%s", s->name, s->metavar ? s->metavar : "X",
                 s->type == ARG_STRS ? " ..." : "");
    args_default(s, def, sizeof def);
    args_aliases(specs, nspecs, s, also, sizeof also);
    fprintf(f, "  %-30s %s%s%s\n", left, s->help, def, also);
}

void args_print_help(FILE *f, const char *usage, const char *about, const ArgSpec *specs,
                     int nspecs) {
    static const char *const titles[ARGG_COUNT] = {"options",
                                                   "model and output",
                                                   "data and batches",
                                                   "adapter (LoRA)",
                                                   "optimisation",
                                                   "schedule",
                                                   "generation",
                                                   "checkpoints",
                                                   "parallelism",
                                                   "logging and evaluation",
                                                   "expert (tests and tuning)"};
    args_check_table(specs, nspecs);
    fprintf(f, "usage: %s\n\n%s\n", usage, about);
    int grouped = 0;
    for (int g = 0; g < ARGG_COUNT; g++) {
        ArgGroup cur = ARGG_NONE;
        int printed = 0;
        for (int i = 0; i < nspecs; i++) {
            if (specs[i].type == ARG_GROUP) cur = specs[i].group, grouped = 1;
            if (!args_is_option(&specs[i]) || cur != (ArgGroup)g) continue;
            if (!printed++) fprintf(f, "\n%s:\n", titles[g]);
            args_print_option(f, specs, nspecs, &specs[i]);
        }
    }
    fprintf(f, "%s  %-30s %s\n", grouped ? "\n" : "", "--help", "print this help and exit");
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
