/* The Jinja engine's builtins: the filters and tests of Jinja2 3.1 that chat templates use
 * (others are refused when the template is compiled), the str / dict / list methods the
 * immutable sandbox allows, and the globals range, dict, namespace, raise_exception and
 * strftime_now. Each follows its Python definition (Jinja2's filters.py / tests.py and
 * CPython's str methods); the comments name where the Python behaviour is not obvious. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "jinja_int.h"

#define JV_MISSING 255 /* an argument the call did not pass */

_Noreturn static void undefined_error(JCtx *c, const JVal *u) {
    jc_throw(c, JINJA_ERR_RUNTIME, "%.*s", (int)u->u.s.n, u->u.s.p);
}

/* ---- argument binding ------------------------------------------------------------------- */

/* Binds positional args and keywords to the parameters names[0..np) into out (missing ones
 * get t == JV_MISSING); a wrong call is Python's TypeError. */
static void bind(JCtx *c, const char *fname, const char *const *names, size_t np, JVal *args,
                 size_t nargs, JVal *kwv, JStr *kwn, size_t nkw, JVal *out) {
    if (nargs > np)
        jc_throw(c, JINJA_ERR_RUNTIME, "%s() takes at most %zu arguments (%zu given)", fname, np,
                 nargs);
    for (size_t i = 0; i < np; i++) {
        out[i].t = JV_MISSING;
        if (i < nargs) out[i] = args[i];
    }
    for (size_t k = 0; k < nkw; k++) {
        size_t i;
        for (i = 0; i < np; i++)
            if (strlen(names[i]) == kwn[k].n && memcmp(names[i], kwn[k].p, kwn[k].n) == 0) break;
        if (i == np)
            jc_throw(c, JINJA_ERR_RUNTIME, "%s() got an unexpected keyword argument '%.*s'", fname,
                     (int)(kwn[k].n > 60 ? 60 : kwn[k].n), kwn[k].p);
        if (out[i].t != JV_MISSING)
            jc_throw(c, JINJA_ERR_RUNTIME, "%s() got multiple values for argument '%s'", fname,
                     names[i]);
        out[i] = kwv[k];
    }
}

static int given(const JVal *v) {
    return v->t != JV_MISSING;
}
static int given_notnone(const JVal *v) {
    return v->t != JV_MISSING && v->t != JV_NONE;
}

static int64_t want_int(JCtx *c, const JVal *v, const char *what) {
    if (v->t == JV_INT) return v->u.i;
    if (v->t == JV_BOOL) return v->u.b;
    jc_throw(c, JINJA_ERR_RUNTIME, "%s: an integer is required, not '%s'", what, jv_typename(v));
}

static JStr want_str(JCtx *c, const JVal *v, const char *what) {
    if (v->t != JV_STR)
        jc_throw(c, JINJA_ERR_RUNTIME, "%s: must be str, not %s", what, jv_typename(v));
    return v->u.s;
}

static JVal mkfunc(JCtx *c, int kind, const char *name, const JVal *self) {
    JFunc *f = jc_alloc(c, sizeof *f);
    f->kind = kind;
    f->name = name;
    if (self) f->self = *self;
    JVal v = {0};
    v.t = JV_FUNC;
    v.u.fn = f;
    return v;
}

/* ---- strings ---------------------------------------------------------------------------- */

static int special_case(int32_t cp) {
    return cp == 0xDF || cp == 0x130 || cp == 0x149 || cp == 0x1F0 || cp == 0x390 || cp == 0x3A3 ||
           cp == 0x3B0 || cp == 0x587 || (cp >= 0x1E96 && cp <= 0x1E9A) ||
           (cp >= 0x1F50 && cp <= 0x1F56) || (cp >= 0x1F80 && cp <= 0x1FFF) ||
           (cp >= 0xFB00 && cp <= 0xFB06) || (cp >= 0xFB13 && cp <= 0xFB17);
}

static int is_cased(int32_t cp) {
    utf8proc_category_t k = utf8proc_category(cp);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT ||
           utf8proc_toupper(cp) != cp || utf8proc_tolower(cp) != cp;
}

enum { CASE_UPPER, CASE_LOWER, CASE_TITLE };

static int32_t map_case(JCtx *c, int32_t cp, int how) {
    if (cp < 0x80) {
        if (how == CASE_LOWER) return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
        return cp >= 'a' && cp <= 'z' ? cp - 32 : cp;
    }
    if (special_case(cp))
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: case mapping of U+%04X", (unsigned)cp);
    return how == CASE_UPPER   ? utf8proc_toupper(cp)
           : how == CASE_LOWER ? utf8proc_tolower(cp)
                               : utf8proc_totitle(cp);
}

/* mode: 0 upper, 1 lower, 2 capitalize (first title, rest lower), 3 Python's str.title,
 * 4 Jinja's title filter (each piece between separators: first upper, rest lower). */
static JVal str_case(JCtx *c, JStr s, int mode) {
    JBuf b = {0};
    int prev_cased = 0, at_word = 1;
    for (size_t i = 0; i < s.n;) {
        size_t adv;
        int32_t cp = ju_decode(s.p + i, s.n - i, &adv), m;
        char tmp[4];
        switch (mode) {
        case 0:
            m = map_case(c, cp, CASE_UPPER);
            break;
        case 1:
            m = map_case(c, cp, CASE_LOWER);
            break;
        case 2:
            m = map_case(c, cp, i == 0 ? CASE_TITLE : CASE_LOWER);
            break;
        case 3:
            m = map_case(c, cp, prev_cased ? CASE_LOWER : CASE_TITLE);
            prev_cased = is_cased(cp);
            break;
        default: {
            int sep =
                ju_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
            if (sep) {
                m = cp;
                at_word = 1;
            } else {
                m = map_case(c, cp, at_word ? CASE_UPPER : CASE_LOWER);
                at_word = 0;
            }
        }
        }
        jb_add(c, &b, tmp, ju_encode(m, tmp));
        i += adv;
    }
    return b.p ? jb_val(&b) : jv_strref("", 0);
}

static int in_chars(int32_t cp, const JStr *chars) {
    if (!chars) return ju_isspace(cp);
    for (size_t i = 0; i < chars->n;) {
        size_t adv;
        if (ju_decode(chars->p + i, chars->n - i, &adv) == cp) return 1;
        i += adv;
    }
    return 0;
}

/* strip (how 3), lstrip (1), rstrip (2) of chars (NULL: whitespace). */
static JStr str_strip(JStr s, const JStr *chars, int how) {
    size_t a = 0, b = s.n, adv;
    if (how & 1)
        while (a < b) {
            int32_t cp = ju_decode(s.p + a, b - a, &adv);
            if (!in_chars(cp, chars)) break;
            a += adv;
        }
    if (how & 2)
        while (b > a) {
            size_t k = b - 1;
            while (k > a && ((unsigned char)s.p[k] & 0xC0) == 0x80)
                k--;
            int32_t cp = ju_decode(s.p + k, b - k, &adv);
            if (!in_chars(cp, chars)) break;
            b = k;
        }
    JStr r = {s.p + a, b - a};
    return r;
}

static const char *find_bytes(JStr h, size_t from, JStr x) {
    if (x.n > h.n - from) return NULL;
    if (x.n == 0) return h.p + from;
    return memmem(h.p + from, h.n - from, x.p, x.n);
}

static JVal str_replace(JCtx *c, JStr s, JStr old, JStr new_, int64_t count) {
    JBuf b = {0};
    if (count < 0) count = INT64_MAX;
    if (old.n == 0) {
        /* Python inserts `new` before every character and at the end */
        size_t i = 0;
        int64_t k = 0;
        while (k < count) {
            jb_add(c, &b, new_.p, new_.n);
            k++;
            if (i >= s.n) break;
            size_t adv;
            ju_decode(s.p + i, s.n - i, &adv);
            jb_add(c, &b, s.p + i, adv);
            i += adv;
        }
        jb_add(c, &b, s.p + i, s.n - i);
        return b.p ? jb_val(&b) : jv_strref("", 0);
    }
    size_t i = 0;
    int64_t k = 0;
    while (k < count) {
        const char *f = find_bytes(s, i, old);
        if (!f) break;
        size_t at = (size_t)(f - s.p);
        jb_add(c, &b, s.p + i, at - i);
        jb_add(c, &b, new_.p, new_.n);
        i = at + old.n;
        k++;
    }
    jb_add(c, &b, s.p + i, s.n - i);
    return b.p ? jb_val(&b) : jv_strref("", 0);
}

