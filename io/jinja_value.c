/* Values of the Jinja engine as Python holds them: the arena, UTF-8 helpers, str() and
 * repr() printing (floats as Python's shortest repr), json.dumps, equality and ordering,
 * the arithmetic operators with Python's semantics on int64 (overflow is refused), `in`
 * and iteration. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "jinja_int.h"

/* ---- arena ------------------------------------------------------------------------------ */

struct JArenaBlock {
    JArenaBlock *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

void ja_free(JArena *a) {
    JArenaBlock *b = a->head;
    while (b) {
        JArenaBlock *n = b->next;
        free(b);
        b = n;
    }
    a->head = NULL;
    a->used = 0;
}

void *ja_alloc_raw(JArena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (n > a->limit || a->used > a->limit - n) return NULL;
    JArenaBlock *b = a->head;
    if (!b || b->size - b->used < n) {
        size_t size = n > 65536 ? n : 65536;
        b = malloc(sizeof *b + size);
        if (!b) return NULL;
        b->size = size;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    a->used += n;
    memset(p, 0, n);
    return p;
}

_Noreturn void jc_throw(JCtx *c, JinjaErr kind, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jerr_throw(&c->err, kind, c->line, "%s", msg);
}

void jc_work(JCtx *c, size_t units) {
    c->steps += units / 64;
    if (c->steps > c->max_steps)
        jc_throw(c, JINJA_ERR_LIMIT, "step limit: more than %llu evaluation steps",
                 (unsigned long long)c->max_steps);
}

void *jc_alloc(JCtx *c, size_t n) {
    jc_work(c, n);
    void *p = ja_alloc_raw(&c->arena, n);
    if (!p)
        jc_throw(c, JINJA_ERR_LIMIT, "memory limit: the render allocated more than %zu bytes",
                 c->arena.limit);
    return p;
}

/* ---- UTF-8 ------------------------------------------------------------------------------ */

int32_t ju_decode(const char *s, size_t n, size_t *adv) {
    const unsigned char *p = (const unsigned char *)s;
    *adv = 1;
    if (n == 0) return -1;
    if (p[0] < 0x80) return p[0];
    int k = p[0] >= 0xF0 ? 4 : p[0] >= 0xE0 ? 3 : p[0] >= 0xC0 ? 2 : 0;
    if (!k || (size_t)k > n || p[0] > 0xF4) return -1;
    int32_t cp = p[0] & (0x3F >> (k - 1));
    for (int i = 1; i < k; i++) {
        if ((p[i] & 0xC0) != 0x80) return -1;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    static const int32_t minv[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < minv[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
    *adv = (size_t)k;
    return cp;
}

size_t ju_encode(int32_t cp, char *o) {
    unsigned char *q = (unsigned char *)o;
    if (cp < 0x80) {
        q[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        q[0] = (unsigned char)(0xC0 | (cp >> 6));
        q[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        q[0] = (unsigned char)(0xE0 | (cp >> 12));
        q[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        q[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    q[0] = (unsigned char)(0xF0 | (cp >> 18));
    q[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    q[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    q[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t ju_valid(const char *p, size_t n) {
    size_t i = 0, adv;
    while (i < n) {
        if (ju_decode(p + i, n - i, &adv) < 0) return i;
        i += adv;
    }
    return n;
}

size_t ju_count(const char *p, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)p[i] & 0xC0) != 0x80;
    return k;
}

size_t ju_offset(const char *p, size_t n, size_t k) {
    size_t i = 0;
    while (i < n && k > 0) {
        i++;
        while (i < n && ((unsigned char)p[i] & 0xC0) == 0x80)
            i++;
        k--;
    }
    return i;
}

int ju_isspace(int32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ---- constructors ----------------------------------------------------------------------- */

JVal jv_undef(const char *name) {
    JVal v = {0};
    v.t = JV_UNDEF;
    v.u.s.p = name ? name : "";
    v.u.s.n = name ? strlen(name) : 0;
    return v;
}
JVal jv_none(void) {
    JVal v = {0};
    v.t = JV_NONE;
    return v;
}
JVal jv_bool(int b) {
    JVal v = {0};
    v.t = JV_BOOL;
    v.u.b = b != 0;
    return v;
}
JVal jv_int(int64_t i) {
    JVal v = {0};
    v.t = JV_INT;
    v.u.i = i;
    return v;
}
JVal jv_float(double f) {
    JVal v = {0};
    v.t = JV_FLOAT;
    v.u.f = f;
    return v;
}
JVal jv_strref(const char *p, size_t n) {
    JVal v = {0};
    v.t = JV_STR;
    v.u.s.p = p ? p : "";
    v.u.s.n = n;
    return v;
}
JVal jv_str(JCtx *c, const char *p, size_t n) {
    char *q = jc_alloc(c, n + 1);
    if (n) memcpy(q, p, n);
    return jv_strref(q, n);
}
JList *jl_new(JCtx *c, size_t cap, int kind) {
    JList *l = jc_alloc(c, sizeof *l);
    l->kind = (uint8_t)kind;
    if (cap) {
        if (cap > SIZE_MAX / sizeof(JVal) / 2) jc_throw(c, JINJA_ERR_LIMIT, "list too long");
        l->v = jc_alloc(c, cap * sizeof(JVal));
        l->cap = cap;
    }
    return l;
}
void jl_push(JCtx *c, JList *l, JVal v) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        if (cap > SIZE_MAX / sizeof(JVal) / 2) jc_throw(c, JINJA_ERR_LIMIT, "list too long");
        JVal *nv = jc_alloc(c, cap * sizeof *nv);
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}
JVal jv_list(JList *l) {
    JVal v = {0};
    v.t = JV_LIST;
    v.u.l = l;
    return v;
}
JDict *jd_new(JCtx *c) {
    return jc_alloc(c, sizeof(JDict));
}
JVal jv_dict(JDict *d) {
    JVal v = {0};
    v.t = JV_DICT;
    v.u.d = d;
    return v;
}

int jv_hashable(JCtx *c, const JVal *v) {
    if (v->t == JV_LIST) {
        if (v->u.l->kind != JL_TUPLE) return 0;
        if (++c->depth > JCTX_MAX_DEPTH) jc_throw(c, JINJA_ERR_LIMIT, "values nested too deeply");
        for (size_t i = 0; i < v->u.l->n; i++)
            if (!jv_hashable(c, &v->u.l->v[i])) {
                c->depth--;
                return 0;
            }
        c->depth--;
        return 1;
    }
    return v->t != JV_DICT && v->t != JV_NS;
}

JVal *jd_gets(JDict *d, const char *name, size_t n) {
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == JV_STR && d->k[i].u.s.n == n && memcmp(d->k[i].u.s.p, name, n) == 0)
            return &d->v[i];
    return NULL;
}

JVal *jd_get(JCtx *c, JDict *d, JVal k) {
    jc_work(c, d->n);
    if (k.t == JV_STR) return jd_gets(d, k.u.s.p, k.u.s.n);
    if (!jv_hashable(c, &k))
        jc_throw(c, JINJA_ERR_RUNTIME, "unhashable type: '%s'", jv_typename(&k));
    jc_work(c, d->n * JC_ELEM);
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t != JV_STR && jv_eq(c, &d->k[i], &k)) return &d->v[i];
    return NULL;
}

/* Appends k (not in d) to d. */
static void jd_append(JCtx *c, JDict *d, JVal k, JVal v) {
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        JVal *nk = jc_alloc(c, cap * sizeof *nk), *nv = jc_alloc(c, cap * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

void jd_set(JCtx *c, JDict *d, JVal k, JVal v) {
    JVal *old = jd_get(c, d, k);
    if (old) {
        *old = v;
        return;
    }
    jd_append(c, d, k, v);
}

JVal jv_from_json(JCtx *c, const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_NULL:
        return jv_none();
    case JSON_TRUE:
        return jv_bool(1);
    case JSON_FALSE:
        return jv_bool(0);
    case JSON_INTEGER:
        return jv_int((int64_t)json_integer_value(j));
    case JSON_REAL:
        return jv_float(json_real_value(j));
    case JSON_STRING:
        return jv_strref(json_string_value(j), json_string_length(j));
    case JSON_ARRAY: {
        JList *l = jl_new(c, json_array_size(j), JL_LIST);
        for (size_t i = 0; i < json_array_size(j); i++)
            jl_push(c, l, jv_from_json(c, json_array_get(j, i)));
        return jv_list(l);
    }
    case JSON_OBJECT: {
        JDict *d = jd_new(c);
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) { /* jansson's keys are unique */
            jd_append(c, d, jv_strref(k, strlen(k)), jv_from_json(c, v));
        }
        return jv_dict(d);
    }
    }
    return jv_none();
}

const char *jv_typename(const JVal *v) {
    switch (v->t) {
    case JV_UNDEF:
        return "Undefined";
    case JV_NONE:
        return "NoneType";
    case JV_BOOL:
        return "bool";
    case JV_INT:
        return "int";
    case JV_FLOAT:
        return "float";
    case JV_STR:
        return "str";
    case JV_LIST:
        switch (v->u.l->kind) {
        case JL_TUPLE:
            return "tuple";
        case JL_GEN:
            return "generator";
        case JL_ITEMS:
            return "dict_items";
        case JL_KEYS:
            return "dict_keys";
        case JL_VALUES:
            return "dict_values";
        default:
            return "list";
        }
    case JV_DICT:
        return "dict";
    case JV_NS:
        return "Namespace";
    case JV_MACRO:
        return "Macro";
    case JV_FUNC:
        return "function";
    default:
        return "LoopContext";
    }
}

int jv_truthy(const JVal *v) {
    switch (v->t) {
    case JV_UNDEF:
    case JV_NONE:
        return 0;
    case JV_BOOL:
        return v->u.b;
    case JV_INT:
        return v->u.i != 0;
    case JV_FLOAT:
        return v->u.f != 0;
    case JV_STR:
        return v->u.s.n > 0;
    case JV_LIST:
        return v->u.l->kind == JL_GEN || v->u.l->n > 0;
    case JV_DICT:
        return v->u.d->n > 0;
    default:
        return 1;
    }
}

int jv_is_str(const JVal *v, const char *s) {
    size_t n = strlen(s);
    return v->t == JV_STR && v->u.s.n == n && memcmp(v->u.s.p, s, n) == 0;
}

/* ---- buffers and printing --------------------------------------------------------------- */

void jb_add(JCtx *c, JBuf *b, const char *s, size_t n) {
    if (n == 0) return;
    if (b->cap - b->n < n + 1) {
        if (n > c->arena.limit) jc_throw(c, JINJA_ERR_LIMIT, "string too long");
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->n < n + 1)
            cap *= 2;
        char *p = jc_alloc(c, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
void jb_adds(JCtx *c, JBuf *b, const char *s) {
    jb_add(c, b, s, strlen(s));
}
void jb_addc(JCtx *c, JBuf *b, char ch) {
    jb_add(c, b, &ch, 1);
}
JVal jb_val(JBuf *b) {
    return jv_strref(b->p, b->n);
}

/* Python's repr(float): the shortest digits that read back, fixed notation for decimal
 * exponents -4 <= e < 16, else d.ddde+XX. */
static void format_float(double f, char out[64]) {
    if (isnan(f) || isinf(f)) {
        strcpy(out, isnan(f) ? "nan" : f < 0 ? "-inf" : "inf");
        return;
    }
    char tmp[64];
    int prec;
    for (prec = 0; prec < 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec, f);
        if (strtod(tmp, NULL) == f) break;
    }
    /* tmp: [-]d[.ddd]e[+-]XX */
    char digits[32];
    int nd = 0, neg = tmp[0] == '-';
    const char *q = tmp + neg;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    int exp = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    int k = 0;
    if (neg) out[k++] = '-';
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            out[k++] = '0';
            out[k++] = '.';
            for (int i = 0; i < -exp - 1; i++)
                out[k++] = '0';
            for (int i = 0; i < nd; i++)
                out[k++] = digits[i];
        } else {
            for (int i = 0; i <= exp; i++)
                out[k++] = i < nd ? digits[i] : '0';
            out[k++] = '.';
            if (nd > exp + 1)
                for (int i = exp + 1; i < nd; i++)
                    out[k++] = digits[i];
            else
                out[k++] = '0';
        }
        out[k] = 0;
    } else {
        out[k++] = digits[0];
        if (nd > 1) {
            out[k++] = '.';
            for (int i = 1; i < nd; i++)
                out[k++] = digits[i];
        }
        snprintf(out + k, 64 - (size_t)k, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
}

void jv_write_float(JBuf *b, JCtx *c, double f) {
    char out[64];
    format_float(f, out);
    jb_adds(c, b, out);
}

const char *jv_scalar_str(const JVal *v, char buf[64]) {
    switch (v->t) {
    case JV_UNDEF:
        return "";
    case JV_NONE:
        return "None";
    case JV_BOOL:
        return v->u.b ? "True" : "False";
    case JV_INT:
        snprintf(buf, 64, "%lld", (long long)v->u.i);
        return buf;
    case JV_FLOAT:
        format_float(v->u.f, buf);
        return buf;
    default:
        return NULL;
    }
}

static int py_printable(int32_t cp) {
    if (cp == ' ') return 1;
    if (cp < 0x20 || cp == 0x7F) return 0;
    if (cp < 0x7F) return 1;
    utf8proc_category_t cat = utf8proc_category(cp);
    switch (cat) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS:
        return 0;
    default:
        return 1;
    }
}

static void write_str_repr(JCtx *c, JBuf *b, const char *s, size_t n) {
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jb_addc(c, b, q);
    for (size_t i = 0; i < n;) {
        size_t adv;
        int32_t cp = ju_decode(s + i, n - i, &adv);
        char tmp[16];
        if (cp == q || cp == '\\') {
            jb_addc(c, b, '\\');
            jb_addc(c, b, (char)cp);
        } else if (cp == '\n') {
            jb_adds(c, b, "\\n");
        } else if (cp == '\r') {
            jb_adds(c, b, "\\r");
        } else if (cp == '\t') {
            jb_adds(c, b, "\\t");
        } else if (cp >= 0 && !py_printable(cp)) {
            if (cp < 0x100)
                snprintf(tmp, sizeof tmp, "\\x%02x", (unsigned)cp);
            else if (cp < 0x10000)
                snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)cp);
            else
                snprintf(tmp, sizeof tmp, "\\U%08x", (unsigned)cp);
            jb_adds(c, b, tmp);
        } else {
            jb_add(c, b, s + i, adv);
        }
        i += adv;
    }
    jb_addc(c, b, q);
}

static void write_seq(JCtx *c, JBuf *b, const JList *l, const char *open, const char *close) {
    jb_adds(c, b, open);
    for (size_t i = l->kind == JL_GEN ? l->pos : 0; i < l->n; i++) {
        if (i) jb_adds(c, b, ", ");
        jv_write_repr(c, b, &l->v[i]);
    }
    if (l->kind == JL_TUPLE && l->n == 1) jb_addc(c, b, ',');
    jb_adds(c, b, close);
}

static void write_dict(JCtx *c, JBuf *b, const JDict *d) {
    jb_addc(c, b, '{');
    for (size_t i = 0; i < d->n; i++) {
        if (i) jb_adds(c, b, ", ");
        jv_write_repr(c, b, &d->k[i]);
        jb_adds(c, b, ": ");
        jv_write_repr(c, b, &d->v[i]);
    }
    jb_addc(c, b, '}');
}

void jv_write_repr(JCtx *c, JBuf *b, const JVal *v) {
    if (++c->depth > JCTX_MAX_DEPTH) jc_throw(c, JINJA_ERR_LIMIT, "values nested too deeply");
    switch (v->t) {
    case JV_STR:
        write_str_repr(c, b, v->u.s.p, v->u.s.n);
        break;
    case JV_UNDEF:
        jb_adds(c, b, "Undefined");
        break;
    case JV_LIST:
        switch (v->u.l->kind) {
        case JL_LIST:
            write_seq(c, b, v->u.l, "[", "]");
            break;
        case JL_TUPLE:
            write_seq(c, b, v->u.l, "(", ")");
            break;
        case JL_ITEMS:
            write_seq(c, b, v->u.l, "dict_items([", "])");
            break;
        case JL_KEYS:
            write_seq(c, b, v->u.l, "dict_keys([", "])");
            break;
        case JL_VALUES:
            write_seq(c, b, v->u.l, "dict_values([", "])");
            break;
        default:
            jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: printing a generator");
        }
        break;
    case JV_DICT:
        write_dict(c, b, v->u.d);
        break;
    case JV_NS:
        jb_adds(c, b, "<Namespace ");
        write_dict(c, b, v->u.d);
        jb_addc(c, b, '>');
        break;
    default:
        jv_write_str(c, b, v);
    }
    c->depth--;
}

void jv_write_str(JCtx *c, JBuf *b, const JVal *v) {
    char tmp[32];
    switch (v->t) {
    case JV_UNDEF:
        break;
    case JV_NONE:
        jb_adds(c, b, "None");
        break;
    case JV_BOOL:
        jb_adds(c, b, v->u.b ? "True" : "False");
        break;
    case JV_INT:
        snprintf(tmp, sizeof tmp, "%lld", (long long)v->u.i);
        jb_adds(c, b, tmp);
        break;
    case JV_FLOAT:
        jv_write_float(b, c, v->u.f);
        break;
    case JV_STR:
        jb_add(c, b, v->u.s.p, v->u.s.n);
        break;
    case JV_LIST:
    case JV_DICT:
    case JV_NS:
        jv_write_repr(c, b, v);
        break;
    case JV_MACRO:
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: printing a macro");
    case JV_FUNC:
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: printing a function");
    default:
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: printing the loop object");
    }
}

JVal jv_to_str(JCtx *c, const JVal *v) {
    if (v->t == JV_STR) return *v;
    JBuf b = {0};
    jv_write_str(c, &b, v);
    return jb_val(&b);
}

/* ---- json.dumps ------------------------------------------------------------------------- */

static void json_str(JCtx *c, JBuf *b, const char *s, size_t n, int ensure_ascii) {
    jb_addc(c, b, '"');
    for (size_t i = 0; i < n;) {
        size_t adv;
        int32_t cp = ju_decode(s + i, n - i, &adv);
        char tmp[16];
        switch (cp) {
        case '"':
            jb_adds(c, b, "\\\"");
            break;
        case '\\':
            jb_adds(c, b, "\\\\");
            break;
        case '\n':
            jb_adds(c, b, "\\n");
            break;
        case '\r':
            jb_adds(c, b, "\\r");
            break;
        case '\t':
            jb_adds(c, b, "\\t");
            break;
        case '\b':
            jb_adds(c, b, "\\b");
            break;
        case '\f':
            jb_adds(c, b, "\\f");
            break;
        default:
            if (cp >= 0 && (cp < 0x20 || (ensure_ascii && cp > 0x7E))) {
                if (cp >= 0x10000) {
                    int32_t u = cp - 0x10000;
                    snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", (unsigned)(0xD800 + (u >> 10)),
                             (unsigned)(0xDC00 + (u & 0x3FF)));
                } else {
                    snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)cp);
                }
                jb_adds(c, b, tmp);
            } else {
                jb_add(c, b, s + i, adv);
            }
        }
        i += adv;
    }
    jb_addc(c, b, '"');
}

static void json_float(JCtx *c, JBuf *b, double f) {
    if (isnan(f))
        jb_adds(c, b, "NaN");
    else if (isinf(f))
        jb_adds(c, b, f < 0 ? "-Infinity" : "Infinity");
    else
        jv_write_float(b, c, f);
}

static void json_newline(JCtx *c, JBuf *b, const JStr *indent, int level) {
    jb_addc(c, b, '\n');
    for (int i = 0; i < level; i++)
        jb_add(c, b, indent->p, indent->n);
}

/* A dict key as json.dumps converts it (str, int, float, bool, None). */
static void json_key(JCtx *c, JBuf *b, const JVal *k, int ensure_ascii) {
    JBuf t = {0};
    switch (k->t) {
    case JV_STR:
        json_str(c, b, k->u.s.p, k->u.s.n, ensure_ascii);
        return;
    case JV_BOOL:
        jb_adds(c, &t, k->u.b ? "true" : "false");
        break;
    case JV_NONE:
        jb_adds(c, &t, "null");
        break;
    case JV_INT:
        jv_write_str(c, &t, k);
        break;
    case JV_FLOAT:
        json_float(c, &t, k->u.f);
        break;
    default:
        jc_throw(c, JINJA_ERR_RUNTIME, "keys must be str, int, float, bool or None, not %s",
                 jv_typename(k));
    }
    json_str(c, b, t.p, t.n, ensure_ascii);
}

static int cmp_idx_ctx_sort(JCtx *c, const JDict *d, size_t *idx) {
    /* insertion sort by key (dicts of templates are small) */
    for (size_t i = 0; i < d->n; i++)
        idx[i] = i;
    for (size_t i = 1; i < d->n; i++) {
        size_t x = idx[i], j = i;
        while (j > 0 && jv_cmp(c, &d->k[idx[j - 1]], &d->k[x]) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = x;
    }
    return 1;
}

void jv_write_json(JCtx *c, JBuf *b, const JVal *v, int ensure_ascii, const JStr *indent,
                   JStr item_sep, JStr key_sep, int sort_keys, int level) {
    if (++c->depth > JCTX_MAX_DEPTH) jc_throw(c, JINJA_ERR_LIMIT, "values nested too deeply");
    switch (v->t) {
    case JV_NONE:
        jb_adds(c, b, "null");
        break;
    case JV_BOOL:
        jb_adds(c, b, v->u.b ? "true" : "false");
        break;
    case JV_INT:
        jv_write_str(c, b, v);
        break;
    case JV_FLOAT:
        json_float(c, b, v->u.f);
        break;
    case JV_STR:
        json_str(c, b, v->u.s.p, v->u.s.n, ensure_ascii);
        break;
    case JV_LIST:
        if (v->u.l->kind != JL_LIST && v->u.l->kind != JL_TUPLE)
            jc_throw(c, JINJA_ERR_RUNTIME, "Object of type %s is not JSON serializable",
                     jv_typename(v));
        if (v->u.l->n == 0) {
            jb_adds(c, b, "[]");
            break;
        }
        jb_addc(c, b, '[');
        for (size_t i = 0; i < v->u.l->n; i++) {
            if (i) jb_add(c, b, item_sep.p, item_sep.n);
            if (indent) json_newline(c, b, indent, level + 1);
            jv_write_json(c, b, &v->u.l->v[i], ensure_ascii, indent, item_sep, key_sep, sort_keys,
                          level + 1);
        }
        if (indent) json_newline(c, b, indent, level);
        jb_addc(c, b, ']');
        break;
    case JV_DICT: {
        const JDict *d = v->u.d;
        if (d->n == 0) {
            jb_adds(c, b, "{}");
            break;
        }
        size_t *idx = jc_alloc(c, d->n * sizeof *idx);
        if (sort_keys)
            cmp_idx_ctx_sort(c, d, idx);
        else
            for (size_t i = 0; i < d->n; i++)
                idx[i] = i;
        jb_addc(c, b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i) jb_add(c, b, item_sep.p, item_sep.n);
            if (indent) json_newline(c, b, indent, level + 1);
            json_key(c, b, &d->k[idx[i]], ensure_ascii);
            jb_add(c, b, key_sep.p, key_sep.n);
            jv_write_json(c, b, &d->v[idx[i]], ensure_ascii, indent, item_sep, key_sep, sort_keys,
                          level + 1);
        }
        if (indent) json_newline(c, b, indent, level);
        jb_addc(c, b, '}');
        break;
    }
    default:
        jc_throw(c, JINJA_ERR_RUNTIME, "Object of type %s is not JSON serializable",
                 jv_typename(v));
    }
    c->depth--;
}

/* ---- comparison ------------------------------------------------------------------------- */

static int is_num(const JVal *v) {
    return v->t == JV_BOOL || v->t == JV_INT || v->t == JV_FLOAT;
}
static int is_intlike(const JVal *v) {
    return v->t == JV_BOOL || v->t == JV_INT;
}
static int64_t as_int(const JVal *v) {
    return v->t == JV_BOOL ? v->u.b : v->u.i;
}
static double as_float(const JVal *v) {
    return v->t == JV_FLOAT ? v->u.f : (double)as_int(v);
}

/* int vs float compared exactly (Python compares the true values). */
static int num_cmp(const JVal *a, const JVal *b) {
    if (is_intlike(a) && is_intlike(b)) {
        int64_t x = as_int(a), y = as_int(b);
        return x < y ? -1 : x > y;
    }
    double x = as_float(a), y = as_float(b);
    if (isnan(x) || isnan(y)) return 2; /* unordered */
    if (is_intlike(a) != is_intlike(b)) {
        /* exact: compare the int with the float's floor / value */
        int swap = is_intlike(b);
        int64_t i = as_int(swap ? b : a);
        double f = swap ? a->u.f : b->u.f;
        int r;
        if (f >= 9223372036854775808.0)
            r = -1;
        else if (f < -9223372036854775808.0)
            r = 1;
        else {
            double fl = floor(f);
            int64_t fi = (int64_t)fl;
            if (i < fi)
                r = -1;
            else if (i > fi)
                r = 1;
            else
                r = fl < f ? -1 : 0;
        }
        return swap ? -r : r;
    }
    return x < y ? -1 : x > y;
}

static int seq_kind_eq(const JList *a, const JList *b) {
    int ka = a->kind == JL_TUPLE, kb = b->kind == JL_TUPLE;
    return a->kind != JL_GEN && b->kind != JL_GEN && ka == kb;
}

int jv_eq(JCtx *c, const JVal *a, const JVal *b) {
    if (is_num(a) && is_num(b)) return num_cmp(a, b) == 0;
    if (a->t != b->t) return 0;
    switch (a->t) {
    case JV_UNDEF:
    case JV_NONE:
        return 1;
    case JV_STR:
        if (a->u.s.n != b->u.s.n) return 0;
        jc_work(c, a->u.s.n);
        return memcmp(a->u.s.p, b->u.s.p, a->u.s.n) == 0;
    case JV_LIST: {
        const JList *x = a->u.l, *y = b->u.l;
        if (x == y) return 1;
        if (x->kind == JL_GEN || y->kind == JL_GEN) return 0;
        if (x->kind != y->kind && !(seq_kind_eq(x, y))) {
            if (x->kind == JL_KEYS || x->kind == JL_ITEMS || x->kind == JL_VALUES ||
                y->kind == JL_KEYS || y->kind == JL_ITEMS || y->kind == JL_VALUES)
                jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: comparing dict views");
            return 0;
        }
        if (x->kind >= JL_ITEMS)
            jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: comparing dict views");
        if (x->n != y->n) return 0;
        jc_work(c, x->n * JC_ELEM);
        if (++c->depth > JCTX_MAX_DEPTH) jc_throw(c, JINJA_ERR_LIMIT, "values nested too deeply");
        for (size_t i = 0; i < x->n; i++)
            if (!jv_eq(c, &x->v[i], &y->v[i])) {
                c->depth--;
                return 0;
            }
        c->depth--;
        return 1;
    }
    case JV_DICT: {
        const JDict *x = a->u.d, *y = b->u.d;
        if (x == y) return 1;
        if (x->n != y->n) return 0;
        jc_work(c, x->n * JC_ELEM);
        if (++c->depth > JCTX_MAX_DEPTH) jc_throw(c, JINJA_ERR_LIMIT, "values nested too deeply");
        for (size_t i = 0; i < x->n; i++) {
            JVal *o = jd_get(c, (JDict *)y, x->k[i]);
            if (!o || !jv_eq(c, &x->v[i], o)) {
                c->depth--;
                return 0;
            }
        }
        c->depth--;
        return 1;
    }
    case JV_NS:
        return a->u.d == b->u.d;
    case JV_MACRO:
        return a->u.m == b->u.m;
    case JV_FUNC:
        return a->u.fn == b->u.fn;
    default:
        return a->u.loop == b->u.loop;
    }
}

int jv_cmp(JCtx *c, const JVal *a, const JVal *b) {
    if (a->t == JV_UNDEF || b->t == JV_UNDEF)
        jc_throw(c, JINJA_ERR_RUNTIME, "'%.*s' is undefined",
                 (int)(a->t == JV_UNDEF ? a->u.s.n : b->u.s.n),
                 a->t == JV_UNDEF ? a->u.s.p : b->u.s.p);
    if (is_num(a) && is_num(b)) {
        int r = num_cmp(a, b);
        if (r == 2) jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: ordering NaN");
        return r;
    }
    if (a->t == JV_STR && b->t == JV_STR) {
        size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        jc_work(c, n);
        int r = n ? memcmp(a->u.s.p, b->u.s.p, n) : 0;
        if (r) return r < 0 ? -1 : 1;
        return a->u.s.n < b->u.s.n ? -1 : a->u.s.n > b->u.s.n;
    }
    if (a->t == JV_LIST && b->t == JV_LIST && seq_kind_eq(a->u.l, b->u.l) &&
        a->u.l->kind <= JL_TUPLE) {
        const JList *x = a->u.l, *y = b->u.l;
        if (++c->depth > JCTX_MAX_DEPTH) jc_throw(c, JINJA_ERR_LIMIT, "values nested too deeply");
        for (size_t i = 0; i < x->n && i < y->n; i++) {
            if (jv_eq(c, &x->v[i], &y->v[i])) continue;
            int r = jv_cmp(c, &x->v[i], &y->v[i]);
            c->depth--;
            return r;
        }
        c->depth--;
        return x->n < y->n ? -1 : x->n > y->n;
    }
    jc_throw(c, JINJA_ERR_RUNTIME, "'<' not supported between instances of '%s' and '%s'",
             jv_typename(a), jv_typename(b));
}

/* ---- operators -------------------------------------------------------------------------- */

_Noreturn static void overflow(JCtx *c) {
    jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: integer overflow");
}

_Noreturn static void bad_operands(JCtx *c, const char *op, const JVal *a, const JVal *b) {
    if (a->t == JV_UNDEF || b->t == JV_UNDEF) {
        const JVal *u = a->t == JV_UNDEF ? a : b;
        jc_throw(c, JINJA_ERR_RUNTIME, "'%.*s' is undefined", (int)u->u.s.n, u->u.s.p);
    }
    jc_throw(c, JINJA_ERR_RUNTIME, "unsupported operand type(s) for %s: '%s' and '%s'", op,
             jv_typename(a), jv_typename(b));
}

static JVal repeat(JCtx *c, const JVal *seq, int64_t k) {
    if (k < 0) k = 0;
    /* an empty sequence repeated any number of times is empty (no loop over k) */
    if (seq->t == JV_STR && seq->u.s.n == 0) return jv_strref("", 0);
    if (seq->t == JV_LIST && seq->u.l->n == 0) return jv_list(jl_new(c, 0, seq->u.l->kind));
    if (seq->t == JV_STR) {
        if (seq->u.s.n && (uint64_t)k > c->arena.limit / seq->u.s.n)
            jc_throw(c, JINJA_ERR_LIMIT, "memory limit: a string of more than %zu bytes",
                     c->arena.limit);
        size_t n = seq->u.s.n * (size_t)k;
        char *p = jc_alloc(c, n + 1);
        for (int64_t i = 0; i < k; i++)
            memcpy(p + (size_t)i * seq->u.s.n, seq->u.s.p, seq->u.s.n);
        return jv_strref(p, n);
    }
    const JList *l = seq->u.l;
    if (l->n && (uint64_t)k > c->arena.limit / (l->n * sizeof(JVal)))
        jc_throw(c, JINJA_ERR_LIMIT, "memory limit: a list too long");
    JList *r = jl_new(c, l->n * (size_t)k, l->kind);
    for (int64_t i = 0; i < k; i++)
        for (size_t j = 0; j < l->n; j++)
            jl_push(c, r, l->v[j]);
    return jv_list(r);
}

static JVal int_pow(JCtx *c, int64_t base, int64_t e) {
    if (e < 0) {
        if (base == 0) jc_throw(c, JINJA_ERR_RUNTIME, "0.0 cannot be raised to a negative power");
        return jv_float(pow((double)base, (double)e));
    }
    int64_t r = 1, b = base;
    while (e > 0) {
        if (e & 1)
            if (__builtin_mul_overflow(r, b, &r)) overflow(c);
        e >>= 1;
        if (e > 0 && __builtin_mul_overflow(b, b, &b)) overflow(c);
    }
    return jv_int(r);
}

static JVal float_op(JCtx *c, int op, double x, double y) {
    switch (op) {
    case JOP_ADD:
        return jv_float(x + y);
    case JOP_SUB:
        return jv_float(x - y);
    case JOP_MUL:
        return jv_float(x * y);
    case JOP_DIV:
        if (y == 0) jc_throw(c, JINJA_ERR_RUNTIME, "float division by zero");
        return jv_float(x / y);
    case JOP_FLOORDIV:
    case JOP_MOD: {
        if (y == 0) jc_throw(c, JINJA_ERR_RUNTIME, "float divmod()");
        double m = fmod(x, y), d;
        if (isinf(y) && isfinite(x))
            jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: modulo by an infinity");
        d = (x - m) / y;
        if (m != 0) {
            if ((y < 0) != (m < 0)) {
                m += y;
                d -= 1.0;
            }
        } else {
            m = copysign(0.0, y);
        }
        if (op == JOP_MOD) return jv_float(m);
        double fd = d != 0 ? floor(d) : copysign(0.0, x / y);
        if (d != 0 && d - fd > 0.5) fd += 1.0;
        return jv_float(fd);
    }
    default: {
        if (x == 0 && y < 0)
            jc_throw(c, JINJA_ERR_RUNTIME, "0.0 cannot be raised to a negative power");
        if (x < 0 && y != floor(y) && isfinite(y))
            jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: a complex power");
        double r = pow(x, y);
        if (isinf(r) && isfinite(x) && isfinite(y))
            jc_throw(c, JINJA_ERR_RUNTIME, "(34, 'Numerical result out of range')");
        return jv_float(r);
    }
    }
}

JVal jv_binop(JCtx *c, int op, const JVal *a, const JVal *b) {
    static const char *const names[] = {"", "+", "-", "*", "/", "//", "%", "**"};
    /* Markup (|safe, |e) escapes the other operand of + */
    if ((a->t == JV_STR && a->unsafe) || (b->t == JV_STR && b->unsafe))
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: operator %s on a |safe or |e string",
                 names[op]);
    if (is_intlike(a) && is_intlike(b)) {
        int64_t x = as_int(a), y = as_int(b), r;
        switch (op) {
        case JOP_ADD:
            if (__builtin_add_overflow(x, y, &r)) overflow(c);
            return jv_int(r);
        case JOP_SUB:
            if (__builtin_sub_overflow(x, y, &r)) overflow(c);
            return jv_int(r);
        case JOP_MUL:
            if (__builtin_mul_overflow(x, y, &r)) overflow(c);
            return jv_int(r);
        case JOP_DIV:
            if (y == 0) jc_throw(c, JINJA_ERR_RUNTIME, "division by zero");
            /* exact in doubles up to 2^53; Python rounds larger quotients once, C twice */
            if (x > (1LL << 53) || x < -(1LL << 53) || y > (1LL << 53) || y < -(1LL << 53))
                jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: / of integers above 2**53");
            return jv_float((double)x / (double)y);
        case JOP_FLOORDIV:
        case JOP_MOD: {
            if (y == 0) jc_throw(c, JINJA_ERR_RUNTIME, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) {
                if (op == JOP_MOD) return jv_int(0);
                overflow(c);
            }
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) {
                q -= 1;
                m += y;
            }
            return jv_int(op == JOP_MOD ? m : q);
        }
        case JOP_POW:
            return int_pow(c, x, y);
        }
    }
    if (is_num(a) && is_num(b)) {
        if (op == JOP_DIV && is_intlike(a) && is_intlike(b)) {
        }
        return float_op(c, op, as_float(a), as_float(b));
    }
    if (op == JOP_ADD && a->t == JV_STR && b->t == JV_STR) {
        JBuf buf = {0};
        jb_add(c, &buf, a->u.s.p, a->u.s.n);
        jb_add(c, &buf, b->u.s.p, b->u.s.n);
        return buf.p ? jb_val(&buf) : jv_strref("", 0);
    }
    if (op == JOP_ADD && a->t == JV_LIST && b->t == JV_LIST && a->u.l->kind <= JL_TUPLE &&
        a->u.l->kind == b->u.l->kind) {
        JList *r = jl_new(c, a->u.l->n + b->u.l->n, a->u.l->kind);
        for (size_t i = 0; i < a->u.l->n; i++)
            jl_push(c, r, a->u.l->v[i]);
        for (size_t i = 0; i < b->u.l->n; i++)
            jl_push(c, r, b->u.l->v[i]);
        return jv_list(r);
    }
    if (op == JOP_MUL) {
        const JVal *seq = is_intlike(b) ? a : b, *k = is_intlike(b) ? b : a;
        if (is_intlike(k) &&
            (seq->t == JV_STR || (seq->t == JV_LIST && seq->u.l->kind <= JL_TUPLE)))
            return repeat(c, seq, as_int(k));
    }
    if (op == JOP_MOD && a->t == JV_STR)
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: %% string formatting");
    bad_operands(c, names[op], a, b);
}

JVal jv_unary(JCtx *c, int op, const JVal *a) {
    if (op == JOP_NOT) return jv_bool(!jv_truthy(a));
    if (a->t == JV_FLOAT) return jv_float(op == JOP_NEG ? -a->u.f : a->u.f);
    if (is_intlike(a)) {
        int64_t x = as_int(a);
        if (op == JOP_NEG) {
            if (x == INT64_MIN) overflow(c);
            x = -x;
        }
        return jv_int(x);
    }
    if (a->t == JV_UNDEF)
        jc_throw(c, JINJA_ERR_RUNTIME, "'%.*s' is undefined", (int)a->u.s.n, a->u.s.p);
    jc_throw(c, JINJA_ERR_RUNTIME, "bad operand type for unary %s: '%s'", op == JOP_NEG ? "-" : "+",
             jv_typename(a));
}

JList *jv_iterate(JCtx *c, const JVal *v) {
    switch (v->t) {
    case JV_UNDEF:
        return jl_new(c, 0, JL_LIST);
    case JV_STR: {
        JList *l = jl_new(c, v->u.s.n, JL_LIST);
        for (size_t i = 0; i < v->u.s.n;) {
            size_t adv;
            ju_decode(v->u.s.p + i, v->u.s.n - i, &adv);
            jl_push(c, l, jv_strref(v->u.s.p + i, adv));
            i += adv;
        }
        return l;
    }
    case JV_LIST: {
        JList *src = v->u.l;
        if (src->kind != JL_GEN) return src;
        JList *l = jl_new(c, src->n - src->pos, JL_LIST);
        for (size_t i = src->pos; i < src->n; i++)
            jl_push(c, l, src->v[i]);
        src->pos = src->n;
        return l;
    }
    case JV_DICT: {
        JList *l = jl_new(c, v->u.d->n, JL_LIST);
        for (size_t i = 0; i < v->u.d->n; i++)
            jl_push(c, l, v->u.d->k[i]);
        return l;
    }
    default:
        jc_throw(c, JINJA_ERR_RUNTIME, "'%s' object is not iterable", jv_typename(v));
    }
}

int64_t jv_pylen(JCtx *c, const JVal *v) {
    switch (v->t) {
    case JV_UNDEF:
        return 0;
    case JV_STR:
        jc_work(c, v->u.s.n);
        return (int64_t)ju_count(v->u.s.p, v->u.s.n);
    case JV_LIST:
        if (v->u.l->kind == JL_GEN) break;
        return (int64_t)v->u.l->n;
    case JV_DICT:
        return (int64_t)v->u.d->n;
    default:
        break;
    }
    jc_throw(c, JINJA_ERR_RUNTIME, "object of type '%s' has no len()", jv_typename(v));
}

int jv_contains(JCtx *c, const JVal *hay, const JVal *x) {
    switch (hay->t) {
    case JV_STR:
        if (x->t != JV_STR)
            jc_throw(c, JINJA_ERR_RUNTIME, "'in <string>' requires string as left operand, not %s",
                     jv_typename(x));
        if (x->u.s.n == 0) return 1;
        if (x->u.s.n > hay->u.s.n) return 0;
        jc_work(c, hay->u.s.n);
        return memmem(hay->u.s.p, hay->u.s.n, x->u.s.p, x->u.s.n) != NULL;
    case JV_DICT:
        return jd_get(c, hay->u.d, *x) != NULL;
    case JV_LIST:
        if (hay->u.l->kind == JL_GEN) {
            JList *l = hay->u.l;
            while (l->pos < l->n)
                if (jv_eq(c, &l->v[l->pos++], x)) return 1;
            return 0;
        }
        jc_work(c, hay->u.l->n * JC_ELEM);
        for (size_t i = 0; i < hay->u.l->n; i++)
            if (jv_eq(c, &hay->u.l->v[i], x)) return 1;
        return 0;
    case JV_UNDEF:
        return 0;
    default:
        jc_throw(c, JINJA_ERR_RUNTIME, "argument of type '%s' is not iterable", jv_typename(hay));
    }
}