/* str.split / rsplit (right = 1) with sep (NULL: runs of whitespace) and maxsplit. */
static JVal str_split(JCtx *c, JStr s, const JStr *sep, int64_t maxsplit, int right) {
    JList *l = jl_new(c, 0, JL_LIST);
    if (maxsplit < 0) maxsplit = INT64_MAX;
    if (sep && sep->n == 0) jc_throw(c, JINJA_ERR_RUNTIME, "empty separator");
    if (sep) {
        if (!right) {
            size_t i = 0;
            for (int64_t k = 0; k < maxsplit; k++) {
                const char *f = find_bytes(s, i, *sep);
                if (!f) break;
                jl_push(c, l, jv_strref(s.p + i, (size_t)(f - s.p) - i));
                i = (size_t)(f - s.p) + sep->n;
            }
            jl_push(c, l, jv_strref(s.p + i, s.n - i));
            return jv_list(l);
        }
        size_t end = s.n;
        JList *rev = jl_new(c, 0, JL_LIST);
        for (int64_t k = 0; k < maxsplit && end >= sep->n; k++) {
            size_t j = end - sep->n;
            for (;;) {
                if (memcmp(s.p + j, sep->p, sep->n) == 0) break;
                if (j == 0) {
                    j = SIZE_MAX;
                    break;
                }
                j--;
            }
            if (j == SIZE_MAX) break;
            jl_push(c, rev, jv_strref(s.p + j + sep->n, end - j - sep->n));
            end = j;
        }
        jl_push(c, l, jv_strref(s.p, end));
        for (size_t i = rev->n; i > 0; i--)
            jl_push(c, l, rev->v[i - 1]);
        return jv_list(l);
    }
    /* whitespace: the pieces between runs, the rest after maxsplit pieces kept whole (its
     * leading whitespace removed on the split side) */
    if (!right) {
        size_t i = 0, adv;
        int64_t k = 0;
        for (;;) {
            while (i < s.n && ju_isspace(ju_decode(s.p + i, s.n - i, &adv)))
                i += adv;
            if (i >= s.n) break;
            if (k == maxsplit) {
                jl_push(c, l, jv_strref(s.p + i, s.n - i));
                break;
            }
            size_t j = i;
            while (j < s.n && !ju_isspace(ju_decode(s.p + j, s.n - j, &adv)))
                j += adv;
            jl_push(c, l, jv_strref(s.p + i, j - i));
            k++;
            i = j;
        }
        return jv_list(l);
    }
    JList *rev = jl_new(c, 0, JL_LIST);
    size_t end = s.n;
    int64_t k = 0;
    for (;;) {
        JStr t = str_strip((JStr){s.p, end}, NULL, 2);
        end = t.n;
        if (end == 0) break;
        if (k == maxsplit) {
            jl_push(c, rev, jv_strref(s.p, end));
            break;
        }
        size_t j = end, adv;
        while (j > 0) {
            size_t q = j - 1;
            while (q > 0 && ((unsigned char)s.p[q] & 0xC0) == 0x80)
                q--;
            if (ju_isspace(ju_decode(s.p + q, j - q, &adv))) break;
            j = q;
        }
        jl_push(c, rev, jv_strref(s.p + j, end - j));
        k++;
        end = j;
    }
    for (size_t i = rev->n; i > 0; i--)
        jl_push(c, l, rev->v[i - 1]);
    return jv_list(l);
}

/* Python's str.splitlines() (the line boundaries of str, not only \n). */
static JList *str_splitlines(JCtx *c, JStr s) {
    JList *l = jl_new(c, 0, JL_LIST);
    size_t i = 0, start = 0, adv;
    while (i < s.n) {
        int32_t cp = ju_decode(s.p + i, s.n - i, &adv);
        int brk = cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C ||
                  cp == 0x1D || cp == 0x1E || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
        if (brk) {
            jl_push(c, l, jv_strref(s.p + start, i - start));
            i += adv;
            if (cp == '\r' && i < s.n && s.p[i] == '\n') i++;
            start = i;
        } else {
            i += adv;
        }
    }
    if (start < s.n) jl_push(c, l, jv_strref(s.p + start, s.n - start));
    return l;
}

/* ---- Python number parsing (int(), float()) --------------------------------------------- */

static int digit_of(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch = (char)(ch | 0x20);
    return ch >= 'a' && ch <= 'z' ? ch - 'a' + 10 : 99;
}

/* s without surrounding whitespace and with the underscores Python allows (one between two
 * digits of the base, or after a 0x / 0o / 0b prefix: base > 10 counts letters as digits)
 * removed into buf; 0 when an underscore is misplaced. Non-ASCII text (Python takes any
 * Unicode digit) and numbers longer than buf are refused. */
static int clean_number(JCtx *c, JStr s, int base, char *buf, size_t cap) {
    JStr t = str_strip(s, NULL, 3);
    if (t.n == 0) return 0;
    if (t.n + 1 > cap) jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: a number this long");
    size_t k = 0;
    for (size_t i = 0; i < t.n; i++) {
        char ch = t.p[i];
        if ((unsigned char)ch >= 0x80)
            jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: int() / float() of non-ASCII text");
        if (ch == '_') {
            int prev_prefix = i == 2 && base != 10 && t.p[0] == '0';
            int ok = i > 0 && i + 1 < t.n && digit_of(t.p[i + 1]) < base &&
                     (digit_of(t.p[i - 1]) < base || prev_prefix);
            if (!ok) return 0;
            continue;
        }
        buf[k++] = ch;
    }
    buf[k] = 0;
    return 1;
}

/* int(s, base) for base 10 / 16 / 8 / 2; 0 when invalid (ValueError); overflow refused. */
static int parse_int(JCtx *c, JStr s, int base, int64_t *out) {
    char buf[128];
    if (!clean_number(c, s, base, buf, sizeof buf)) return 0;
    const char *p = buf;
    int neg = 0;
    if (*p == '+' || *p == '-') neg = *p++ == '-';
    if (base == 16 && p[0] == '0' && (p[1] | 0x20) == 'x') p += 2;
    if (base == 8 && p[0] == '0' && (p[1] | 0x20) == 'o') p += 2;
    if (base == 2 && p[0] == '0' && (p[1] | 0x20) == 'b') p += 2;
    if (!*p) return 0;
    uint64_t v = 0;
    for (; *p; p++) {
        int d = *p >= '0' && *p <= '9'                     ? *p - '0'
                : (*p | 0x20) >= 'a' && (*p | 0x20) <= 'z' ? (*p | 0x20) - 'a' + 10
                                                           : 99;
        if (d >= base) return 0;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
            jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: integer overflow");
        v = v * (uint64_t)base + (uint64_t)d;
    }
    if (v > (uint64_t)INT64_MAX + (uint64_t)neg)
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: integer overflow");
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 1;
}

/* float(s): decimal / exponent forms, inf, infinity, nan (any case, signed). */
static int parse_float(JCtx *c, JStr s, double *out) {
    char buf[512];
    if (!clean_number(c, s, 10, buf, sizeof buf)) return 0;
    const char *p = buf;
    const char *q = p + (*p == '+' || *p == '-');
    if (!strcasecmp(q, "inf") || !strcasecmp(q, "infinity")) {
        *out = *p == '-' ? -INFINITY : INFINITY;
        return 1;
    }
    if (!strcasecmp(q, "nan")) {
        *out = NAN;
        return 1;
    }
    /* digits [. digits] [e [sign] digits], at least one digit in the mantissa */
    const char *r = q;
    int nd = 0;
    while (*r >= '0' && *r <= '9')
        r++, nd++;
    if (*r == '.') {
        r++;
        while (*r >= '0' && *r <= '9')
            r++, nd++;
    }
    if (!nd) return 0;
    if ((*r | 0x20) == 'e') {
        r++;
        if (*r == '+' || *r == '-') r++;
        if (!(*r >= '0' && *r <= '9')) return 0;
        while (*r >= '0' && *r <= '9')
            r++;
    }
    if (*r) return 0;
    *out = strtod(buf, NULL);
    return 1;
}

/* ---- attribute getter (Jinja's make_attrgetter: dotted, item lookup first) -------------- */

static JVal attr_get(JCtx *c, JVal item, JStr attr, const JVal *deflt) {
    size_t i = 0;
    while (i <= attr.n) {
        size_t j = i;
        while (j < attr.n && attr.p[j] != '.')
            j++;
        JStr part = {attr.p + i, j - i};
        int digits = part.n > 0;
        for (size_t k = 0; k < part.n; k++)
            digits &= part.p[k] >= '0' && part.p[k] <= '9';
        JVal key;
        int64_t iv;
        if (digits && parse_int(c, part, 10, &iv))
            key = jv_int(iv);
        else
            key = jv_strref(part.p, part.n);
        item = je_getitem(c, &item, &key);
        if (item.t == JV_UNDEF && deflt && given_notnone(deflt)) return *deflt;
        i = j + 1;
    }
    return item;
}

/* ---- filters ---------------------------------------------------------------------------- */

typedef enum {
    F_ABS,
    F_BATCH,
    F_CAPITALIZE,
    F_COUNT,
    F_D,
    F_DEFAULT,
    F_DICTSORT,
    F_E,
    F_ESCAPE,
    F_FIRST,
    F_FLOAT,
    F_INDENT,
    F_INT,
    F_ITEMS,
    F_JOIN,
    F_LAST,
    F_LENGTH,
    F_LIST,
    F_LOWER,
    F_MAP,
    F_REJECT,
    F_REJECTATTR,
    F_REPLACE,
    F_REVERSE,
    F_ROUND,
    F_SAFE,
    F_SELECT,
    F_SELECTATTR,
    F_SORT,
    F_STRING,
    F_SUM,
    F_TITLE,
    F_TOJSON,
    F_TRIM,
    F_UNIQUE,
    F_UPPER,
    F_NFILTERS
} FilterId;

static const char *const filter_names[F_NFILTERS] = {
    "abs",    "batch", "capitalize", "count",      "d",      "default",    "dictsort", "e",
    "escape", "first", "float",      "indent",     "int",    "items",      "join",     "last",
    "length", "list",  "lower",      "map",        "reject", "rejectattr", "replace",  "reverse",
    "round",  "safe",  "select",     "selectattr", "sort",   "string",     "sum",      "title",
    "tojson", "trim",  "unique",     "upper"};

static const char *const filter_unimplemented[] = {
    "attr",   "center",    "filesizeformat", "forceescape", "format",    "groupby",  "max",
    "min",    "pprint",    "random",         "slice",       "striptags", "truncate", "urlencode",
    "urlize", "wordcount", "wordwrap",       "xmlattr",     NULL};

static int name_eq(const char *a, const char *s, size_t n) {
    return strlen(a) == n && memcmp(a, s, n) == 0;
}

int jb_filter_id(const char *name, size_t n) {
    for (int i = 0; i < F_NFILTERS; i++)
        if (name_eq(filter_names[i], name, n)) return i;
    for (int i = 0; filter_unimplemented[i]; i++)
        if (name_eq(filter_unimplemented[i], name, n)) return -2;
    return -1;
}

static JVal html_escape(JCtx *c, JVal v) {
    if (v.t == JV_STR && v.unsafe) return v;
    JVal s = jv_to_str(c, &v);
    JBuf b = {0};
    for (size_t i = 0; i < s.u.s.n; i++) {
        char ch = s.u.s.p[i];
        switch (ch) {
        case '&':
            jb_adds(c, &b, "&amp;");
            break;
        case '<':
            jb_adds(c, &b, "&lt;");
            break;
        case '>':
            jb_adds(c, &b, "&gt;");
            break;
        case '"':
            jb_adds(c, &b, "&#34;");
            break;
        case '\'':
            jb_adds(c, &b, "&#39;");
            break;
        default:
            jb_addc(c, &b, ch);
        }
    }
    JVal r = b.p ? jb_val(&b) : jv_strref("", 0);
    r.unsafe = 1;
    return r;
}

static JVal f_tojson(JCtx *c, JVal in, JVal *a) {
    /* transformers' lambda x, ensure_ascii=False, indent=None, separators=None,
     * sort_keys=False: json.dumps(...) */
    int ensure_ascii = given(&a[0]) && jv_truthy(&a[0]);
    JStr ind, *indent = NULL;
    char spaces[256];
    if (given_notnone(&a[1])) {
        if (a[1].t == JV_STR) {
            ind = a[1].u.s;
        } else {
            int64_t k = want_int(c, &a[1], "indent");
            if (k < 0) k = 0;
            if (k > 255) jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: indent above 255");
            memset(spaces, ' ', (size_t)k);
            ind.p = jv_str(c, spaces, (size_t)k).u.s.p;
            ind.n = (size_t)k;
        }
        indent = &ind;
    }
    JStr item_sep = {indent ? "," : ", ", indent ? 1 : 2}, key_sep = {": ", 2};
    if (given_notnone(&a[2])) {
        if (a[2].t != JV_LIST || a[2].u.l->kind > JL_TUPLE || a[2].u.l->n != 2 ||
            a[2].u.l->v[0].t != JV_STR || a[2].u.l->v[1].t != JV_STR)
            jc_throw(c, JINJA_ERR_UNSUPPORTED,
                     "unsupported: tojson separators other than two "
                     "strings");
        item_sep = a[2].u.l->v[0].u.s;
        key_sep = a[2].u.l->v[1].u.s;
    }
    int sort_keys = given(&a[3]) && jv_truthy(&a[3]);
    JBuf b = {0};
    jv_write_json(c, &b, &in, ensure_ascii, indent, item_sep, key_sep, sort_keys, 0);
    return jb_val(&b);
}

static JVal f_indent(JCtx *c, JVal in, JVal *a) {
    JStr ind;
    char spaces[256];
    if (given(&a[0]) && a[0].t == JV_STR) {
        ind = a[0].u.s;
    } else {
        int64_t w = given(&a[0]) ? want_int(c, &a[0], "indent") : 4;
        if (w < 0) w = 0;
        if (w > 255) jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: indent above 255");
        memset(spaces, ' ', (size_t)w);
        ind.p = jv_str(c, spaces, (size_t)w).u.s.p;
        ind.n = (size_t)w;
    }
    int first = given(&a[1]) && jv_truthy(&a[1]), blank = given(&a[2]) && jv_truthy(&a[2]);
    JVal s = jv_to_str(c, &in);
    /* Jinja2 3.1: s += "\n", then split with str.splitlines() */
    JBuf t = {0};
    jb_add(c, &t, s.u.s.p, s.u.s.n);
    jb_addc(c, &t, '\n');
    JList *lines = str_splitlines(c, t.p ? (JStr){t.p, t.n} : (JStr){"", 0});
    JBuf b = {0};
    if (first) jb_add(c, &b, ind.p, ind.n);
    for (size_t i = 0; i < lines->n; i++) {
        JStr ln = lines->v[i].u.s;
        if (i > 0) {
            jb_addc(c, &b, '\n');
            if (blank || ln.n) jb_add(c, &b, ind.p, ind.n);
        }
        jb_add(c, &b, ln.p, ln.n);
    }
    return b.p ? jb_val(&b) : jv_strref("", 0);
}

static JVal f_round(JCtx *c, JVal in, JVal *a) {
    int64_t prec = given(&a[0]) ? want_int(c, &a[0], "round") : 0;
    const char *method = "common";
    if (given(&a[1])) {
        JStr m = want_str(c, &a[1], "round");
        method = name_eq("common", m.p, m.n)  ? "common"
                 : name_eq("ceil", m.p, m.n)  ? "ceil"
                 : name_eq("floor", m.p, m.n) ? "floor"
                                              : NULL;
        if (!method) jc_throw(c, JINJA_ERR_RUNTIME, "method must be common, ceil or floor");
    }
    if (in.t != JV_INT && in.t != JV_BOOL && in.t != JV_FLOAT)
        jc_throw(c, JINJA_ERR_RUNTIME, "type %s doesn't define __round__ method", jv_typename(&in));
    if (prec < 0 || prec > 22)
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: round precision %lld", (long long)prec);
    if (method[0] == 'c' && method[1] == 'o') {
        if (in.t != JV_FLOAT) return jv_int(in.t == JV_BOOL ? in.u.b : in.u.i);
        if (!isfinite(in.u.f)) return in;
        /* printf rounds the exact binary value half-to-even, as Python's round does */
        char buf[400];
        if (fabs(in.u.f) >= 1e300) return in;
        snprintf(buf, sizeof buf, "%.*f", (int)prec, in.u.f);
        return jv_float(strtod(buf, NULL));
    }
    double x = in.t == JV_FLOAT ? in.u.f : (double)(in.t == JV_BOOL ? in.u.b : in.u.i);
    double p10 = pow(10.0, (double)prec);
    double y = x * p10;
    if (!isfinite(y)) jc_throw(c, JINJA_ERR_RUNTIME, "cannot convert float infinity to integer");
    y = method[0] == 'c' ? ceil(y) : floor(y);
    return jv_float(y / p10);
}

static JVal f_int(JCtx *c, JVal in, JVal *a) {
    JVal deflt = given(&a[0]) ? a[0] : jv_int(0);
    int64_t base = given(&a[1]) ? want_int(c, &a[1], "int") : 10;
    int64_t r;
    double f;
    if (in.t == JV_STR) {
        if (base != 10 && base != 16 && base != 8 && base != 2)
            jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: int base %lld", (long long)base);
        if (parse_int(c, in.u.s, (int)base, &r)) return jv_int(r);
        if (!parse_float(c, in.u.s, &f)) return deflt;
    } else if (in.t == JV_INT || in.t == JV_BOOL) {
        return jv_int(in.t == JV_INT ? in.u.i : in.u.b);
    } else if (in.t == JV_FLOAT) {
        f = in.u.f;
    } else {
        return deflt;
    }
    if (isnan(f)) return deflt;
    if (isinf(f)) jc_throw(c, JINJA_ERR_RUNTIME, "cannot convert float infinity to integer");
    if (f >= 9223372036854775808.0 || f < -9223372036854775808.0)
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: integer overflow");
    return jv_int((int64_t)f);
}

static JVal f_float(JCtx *c, JVal in, JVal *a) {
    (void)c;
    JVal deflt = given(&a[0]) ? a[0] : jv_float(0.0);
    double f;
    switch (in.t) {
    case JV_FLOAT:
        return in;
    case JV_INT:
        return jv_float((double)in.u.i);
    case JV_BOOL:
        return jv_float(in.u.b);
    case JV_STR:
        return parse_float(c, in.u.s, &f) ? jv_float(f) : deflt;
    default:
        return deflt;
    }
}

/* Jinja's ignore_case: strings lowered for comparison. */
static JVal sort_key(JCtx *c, JVal v, int case_sensitive) {
    if (!case_sensitive && v.t == JV_STR) return str_case(c, v.u.s, 1);
    return v;
}

/* Stable merge sort of idx[0..n) by keys (Python's sorted is stable). */
static void msort(JCtx *c, size_t *idx, size_t *tmp, size_t n, const JVal *keys, int reverse) {
    if (n < 2) return;
    size_t h = n / 2;
    msort(c, idx, tmp, h, keys, reverse);
    msort(c, idx + h, tmp, n - h, keys, reverse);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int r = jv_cmp(c, &keys[idx[j]], &keys[idx[i]]);
        /* take the right one first only when strictly before (reverse keeps stability as
         * Python's reverse=True does: equal items keep their order) */
        int take_right = reverse ? r > 0 : r < 0;
        tmp[k++] = take_right ? idx[j++] : idx[i++];
    }
    while (i < h)
        tmp[k++] = idx[i++];
    while (j < n)
        tmp[k++] = idx[j++];
    memcpy(idx, tmp, n * sizeof *idx);
}

static JList *sorted_by(JCtx *c, JList *items, const JVal *keys, int reverse) {
    size_t n = items->n;
    size_t *idx = jc_alloc(c, (n + 1) * sizeof *idx), *tmp = jc_alloc(c, (n + 1) * sizeof *tmp);
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    msort(c, idx, tmp, n, keys, reverse);
    JList *r = jl_new(c, n, JL_LIST);
    for (size_t i = 0; i < n; i++)
        jl_push(c, r, items->v[idx[i]]);
    return r;
}

/* Jinja 3.1's sort key (make_multi_attrgetter): a list of the attributes named by the
 * comma-separated `attribute` (the item itself without one), lowered unless case_sensitive;
 * lists compare element by element with == first, as Python's sorted compares them. */
static JVal f_sort(JCtx *c, JVal in, JVal *a) {
    if (given(&a[0]) && a[0].t != JV_BOOL && a[0].t != JV_INT)
        jc_throw(c, JINJA_ERR_RUNTIME, "'%s' object cannot be interpreted as an integer",
                 jv_typename(&a[0]));
    int reverse = given(&a[0]) && jv_truthy(&a[0]);
    int cs = given(&a[1]) && jv_truthy(&a[1]);
    JStr attr = {0};
    if (given_notnone(&a[2])) {
        if (a[2].t != JV_STR)
            jc_throw(c, JINJA_ERR_UNSUPPORTED,
                     "unsupported: a sort attribute that is not a string");
        attr = a[2].u.s;
    }
    JList *items = jv_iterate(c, &in);
    JVal *keys = jc_alloc(c, (items->n + 1) * sizeof *keys);
    for (size_t i = 0; i < items->n; i++) {
        JList *k = jl_new(c, 1, JL_LIST);
        if (!given_notnone(&a[2])) {
            jl_push(c, k, sort_key(c, items->v[i], cs));
        } else {
            size_t p = 0;
            while (p <= attr.n) {
                size_t q = p;
                while (q < attr.n && attr.p[q] != ',')
                    q++;
                JStr part = {attr.p + p, q - p};
                jl_push(c, k, sort_key(c, attr_get(c, items->v[i], part, NULL), cs));
                p = q + 1;
            }
        }
        keys[i] = jv_list(k);
    }
    return jv_list(sorted_by(c, items, keys, reverse));
}

static JVal f_dictsort(JCtx *c, JVal in, JVal *a) {
    if (in.t != JV_DICT)
        jc_throw(c, JINJA_ERR_RUNTIME, "'%s' object has no attribute 'items'", jv_typename(&in));
    int cs = given(&a[0]) && jv_truthy(&a[0]);
    int pos = 0;
    if (given(&a[1])) {
        JStr by = want_str(c, &a[1], "dictsort");
        if (name_eq("value", by.p, by.n))
            pos = 1;
        else if (!name_eq("key", by.p, by.n))
            jc_throw(c, JINJA_ERR_RUNTIME, "You can only sort by either \"key\" or \"value\"");
    }
    int reverse = given(&a[2]) && jv_truthy(&a[2]);
    JList *items = jl_new(c, in.u.d->n, JL_LIST);
    JVal *keys = jc_alloc(c, (in.u.d->n + 1) * sizeof *keys);
    for (size_t i = 0; i < in.u.d->n; i++) {
        JList *t = jl_new(c, 2, JL_TUPLE);
        jl_push(c, t, in.u.d->k[i]);
        jl_push(c, t, in.u.d->v[i]);
        jl_push(c, items, jv_list(t));
        keys[i] = sort_key(c, pos ? in.u.d->v[i] : in.u.d->k[i], cs);
    }
    return jv_list(sorted_by(c, items, keys, reverse));
}

static JVal f_unique(JCtx *c, JVal in, JVal *a) {
    int cs = given(&a[0]) && jv_truthy(&a[0]);
    JList *items = jv_iterate(c, &in), *out = jl_new(c, 0, JL_GEN), *seen = jl_new(c, 0, JL_LIST);
    for (size_t i = 0; i < items->n; i++) {
        JVal k = items->v[i];
        if (given_notnone(&a[1])) k = attr_get(c, k, want_str(c, &a[1], "unique"), NULL);
        k = sort_key(c, k, cs);
        if (!jv_hashable(c, &k))
            jc_throw(c, JINJA_ERR_RUNTIME, "unhashable type: '%s'", jv_typename(&k));
        int dup = 0;
        jc_work(c, seen->n * JC_ELEM);
        for (size_t j = 0; j < seen->n && !dup; j++)
            dup = jv_eq(c, &seen->v[j], &k);
        if (dup) continue;
        jl_push(c, seen, k);
        jl_push(c, out, items->v[i]);
    }
    return jv_list(out);
}

/* select / reject / selectattr / rejectattr: Jinja's select_or_reject. */
/* The generator filters check their arguments lazily in Jinja: only when there is an item
 * (an empty input never looks up the test or filter). */
static JVal f_select(JCtx *c, JVal in, JVal *args, size_t nargs, int attr, int want) {
    JList *items = jv_iterate(c, &in), *out = jl_new(c, 0, JL_GEN);
    if (items->n == 0) return jv_list(out);
    if (attr && nargs == 0) jc_throw(c, JINJA_ERR_RUNTIME, "Missing parameter for attribute name");
    size_t k = attr ? 1 : 0;
    int tid = -1;
    if (nargs > k) {
        JStr tn = want_str(c, &args[k], "select");
        tid = jb_test_id(tn.p, tn.n);
        if (tid == -2)
            jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: test '%.*s'", (int)tn.n, tn.p);
        if (tid < 0) jc_throw(c, JINJA_ERR_RUNTIME, "No test named '%.*s'", (int)tn.n, tn.p);
    }
    for (size_t i = 0; i < items->n; i++) {
        JVal v = items->v[i];
        if (attr) v = attr_get(c, v, want_str(c, &args[0], "selectattr"), NULL);
        int t = tid >= 0 ? jb_test(c, tid, &v, args + k + 1, nargs - k - 1) : jv_truthy(&v);
        if (t == want) jl_push(c, out, items->v[i]);
    }
    return jv_list(out);
}

static JVal f_map(JCtx *c, JVal in, JVal *args, size_t nargs, JVal *kwv, JStr *kwn, size_t nkw) {
    JList *items = jv_iterate(c, &in), *out = jl_new(c, items->n, JL_GEN);
    if (items->n == 0) return jv_list(out);
    if (nargs == 0) {
        JVal attr = {0}, deflt = {0};
        attr.t = deflt.t = JV_MISSING;
        for (size_t k = 0; k < nkw; k++) {
            if (name_eq("attribute", kwn[k].p, kwn[k].n))
                attr = kwv[k];
            else if (name_eq("default", kwn[k].p, kwn[k].n))
                deflt = kwv[k];
            else
                jc_throw(c, JINJA_ERR_RUNTIME, "Unexpected keyword argument '%.*s'", (int)kwn[k].n,
                         kwn[k].p);
        }
        if (!given(&attr)) jc_throw(c, JINJA_ERR_RUNTIME, "map requires a filter argument");
        JStr an = want_str(c, &attr, "map");
        for (size_t i = 0; i < items->n; i++)
            jl_push(c, out, attr_get(c, items->v[i], an, &deflt));
        return jv_list(out);
    }
    JStr fn = want_str(c, &args[0], "map");
    int fid = jb_filter_id(fn.p, fn.n);
    if (fid == -2)
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: filter '%.*s'", (int)fn.n, fn.p);
    if (fid < 0) jc_throw(c, JINJA_ERR_RUNTIME, "No filter named '%.*s'", (int)fn.n, fn.p);
    for (size_t i = 0; i < items->n; i++)
        jl_push(c, out, jb_filter(c, fid, items->v[i], args + 1, nargs - 1, kwv, kwn, nkw));
    return jv_list(out);
}

static JVal f_first_last(JCtx *c, JVal in, int last) {
    if (in.t == JV_LIST && in.u.l->kind == JL_GEN) {
        if (last) jc_throw(c, JINJA_ERR_RUNTIME, "'generator' object is not reversible");
        JList *l = in.u.l;
        if (l->pos < l->n) return l->v[l->pos++];
        return jv_undef("No first item, sequence was empty.");
    }
    JList *items = jv_iterate(c, &in);
    if (items->n == 0)
        return jv_undef(last ? "No last item, sequence was empty."
                             : "No first item, sequence was empty.");
    return items->v[last ? items->n - 1 : 0];
}

static JVal f_reverse(JCtx *c, JVal in) {
    if (in.t == JV_STR) {
        JBuf b = {0};
        size_t i = in.u.s.n;
        while (i > 0) {
            size_t k = i - 1;
            while (k > 0 && ((unsigned char)in.u.s.p[k] & 0xC0) == 0x80)
                k--;
            jb_add(c, &b, in.u.s.p + k, i - k);
            i = k;
        }
        return b.p ? jb_val(&b) : jv_strref("", 0);
    }
    int gen = in.t == JV_LIST && in.u.l->kind == JL_GEN;
    JList *items = jv_iterate(c, &in), *r = jl_new(c, items->n, gen ? JL_LIST : JL_GEN);
    for (size_t i = items->n; i > 0; i--)
        jl_push(c, r, items->v[i - 1]);
    return jv_list(r);
}

static JVal f_join(JCtx *c, JVal in, JVal *a) {
    JVal sep = given(&a[0]) ? jv_to_str(c, &a[0]) : jv_strref("", 0);
    JList *items = jv_iterate(c, &in);
    JBuf b = {0};
    for (size_t i = 0; i < items->n; i++) {
        JVal v = items->v[i];
        if (given_notnone(&a[1])) v = attr_get(c, v, want_str(c, &a[1], "join"), NULL);
        if (i) jb_add(c, &b, sep.u.s.p, sep.u.s.n);
        jv_write_str(c, &b, &v);
    }
    return b.p ? jb_val(&b) : jv_strref("", 0);
}

static JVal f_batch(JCtx *c, JVal in, JVal *a) {
    JList *items = jv_iterate(c, &in), *out = jl_new(c, 0, JL_GEN), *cur = NULL;
    if (items->n == 0) return jv_list(out);
    int64_t n = given(&a[0]) ? want_int(c, &a[0], "batch") : 0;
    if (n <= 0) jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: batch of %lld", (long long)n);
    for (size_t i = 0; i < items->n; i++) {
        if (!cur) cur = jl_new(c, 0, JL_LIST);
        jl_push(c, cur, items->v[i]);
        if ((int64_t)cur->n == n) {
            jl_push(c, out, jv_list(cur));
            cur = NULL;
        }
    }
    if (cur) {
        if (given_notnone(&a[1]))
            while ((int64_t)cur->n < n)
                jl_push(c, cur, a[1]);
        jl_push(c, out, jv_list(cur));
    }
    return jv_list(out);
}

static JVal f_sum(JCtx *c, JVal in, JVal *a) {
    JVal acc = given(&a[1]) ? a[1] : jv_int(0);
    JList *items = jv_iterate(c, &in);
    for (size_t i = 0; i < items->n; i++) {
        JVal v = items->v[i];
        if (given_notnone(&a[0])) v = attr_get(c, v, want_str(c, &a[0], "sum"), NULL);
        acc = jv_binop(c, JOP_ADD, &acc, &v);
    }
    return acc;
}

static JVal f_items(JCtx *c, JVal in) {
    JList *out = jl_new(c, 0, JL_GEN);
    if (in.t == JV_UNDEF) return jv_list(out);
    if (in.t != JV_DICT) jc_throw(c, JINJA_ERR_RUNTIME, "Can only get item pairs from a mapping.");
    for (size_t i = 0; i < in.u.d->n; i++) {
        JList *t = jl_new(c, 2, JL_TUPLE);
        jl_push(c, t, in.u.d->k[i]);
        jl_push(c, t, in.u.d->v[i]);
        jl_push(c, out, jv_list(t));
    }
    return jv_list(out);
}

JVal jb_filter(JCtx *c, int fid, JVal in, JVal *args, size_t nargs, JVal *kwv, JStr *kwn,
               size_t nkw) {
    JVal a[4];
    const char *fname = fid >= 0 && fid < F_NFILTERS ? filter_names[fid] : "?";
    if (in.t == JV_STR && in.unsafe && fid != F_SAFE && fid != F_E && fid != F_ESCAPE &&
        fid != F_LENGTH && fid != F_COUNT && fid != F_DEFAULT && fid != F_D && fid != F_TOJSON)
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: filter '%s' of a |safe or |e string",
                 fname);
#define BIND(...)                                                                                  \
    do {                                                                                           \
        static const char *const nm[] = {__VA_ARGS__};                                             \
        bind(c, fname, nm, sizeof nm / sizeof *nm, args, nargs, kwv, kwn, nkw, a);                 \
    } while (0)
#define NOARGS() bind(c, fname, NULL, 0, args, nargs, kwv, kwn, nkw, a)
    switch (fid) {
    case F_ABS:
        NOARGS();
        if (in.t == JV_FLOAT) return jv_float(fabs(in.u.f));
        if (in.t == JV_INT || in.t == JV_BOOL) {
            int64_t x = in.t == JV_INT ? in.u.i : in.u.b;
            if (x == INT64_MIN) jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: integer overflow");
            return jv_int(x < 0 ? -x : x);
        }
        jc_throw(c, JINJA_ERR_RUNTIME, "bad operand type for abs(): '%s'", jv_typename(&in));
    case F_BATCH:
        BIND("linecount", "fill_with");
        return f_batch(c, in, a);
    case F_CAPITALIZE:
        NOARGS();
        return str_case(c, jv_to_str(c, &in).u.s, 2);
    case F_COUNT:
    case F_LENGTH:
        NOARGS();
        return jv_int(jv_pylen(c, &in));
    case F_D:
    case F_DEFAULT:
        BIND("default_value", "boolean");
        if (in.t == JV_UNDEF || (given(&a[1]) && jv_truthy(&a[1]) && !jv_truthy(&in)))
            return given(&a[0]) ? a[0] : jv_strref("", 0);
        return in;
    case F_DICTSORT:
        BIND("case_sensitive", "by", "reverse");
        return f_dictsort(c, in, a);
    case F_E:
    case F_ESCAPE:
        NOARGS();
        return html_escape(c, in);
    case F_FIRST:
        NOARGS();
        return f_first_last(c, in, 0);
    case F_LAST:
        NOARGS();
        return f_first_last(c, in, 1);
    /* int(), float() and `s += "\n"` of an Undefined raise (the other filters print it) */
    case F_FLOAT:
        BIND("default");
        if (in.t == JV_UNDEF) undefined_error(c, &in);
        return f_float(c, in, a);
    case F_INDENT:
        BIND("width", "first", "blank");
        if (in.t == JV_UNDEF) undefined_error(c, &in);
        return f_indent(c, in, a);
    case F_INT:
        BIND("default", "base");
        if (in.t == JV_UNDEF) undefined_error(c, &in);
        return f_int(c, in, a);
    case F_ITEMS:
        NOARGS();
        return f_items(c, in);
    case F_JOIN:
        BIND("d", "attribute");
        return f_join(c, in, a);
    case F_LIST: {
        NOARGS();
        JList *items = jv_iterate(c, &in), *r = jl_new(c, items->n, JL_LIST);
        for (size_t i = 0; i < items->n; i++)
            jl_push(c, r, items->v[i]);
        return jv_list(r);
    }
    case F_LOWER:
        NOARGS();
        return str_case(c, jv_to_str(c, &in).u.s, 1);
    case F_UPPER:
        NOARGS();
        return str_case(c, jv_to_str(c, &in).u.s, 0);
    case F_TITLE:
        NOARGS();
        return str_case(c, jv_to_str(c, &in).u.s, 4);
    case F_MAP:
        return f_map(c, in, args, nargs, kwv, kwn, nkw);
    case F_SELECT:
    case F_REJECT:
    case F_SELECTATTR:
    case F_REJECTATTR:
        if (nkw) jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: keyword arguments of %s", fname);
        return f_select(c, in, args, nargs, fid == F_SELECTATTR || fid == F_REJECTATTR,
                        fid == F_SELECT || fid == F_SELECTATTR);
    case F_REPLACE: {
        BIND("old", "new", "count");
        if (!given(&a[0]) || !given(&a[1]))
            jc_throw(c, JINJA_ERR_RUNTIME, "replace() missing required arguments");
        int64_t cnt = given_notnone(&a[2]) ? want_int(c, &a[2], "replace") : -1;
        return str_replace(c, jv_to_str(c, &in).u.s, jv_to_str(c, &a[0]).u.s,
                           jv_to_str(c, &a[1]).u.s, cnt);
    }
    case F_REVERSE:
        NOARGS();
        return f_reverse(c, in);
    case F_ROUND:
        BIND("precision", "method");
        return f_round(c, in, a);
    case F_SAFE: {
        NOARGS();
        JVal s = jv_to_str(c, &in);
        s.unsafe = 1;
        return s;
    }
    case F_SORT:
        BIND("reverse", "case_sensitive", "attribute");
        return f_sort(c, in, a);
    case F_STRING:
        NOARGS();
        return jv_to_str(c, &in);
    case F_SUM:
        BIND("attribute", "start");
        return f_sum(c, in, a);
    case F_TOJSON:
        BIND("ensure_ascii", "indent", "separators", "sort_keys");
        return f_tojson(c, in, a);
    case F_TRIM: {
        BIND("chars");
        JStr ch = {0};
        if (given_notnone(&a[0])) ch = want_str(c, &a[0], "strip");
        JStr r = str_strip(jv_to_str(c, &in).u.s, given_notnone(&a[0]) ? &ch : NULL, 3);
        return jv_strref(r.p, r.n);
    }
    case F_UNIQUE:
        BIND("case_sensitive", "attribute");
        return f_unique(c, in, a);
    default:
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: filter");
    }
#undef BIND
#undef NOARGS
}

/* ---- tests ------------------------------------------------------------------------------ */

typedef enum {
    T_BOOLEAN,
    T_CALLABLE,
    T_DEFINED,
    T_DIVISIBLEBY,
    T_EQ,
    T_EQUALTO,
    T_EVEN,
    T_FALSE,
    T_FLOAT,
    T_GE,
    T_GREATERTHAN,
    T_GT,
    T_IN,
    T_INTEGER,
    T_ITERABLE,
    T_LE,
    T_LESSTHAN,
    T_LOWER,
    T_LT,
    T_MAPPING,
    T_NE,
    T_NONE,
    T_NUMBER,
    T_ODD,
    T_SAMEAS,
    T_SEQUENCE,
    T_STRING,
    T_TRUE,
    T_UNDEFINED,
    T_UPPER,
    T_NTESTS
} TestId;

static const char *const test_names[T_NTESTS] = {
    "boolean", "callable", "defined",  "divisibleby", "eq",          "equalto",
    "even",    "false",    "float",    "ge",          "greaterthan", "gt",
    "in",      "integer",  "iterable", "le",          "lessthan",    "lower",
    "lt",      "mapping",  "ne",       "none",        "number",      "odd",
    "sameas",  "sequence", "string",   "true",        "undefined",   "upper"};

int jb_test_id(const char *name, size_t n) {
    for (int i = 0; i < T_NTESTS; i++)
        if (name_eq(test_names[i], name, n)) return i;
    if (name_eq("escaped", name, n) || name_eq("filter", name, n) || name_eq("test", name, n))
        return -2;
    return -1;
}

/* Python's str.islower / isupper: a cased character and none of the other case. */
static int str_is_case(JStr s, int upper) {
    int cased = 0;
    for (size_t i = 0; i < s.n;) {
        size_t adv;
        int32_t cp = ju_decode(s.p + i, s.n - i, &adv);
        utf8proc_category_t k = utf8proc_category(cp);
        if (k == UTF8PROC_CATEGORY_LT) return 0;
        int is_up = k == UTF8PROC_CATEGORY_LU, is_lo = k == UTF8PROC_CATEGORY_LL;
        if (upper ? is_lo : is_up) return 0;
        if (upper ? is_up : is_lo) cased = 1;
        i += adv;
    }
    return cased;
}

static int is_singleton(const JVal *v) {
    return v->t == JV_NONE || v->t == JV_BOOL;
}

int jb_test(JCtx *c, int tid, const JVal *in, JVal *args, size_t nargs) {
    static const int nparams[T_NTESTS] = {
        [T_DIVISIBLEBY] = 1, [T_EQ] = 1, [T_EQUALTO] = 1, [T_GE] = 1,
        [T_GREATERTHAN] = 1, [T_GT] = 1, [T_IN] = 1,      [T_LE] = 1,
        [T_LESSTHAN] = 1,    [T_LT] = 1, [T_NE] = 1,      [T_SAMEAS] = 1};
    if (nargs != (size_t)nparams[tid])
        jc_throw(c, JINJA_ERR_RUNTIME, "test '%s' takes %d argument(s), %zu given", test_names[tid],
                 nparams[tid], nargs);
    const JVal *o = nargs ? &args[0] : NULL;
    switch (tid) {
    case T_BOOLEAN:
        return in->t == JV_BOOL;
    case T_CALLABLE:
        return in->t == JV_MACRO || in->t == JV_FUNC || in->t == JV_UNDEF;
    case T_DEFINED:
        return in->t != JV_UNDEF;
    case T_UNDEFINED:
        return in->t == JV_UNDEF;
    case T_DIVISIBLEBY: {
        JVal m = jv_binop(c, JOP_MOD, in, o), z = jv_int(0);
        return jv_eq(c, &m, &z);
    }
    case T_EQ:
    case T_EQUALTO:
        return jv_eq(c, in, o);
    case T_NE:
        return !jv_eq(c, in, o);
    case T_EVEN:
    case T_ODD: {
        JVal two = jv_int(2), m = jv_binop(c, JOP_MOD, in, &two), want = jv_int(tid == T_ODD);
        return jv_eq(c, &m, &want);
    }
    case T_FALSE:
        return in->t == JV_BOOL && !in->u.b;
    case T_TRUE:
        return in->t == JV_BOOL && in->u.b;
    case T_FLOAT:
        return in->t == JV_FLOAT;
    case T_INTEGER:
        return in->t == JV_INT;
    case T_NUMBER:
        return in->t == JV_INT || in->t == JV_FLOAT || in->t == JV_BOOL;
    case T_GE:
        return jv_cmp(c, in, o) >= 0;
    case T_GT:
    case T_GREATERTHAN:
        return jv_cmp(c, in, o) > 0;
    case T_LE:
        return jv_cmp(c, in, o) <= 0;
    case T_LT:
    case T_LESSTHAN:
        return jv_cmp(c, in, o) < 0;
    case T_IN:
        return jv_contains(c, o, in);
    case T_ITERABLE:
        return in->t == JV_STR || in->t == JV_LIST || in->t == JV_DICT || in->t == JV_UNDEF ||
               in->t == JV_LOOP;
    case T_SEQUENCE:
        return in->t == JV_STR || in->t == JV_DICT || in->t == JV_UNDEF ||
               (in->t == JV_LIST && in->u.l->kind <= JL_TUPLE);
    case T_MAPPING:
        return in->t == JV_DICT;
    case T_NONE:
        return in->t == JV_NONE;
    case T_STRING:
        return in->t == JV_STR;
    case T_LOWER:
    case T_UPPER:
        return str_is_case(jv_to_str(c, in).u.s, tid == T_UPPER);
    case T_SAMEAS:
        if (is_singleton(in) || is_singleton(o)) return in->t == o->t && jv_eq(c, in, o);
        if (in->t == JV_LIST && o->t == JV_LIST) return in->u.l == o->u.l;
        if ((in->t == JV_DICT || in->t == JV_NS) && in->t == o->t) return in->u.d == o->u.d;
        if (in->t != o->t && !(in->t == JV_INT && o->t == JV_FLOAT) &&
            !(in->t == JV_FLOAT && o->t == JV_INT))
            return 0;
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: 'sameas' of two %s values",
                 jv_typename(in));
    default:
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: test");
    }
}

/* ---- methods ---------------------------------------------------------------------------- */

static const char *const str_methods[] = {
    "capitalize",   "casefold",    "center",    "count",      "encode",       "endswith",
    "expandtabs",   "find",        "format",    "format_map", "index",        "isalnum",
    "isalpha",      "isascii",     "isdecimal", "isdigit",    "isidentifier", "islower",
    "isnumeric",    "isprintable", "isspace",   "istitle",    "isupper",      "join",
    "ljust",        "lower",       "lstrip",    "maketrans",  "partition",    "removeprefix",
    "removesuffix", "replace",     "rfind",     "rindex",     "rjust",        "rpartition",
    "rsplit",       "rstrip",      "split",     "splitlines", "startswith",   "strip",
    "swapcase",     "title",       "translate", "upper",      "zfill",        NULL};
static const char *const dict_methods[] = {"clear",      "copy",   "fromkeys", "get",
                                           "items",      "keys",   "pop",      "popitem",
                                           "setdefault", "update", "values",   NULL};
static const char *const dict_unsafe[] = {"clear", "pop", "popitem", "setdefault", "update", NULL};
static const char *const list_methods[] = {"append", "clear",   "copy",   "count",
                                           "extend", "index",   "insert", "pop",
                                           "remove", "reverse", "sort",   NULL};
static const char *const list_unsafe[] = {"append", "clear",   "extend", "insert", "pop",
                                          "remove", "reverse", "sort",   NULL};
static const char *const num_attrs[] = {
    "real",       "imag",      "numerator", "denominator", "conjugate",
    "bit_length", "bit_count", "to_bytes",  "from_bytes",  "as_integer_ratio",
    "is_integer", "hex",       "fromhex",   NULL};

static const char *in_list(const char *const *l, const char *name, size_t n) {
    for (int i = 0; l[i]; i++)
        if (name_eq(l[i], name, n)) return l[i];
    return NULL;
}

JVal jb_method(JCtx *c, const JVal *self, const char *name, size_t n) {
    const char *m = NULL;
    const char *tn = jv_typename(self);
    switch (self->t) {
    case JV_STR:
        m = in_list(str_methods, name, n);
        break;
    case JV_DICT:
        m = in_list(dict_methods, name, n);
        if (m && in_list(dict_unsafe, name, n)) goto unsafe;
        break;
    case JV_LIST:
        if (self->u.l->kind == JL_LIST) {
            m = in_list(list_methods, name, n);
            if (m && in_list(list_unsafe, name, n)) goto unsafe;
        } else if (self->u.l->kind == JL_TUPLE) {
            if (name_eq("count", name, n) || name_eq("index", name, n))
                m = name_eq("count", name, n) ? "count" : "index";
        } else if (self->u.l->kind != JL_GEN && name_eq("mapping", name, n)) {
            jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: attribute 'mapping'");
        }
        break;
    case JV_INT:
    case JV_BOOL:
    case JV_FLOAT:
        if (in_list(num_attrs, name, n))
            jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: attribute '%.*s' of a number", (int)n,
                     name);
        break;
    default:
        break;
    }
    if (!m) return jv_undef(NULL);
    return mkfunc(c, JF_METHOD, m, self);
unsafe:;
    char buf[200];
    snprintf(buf, sizeof buf, "access to attribute '%.*s' of '%s' object is unsafe.",
             (int)(n > 60 ? 60 : n), name, tn);
    JVal u = jv_undef(jv_str(c, buf, strlen(buf)).u.s.p);
    u.unsafe = 1;
    return u;
}

static int64_t cp_index(JStr s, const char *at) {
    return (int64_t)ju_count(s.p, (size_t)(at - s.p));
}

static JVal call_str_method(JCtx *c, JStr s, const char *m, JVal *args, size_t nargs, JVal *kwv,
                            JStr *kwn, size_t nkw) {
    JVal a[3];
    jc_work(c, s.n); /* a method scans the string a few times at most */
#define M(name) (strcmp(m, name) == 0)
#define BINDM(...)                                                                                 \
    do {                                                                                           \
        static const char *const nm[] = {__VA_ARGS__};                                             \
        bind(c, m, nm, sizeof nm / sizeof *nm, args, nargs, kwv, kwn, nkw, a);                     \
    } while (0)
    if (M("upper") || M("lower") || M("title") || M("capitalize")) {
        bind(c, m, NULL, 0, args, nargs, kwv, kwn, nkw, a);
        return str_case(c, s, M("upper") ? 0 : M("lower") ? 1 : M("capitalize") ? 2 : 3);
    }
    if (M("strip") || M("lstrip") || M("rstrip")) {
        BINDM("chars");
        JStr ch = {0};
        if (given_notnone(&a[0])) ch = want_str(c, &a[0], m);
        JStr r = str_strip(s, given_notnone(&a[0]) ? &ch : NULL,
                           M("strip")    ? 3
                           : M("lstrip") ? 1
                                         : 2);
        return jv_strref(r.p, r.n);
    }
    if (M("startswith") || M("endswith")) {
        if (nargs != 1 || nkw)
            jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: %s with start / end arguments", m);
        JList one = {0};
        JList *cands = &one;
        if (args[0].t == JV_LIST && args[0].u.l->kind == JL_TUPLE)
            cands = args[0].u.l;
        else {
            one.v = &args[0];
            one.n = 1;
        }
        for (size_t i = 0; i < cands->n; i++) {
            JStr x = want_str(c, &cands->v[i], m);
            if (x.n > s.n) continue;
            if (memcmp(M("startswith") ? s.p : s.p + s.n - x.n, x.p, x.n) == 0) return jv_bool(1);
        }
        return jv_bool(0);
    }
    if (M("split") || M("rsplit")) {
        BINDM("sep", "maxsplit");
        JStr sep = {0};
        if (given_notnone(&a[0])) sep = want_str(c, &a[0], m);
        int64_t maxsplit = given(&a[1]) ? want_int(c, &a[1], m) : -1;
        return str_split(c, s, given_notnone(&a[0]) ? &sep : NULL, maxsplit, M("rsplit"));
    }
    if (M("splitlines")) {
        if (nargs || nkw) jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: splitlines(keepends)");
        return jv_list(str_splitlines(c, s));
    }
    if (M("replace")) {
        if (nkw) jc_throw(c, JINJA_ERR_RUNTIME, "replace() takes no keyword arguments");
        if (nargs < 2 || nargs > 3)
            jc_throw(c, JINJA_ERR_RUNTIME, "replace() takes 2 or 3 arguments");
        int64_t cnt = nargs == 3 ? want_int(c, &args[2], m) : -1;
        return str_replace(c, s, want_str(c, &args[0], m), want_str(c, &args[1], m), cnt);
    }
    if (M("find") || M("rfind") || M("count") || M("index") || M("rindex")) {
        if (nargs != 1 || nkw)
            jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: %s with start / end arguments", m);
        JStr x = want_str(c, &args[0], m);
        if (M("count")) {
            if (x.n == 0) return jv_int((int64_t)ju_count(s.p, s.n) + 1);
            int64_t k = 0;
            size_t i = 0;
            const char *f;
            while ((f = find_bytes(s, i, x))) {
                k++;
                i = (size_t)(f - s.p) + x.n;
            }
            return jv_int(k);
        }
        const char *found = NULL;
        if (m[0] == 'r') {
            if (x.n <= s.n)
                for (size_t j = s.n - x.n + 1; j > 0; j--)
                    if (memcmp(s.p + j - 1, x.p, x.n) == 0) {
                        found = s.p + j - 1;
                        break;
                    }
        } else {
            found = find_bytes(s, 0, x);
        }
        if (!found && (M("index") || M("rindex")))
            jc_throw(c, JINJA_ERR_RUNTIME, "substring not found");
        return jv_int(found ? cp_index(s, found) : -1);
    }
    if (M("join")) {
        if (nargs != 1 || nkw) jc_throw(c, JINJA_ERR_RUNTIME, "join() takes exactly one argument");
        JList *items = jv_iterate(c, &args[0]);
        JBuf b = {0};
        for (size_t i = 0; i < items->n; i++) {
            JStr x = want_str(c, &items->v[i], "sequence item");
            if (i) jb_add(c, &b, s.p, s.n);
            jb_add(c, &b, x.p, x.n);
        }
        return b.p ? jb_val(&b) : jv_strref("", 0);
    }
    if (M("removeprefix") || M("removesuffix")) {
        if (nargs != 1 || nkw) jc_throw(c, JINJA_ERR_RUNTIME, "%s() takes exactly one argument", m);
        JStr x = want_str(c, &args[0], m);
        if (x.n <= s.n && M("removeprefix") && memcmp(s.p, x.p, x.n) == 0)
            return jv_strref(s.p + x.n, s.n - x.n);
        if (x.n <= s.n && M("removesuffix") && memcmp(s.p + s.n - x.n, x.p, x.n) == 0)
            return jv_strref(s.p, s.n - x.n);
        return jv_strref(s.p, s.n);
    }
    if (M("isspace") || M("isdigit") || M("isalpha") || M("isalnum") || M("isascii")) {
        bind(c, m, NULL, 0, args, nargs, kwv, kwn, nkw, a);
        if (s.n == 0) return jv_bool(M("isascii"));
        for (size_t i = 0; i < s.n;) {
            size_t adv;
            int32_t cp = ju_decode(s.p + i, s.n - i, &adv);
            int ok;
            if (M("isascii"))
                ok = cp < 0x80;
            else if (cp >= 0x80)
                jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: %s of non-ASCII text", m);
            else if (M("isspace"))
                ok = ju_isspace(cp);
            else if (M("isdigit"))
                ok = cp >= '0' && cp <= '9';
            else if (M("isalpha"))
                ok = (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
            else
                ok = ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') || (cp >= '0' && cp <= '9');
            if (!ok) return jv_bool(0);
            i += adv;
        }
        return jv_bool(1);
    }
    if (M("islower") || M("isupper")) {
        bind(c, m, NULL, 0, args, nargs, kwv, kwn, nkw, a);
        return jv_bool(str_is_case(s, M("isupper")));
    }
    jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: str.%s", m);
#undef BINDM
}

static JVal call_method(JCtx *c, JFunc *f, JVal *args, size_t nargs, JVal *kwv, JStr *kwn,
                        size_t nkw) {
    const char *m = f->name;
    JVal *self = &f->self, a[2];
    if (self->t == JV_STR) return call_str_method(c, self->u.s, m, args, nargs, kwv, kwn, nkw);
    if (self->t == JV_DICT) {
        JDict *d = self->u.d;
        if (M("get")) {
            static const char *const nm[] = {"key", "default"};
            if (nkw) jc_throw(c, JINJA_ERR_RUNTIME, "get() takes no keyword arguments");
            bind(c, m, nm, 2, args, nargs, kwv, kwn, nkw, a);
            if (!given(&a[0])) jc_throw(c, JINJA_ERR_RUNTIME, "get expected at least 1 argument");
            JVal *v = jd_get(c, d, a[0]);
            return v ? *v : given(&a[1]) ? a[1] : jv_none();
        }
        if (M("items") || M("keys") || M("values")) {
            bind(c, m, NULL, 0, args, nargs, kwv, kwn, nkw, a);
            JList *l = jl_new(c, d->n, M("items") ? JL_ITEMS : M("keys") ? JL_KEYS : JL_VALUES);
            for (size_t i = 0; i < d->n; i++) {
                if (M("items")) {
                    JList *t = jl_new(c, 2, JL_TUPLE);
                    jl_push(c, t, d->k[i]);
                    jl_push(c, t, d->v[i]);
                    jl_push(c, l, jv_list(t));
                } else {
                    jl_push(c, l, M("keys") ? d->k[i] : d->v[i]);
                }
            }
            return jv_list(l);
        }
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: dict.%s", m);
    }
    if (self->t == JV_LIST) {
        JList *l = self->u.l;
        if ((M("count") || M("index")) && nargs == 1 && !nkw) {
            int64_t k = 0;
            jc_work(c, l->n * JC_ELEM);
            for (size_t i = 0; i < l->n; i++)
                if (jv_eq(c, &l->v[i], &args[0])) {
                    if (M("index")) return jv_int((int64_t)i);
                    k++;
                }
            if (M("index")) jc_throw(c, JINJA_ERR_RUNTIME, "value is not in list");
            return jv_int(k);
        }
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: %s.%s(...)", jv_typename(self), m);
    }
    jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: method %s", m);
}
#undef M

/* ---- globals ---------------------------------------------------------------------------- */

JVal jb_global(JCtx *c, const char *name, size_t n) {
    static const struct {
        const char *name;
        int kind;
    } g[] = {{"range", JF_RANGE},
             {"dict", JF_DICT},
             {"namespace", JF_NAMESPACE},
             {"raise_exception", JF_RAISE},
             {"strftime_now", JF_STRFTIME},
             {"lipsum", JF_UNSUPPORTED_GLOBAL},
             {"cycler", JF_UNSUPPORTED_GLOBAL},
             {"joiner", JF_UNSUPPORTED_GLOBAL}};
    for (size_t i = 0; i < sizeof g / sizeof *g; i++)
        if (name_eq(g[i].name, name, n)) return mkfunc(c, g[i].kind, g[i].name, NULL);
    return jv_undef(NULL);
}

/* dict(...) / namespace(...): an optional mapping or list of pairs, then keywords. */
static JDict *make_dict(JCtx *c, const char *fname, JVal *args, size_t nargs, JVal *kwv, JStr *kwn,
                        size_t nkw) {
    JDict *d = jd_new(c);
    if (nargs > 1) jc_throw(c, JINJA_ERR_RUNTIME, "%s expected at most 1 argument", fname);
    if (nargs == 1) {
        if (args[0].t == JV_DICT) {
            for (size_t i = 0; i < args[0].u.d->n; i++)
                jd_set(c, d, args[0].u.d->k[i], args[0].u.d->v[i]);
        } else {
            JList *items = jv_iterate(c, &args[0]);
            for (size_t i = 0; i < items->n; i++) {
                JList *kv = jv_iterate(c, &items->v[i]);
                if (kv->n != 2)
                    jc_throw(c, JINJA_ERR_RUNTIME,
                             "dictionary update sequence element has length %zu; 2 is required",
                             kv->n);
                jd_set(c, d, kv->v[0], kv->v[1]);
            }
        }
    }
    for (size_t k = 0; k < nkw; k++)
        jd_set(c, d, jv_strref(kwn[k].p, kwn[k].n), kwv[k]);
    return d;
}

static JVal g_range(JCtx *c, JVal *args, size_t nargs, size_t nkw) {
    if (nkw) jc_throw(c, JINJA_ERR_RUNTIME, "range() takes no keyword arguments");
    if (nargs < 1 || nargs > 3)
        jc_throw(c, JINJA_ERR_RUNTIME, "range expected 1 to 3 arguments, got %zu", nargs);
    int64_t start = 0, stop, st = 1;
    for (size_t i = 0; i < nargs; i++)
        if (args[i].t != JV_INT && args[i].t != JV_BOOL)
            jc_throw(c, JINJA_ERR_RUNTIME, "'%s' object cannot be interpreted as an integer",
                     jv_typename(&args[i]));
    if (nargs == 1) {
        stop = want_int(c, &args[0], "range");
    } else {
        start = want_int(c, &args[0], "range");
        stop = want_int(c, &args[1], "range");
        if (nargs == 3) st = want_int(c, &args[2], "range");
    }
    if (st == 0) jc_throw(c, JINJA_ERR_RUNTIME, "range() arg 3 must not be zero");
    /* the length in unsigned 64 bits: no overflow for any int64 bounds */
    uint64_t len = 0;
    if (st > 0 && stop > start) {
        uint64_t diff = (uint64_t)stop - (uint64_t)start, s = (uint64_t)st;
        len = diff / s + (diff % s != 0);
    }
    if (st < 0 && stop < start) {
        uint64_t diff = (uint64_t)start - (uint64_t)stop, s = (uint64_t)0 - (uint64_t)st;
        len = diff / s + (diff % s != 0);
    }
    if (len > 100000)
        jc_throw(c, JINJA_ERR_RUNTIME,
                 "Range too big. The sandbox blocks ranges larger than "
                 "MAX_RANGE (100000).");
    JList *l = jl_new(c, (size_t)len, JL_LIST);
    for (uint64_t i = 0; i < len; i++)
        jl_push(c, l, jv_int((int64_t)((uint64_t)start + i * (uint64_t)st)));
    return jv_list(l);
}

static JVal g_strftime(JCtx *c, JVal *args, size_t nargs, size_t nkw) {
    if (nargs != 1 || nkw) jc_throw(c, JINJA_ERR_RUNTIME, "strftime_now() takes one argument");
    JStr fmt = want_str(c, &args[0], "strftime_now");
    if (memchr(fmt.p, 0, fmt.n)) jc_throw(c, JINJA_ERR_RUNTIME, "embedded null character");
    /* C's directives (a letter or %%); Python's own %f and glibc's flags and widths are
     * refused, and so is a trailing % */
    for (size_t i = 0; i < fmt.n; i++)
        if (fmt.p[i] == '%') {
            char d = i + 1 < fmt.n ? fmt.p[i + 1] : 0;
            int letter = (d >= 'a' && d <= 'z') || (d >= 'A' && d <= 'Z');
            if ((!letter && d != '%') || d == 'f' || d == 'E' || d == 'O')
                jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: strftime directive %%%c",
                         d ? d : ' ');
            i++;
        }
    time_t t = c->now >= 0 ? (time_t)c->now : time(NULL);
    struct tm tm;
    if (!localtime_r(&t, &tm)) jc_throw(c, JINJA_ERR_RUNTIME, "cannot convert the time");
    /* datetime.now() is naive: %z and %Z print nothing */
    JBuf fb = {0};
    for (size_t i = 0; i < fmt.n; i++) {
        if (fmt.p[i] == '%' && (fmt.p[i + 1] == 'z' || fmt.p[i + 1] == 'Z')) {
            i++;
            continue;
        }
        jb_addc(c, &fb, fmt.p[i]);
        if (fmt.p[i] == '%') jb_addc(c, &fb, fmt.p[++i]);
    }
    JVal f0 = fb.p ? jb_val(&fb) : jv_strref("", 0);
    for (size_t cap = 256 + 8 * fmt.n; cap < ((size_t)1 << 26); cap *= 4) {
        char *buf = jc_alloc(c, cap);
        size_t k = strftime(buf, cap, f0.u.s.p, &tm);
        if (k > 0 || f0.u.s.n == 0) return jv_strref(buf, k);
    }
    return jv_strref("", 0); /* a format whose expansion is empty */
}

JVal jb_call_func(JCtx *c, JFunc *f, JVal *args, size_t nargs, JVal *kwv, JStr *kwn, size_t nkw) {
    switch (f->kind) {
    case JF_RANGE:
        return g_range(c, args, nargs, nkw);
    case JF_DICT:
        return jv_dict(make_dict(c, "dict", args, nargs, kwv, kwn, nkw));
    case JF_NAMESPACE: {
        JVal v = jv_dict(make_dict(c, "namespace", args, nargs, kwv, kwn, nkw));
        v.t = JV_NS;
        return v;
    }
    case JF_RAISE: {
        if (nargs != 1 || nkw)
            jc_throw(c, JINJA_ERR_RUNTIME, "raise_exception() takes one argument");
        JVal s = jv_to_str(c, &args[0]);
        size_t n = s.u.s.n;
        if (n > 800) { /* cut at a character boundary */
            n = 800;
            while (n > 0 && ((unsigned char)s.u.s.p[n] & 0xC0) == 0x80)
                n--;
        }
        jc_throw(c, JINJA_ERR_RAISED, "%.*s", (int)n, s.u.s.p);
    }
    case JF_STRFTIME:
        return g_strftime(c, args, nargs, nkw);
    case JF_METHOD:
        return call_method(c, f, args, nargs, kwv, kwn, nkw);
    case JF_LOOP_CYCLE: {
        if (nkw) jc_throw(c, JINJA_ERR_RUNTIME, "cycle() takes no keyword arguments");
        if (nargs == 0) jc_throw(c, JINJA_ERR_RUNTIME, "no items for cycling given");
        return args[f->self.u.loop->i % nargs];
    }
    default:
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: %s()", f->name);
    }
}
