/* The Jinja evaluator: statements write to the render's output (or to a capture for
 * macros, block sets and filter blocks), expressions evaluate to values with Jinja2's
 * scoping (a for body and a macro get their own scope, if does not), its attribute and item
 * lookup (sandboxed), macros with defaults, keyword arguments and caller(), and the step,
 * depth and output bounds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_int.h"

static void exec_body(JCtx *c, JScope *sc, const JNode *body);

static void step(JCtx *c, const JNode *n) {
    c->line = n->line;
    if (++c->steps > c->max_steps)
        jc_throw(c, JINJA_ERR_LIMIT, "step limit: more than %llu evaluation steps",
                 (unsigned long long)c->max_steps);
}

static void enter(JCtx *c) {
    if (++c->depth > JCTX_MAX_DEPTH)
        jc_throw(c, JINJA_ERR_LIMIT, "recursion limit: evaluation nested more than %d deep",
                 JCTX_MAX_DEPTH);
}

static void out_write(JCtx *c, const char *s, size_t n) {
    if (n == 0) return;
    if (n > c->max_output - c->len)
        jc_throw(c, JINJA_ERR_LIMIT, "output limit: more than %zu bytes", c->max_output);
    if (c->cap - c->len < n + 1) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap - c->len < n + 1)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) jc_throw(c, JINJA_ERR_LIMIT, "out of memory for the output");
        c->out = p;
        c->cap = cap;
    }
    memcpy(c->out + c->len, s, n);
    c->len += n;
    c->out[c->len] = 0;
}

static JVal undef_fmt(JCtx *c, const char *fmt, const char *a, size_t an, const char *b) {
    char buf[400];
    snprintf(buf, sizeof buf, fmt, (int)(an > 100 ? 100 : an), a, b ? b : "");
    JVal s = jv_str(c, buf, strlen(buf));
    return jv_undef(s.u.s.p);
}

_Noreturn static void undefined_error(JCtx *c, const JVal *u) {
    if (u->unsafe) jc_throw(c, JINJA_ERR_RUNTIME, "%.*s", (int)u->u.s.n, u->u.s.p);
    jc_throw(c, JINJA_ERR_RUNTIME, "%.*s", (int)u->u.s.n, u->u.s.p);
}

/* ---- scopes ----------------------------------------------------------------------------- */

static JScope *scope_new(JCtx *c, JScope *parent) {
    JScope *s = jc_alloc(c, sizeof *s);
    s->parent = parent;
    return s;
}

static void scope_set(JCtx *c, JScope *sc, JStr name, JVal v) {
    jd_set(c, &sc->vars, jv_strref(name.p, name.n), v);
}

static JVal lookup(JCtx *c, JScope *sc, JStr name) {
    for (; sc; sc = sc->parent) {
        JVal *v = jd_gets(&sc->vars, name.p, name.n);
        if (v) return *v;
    }
    JVal *v = jd_gets(&c->vars, name.p, name.n);
    if (v) return *v;
    JVal g = jb_global(c, name.p, name.n);
    if (g.t != JV_UNDEF) return g;
    return undef_fmt(c, "'%.*s' is undefined%s", name.p, name.n, NULL);
}

/* ---- attribute and item lookup ---------------------------------------------------------- */

static JVal loop_attr(JCtx *c, JVal *self, const char *name, size_t n) {
    JLoop *l = self->u.loop;
    int64_t len = (int64_t)l->items->n, i = (int64_t)l->i;
#define IS(s) (n == strlen(s) && memcmp(name, s, n) == 0)
    if (IS("index")) return jv_int(i + 1);
    if (IS("index0")) return jv_int(i);
    if (IS("revindex")) return jv_int(len - i);
    if (IS("revindex0")) return jv_int(len - i - 1);
    if (IS("first")) return jv_bool(i == 0);
    if (IS("last")) return jv_bool(i == len - 1);
    if (IS("length")) return jv_int(len);
    if (IS("depth")) return jv_int(1);
    if (IS("depth0")) return jv_int(0);
    if (IS("previtem")) return i > 0 ? l->items->v[i - 1] : jv_undef("there is no previous item");
    if (IS("nextitem")) return i + 1 < len ? l->items->v[i + 1] : jv_undef("there is no next item");
    if (IS("cycle")) {
        JFunc *f = jc_alloc(c, sizeof *f);
        f->kind = JF_LOOP_CYCLE;
        f->name = "cycle";
        f->self = *self;
        JVal v = {0};
        v.t = JV_FUNC;
        v.u.fn = f;
        return v;
    }
    if (IS("changed")) jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: loop.changed");
#undef IS
    return undef_fmt(c, "'LoopContext object' has no attribute '%.*s'%s", name, n, NULL);
}

JVal je_getattr(JCtx *c, const JVal *obj, const char *name, size_t n) {
    if (obj->t == JV_UNDEF) undefined_error(c, obj);
    if (n >= 2 && name[0] == '_' && name[1] == '_')
        jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: attribute '%.*s'", (int)(n > 60 ? 60 : n),
                 name);
    switch (obj->t) {
    case JV_DICT: {
        jc_work(c, obj->u.d->n);
        JVal m = jb_method(c, obj, name, n);
        if (m.t != JV_UNDEF || m.unsafe) return m;
        JVal *v = jd_gets(obj->u.d, name, n);
        if (v) return *v;
        return undef_fmt(c, "'dict object' has no attribute '%.*s'%s", name, n, NULL);
    }
    case JV_NS: {
        JVal *v = jd_gets(obj->u.d, name, n);
        if (v) return *v;
        return undef_fmt(c, "'Namespace object' has no attribute '%.*s'%s", name, n, NULL);
    }
    case JV_LOOP:
        return loop_attr(c, (JVal *)obj, name, n);
    case JV_MACRO: {
        /* Jinja's Macro object attributes: refused; any other name is undefined */
        static const char *const attrs[] = {
            "name",          "arguments", "defaults",        "catch_kwargs",
            "catch_varargs", "caller",    "explicit_caller", NULL};
        for (int i = 0; attrs[i]; i++)
            if (strlen(attrs[i]) == n && memcmp(attrs[i], name, n) == 0)
                jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: attribute '%s' of a macro",
                         attrs[i]);
        break;
    }
    case JV_FUNC: /* a builtin function has no attributes but dunder ones */
    case JV_NONE:
        break;
    default: {
        JVal m = jb_method(c, obj, name, n);
        if (m.t != JV_UNDEF || m.unsafe) return m;
    }
    }
    char tn[64];
    snprintf(tn, sizeof tn, "'%s object' has no attribute", jv_typename(obj));
    return undef_fmt(c, "%.*s '%s'", tn, strlen(tn), jv_str(c, name, n).u.s.p);
}

static int64_t idx_of(const JVal *k) {
    return k->t == JV_BOOL ? k->u.b : k->u.i;
}

JVal je_getitem(JCtx *c, const JVal *obj, const JVal *key) {
    if (obj->t == JV_UNDEF) undefined_error(c, obj);
    int intkey = key->t == JV_INT || key->t == JV_BOOL;
    if (obj->t == JV_DICT) {
        if (jv_hashable(c, key)) {
            JVal *v = jd_get(c, obj->u.d, *key);
            if (v) return *v;
        }
    } else if (obj->t == JV_LIST && obj->u.l->kind <= JL_TUPLE && intkey) {
        int64_t i = idx_of(key), n = (int64_t)obj->u.l->n;
        if (i < 0) i += n;
        if (i >= 0 && i < n) return obj->u.l->v[i];
        return jv_undef("list index out of range");
    } else if (obj->t == JV_STR && intkey) {
        jc_work(c, obj->u.s.n);
        int64_t i = idx_of(key), n = (int64_t)ju_count(obj->u.s.p, obj->u.s.n);
        if (i < 0) i += n;
        if (i >= 0 && i < n) {
            size_t a = ju_offset(obj->u.s.p, obj->u.s.n, (size_t)i);
            size_t b = ju_offset(obj->u.s.p, obj->u.s.n, (size_t)i + 1);
            return jv_strref(obj->u.s.p + a, b - a);
        }
        return jv_undef("string index out of range");
    }
    if (key->t == JV_STR && obj->t != JV_NONE) {
        if (key->u.s.n >= 2 && key->u.s.p[0] == '_' && key->u.s.p[1] == '_')
            jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: attribute '__...'");
        if (obj->t == JV_NS || obj->t == JV_LOOP) return je_getattr(c, obj, key->u.s.p, key->u.s.n);
        if (obj->t != JV_MACRO && obj->t != JV_FUNC) {
            JVal m = jb_method(c, obj, key->u.s.p, key->u.s.n);
            if (m.t != JV_UNDEF || m.unsafe) return m;
        }
    }
    return jv_undef("no such item");
}

/* Python's slice index adjustment (PySlice_AdjustIndices). */
static void slice_bounds(JCtx *c, int64_t len, const JVal *a, const JVal *b, const JVal *s,
                         int64_t *start, int64_t *stop, int64_t *stepv) {
    int64_t st = 1;
    if (s && s->t != JV_NONE) st = idx_of(s);
    if (st == 0) jc_throw(c, JINJA_ERR_RUNTIME, "slice step cannot be zero");
    if (st == INT64_MIN) st = -INT64_MAX;
    int64_t lo = 0, hi = len;
    if (st < 0) lo = -1, hi = len - 1;
    int64_t x = st < 0 ? hi : lo, y = st < 0 ? lo : hi;
    if (a && a->t != JV_NONE) {
        x = idx_of(a);
        if (x < 0) {
            x = x < -len ? lo : x + len;
            if (x < 0) x = lo;
        } else if (x >= len)
            x = hi;
    }
    if (b && b->t != JV_NONE) {
        y = idx_of(b);
        if (y < 0) {
            y = y < -len ? lo : y + len;
            if (y < 0) y = lo;
        } else if (y >= len)
            y = hi;
    }
    *start = x;
    *stop = y;
    *stepv = st;
}

static int slice_arg_ok(const JVal *v) {
    return !v || v->t == JV_NONE || v->t == JV_INT || v->t == JV_BOOL;
}

static JVal do_slice(JCtx *c, const JVal *obj, const JVal *a, const JVal *b, const JVal *s) {
    if (obj->t == JV_UNDEF) undefined_error(c, obj);
    /* Jinja compiles a slice to Python's own subscription: no undefined fallback */
    if (!slice_arg_ok(a) || !slice_arg_ok(b) || !slice_arg_ok(s))
        jc_throw(c, JINJA_ERR_RUNTIME,
                 "slice indices must be integers or None or have an __index__ method");
    int64_t x, y, st;
    if (obj->t == JV_LIST && obj->u.l->kind <= JL_TUPLE) {
        const JList *l = obj->u.l;
        slice_bounds(c, (int64_t)l->n, a, b, s, &x, &y, &st);
        JList *r = jl_new(c, 0, l->kind);
        for (int64_t i = x; st > 0 ? i < y : i > y; i += st) {
            jl_push(c, r, l->v[i]);
            if ((st > 0 && i > INT64_MAX - st) || (st < 0 && i < INT64_MIN - st)) break;
        }
        return jv_list(r);
    }
    if (obj->t == JV_STR) {
        const char *p = obj->u.s.p;
        size_t n = obj->u.s.n, cnt = ju_count(p, n);
        jc_work(c, n);
        size_t *off = NULL;
        if (cnt != n) {
            off = jc_alloc(c, (cnt + 1) * sizeof *off);
            size_t k = 0;
            for (size_t i = 0; i < n; i++)
                if (((unsigned char)p[i] & 0xC0) != 0x80) off[k++] = i;
            off[cnt] = n;
        }
        slice_bounds(c, (int64_t)cnt, a, b, s, &x, &y, &st);
        if (st == 1) {
            if (y <= x) return jv_strref("", 0);
            size_t bx = off ? off[x] : (size_t)x, by = off ? off[y] : (size_t)y;
            return jv_strref(p + bx, by - bx);
        }
        JBuf buf = {0};
        for (int64_t i = x; st > 0 ? i < y : i > y; i += st) {
            size_t bx = off ? off[i] : (size_t)i, by = off ? off[i + 1] : (size_t)i + 1;
            jb_add(c, &buf, p + bx, by - bx);
            if ((st > 0 && i > INT64_MAX - st) || (st < 0 && i < INT64_MIN - st)) break;
        }
        return buf.p ? jb_val(&buf) : jv_strref("", 0);
    }
    if (obj->t == JV_DICT) jc_throw(c, JINJA_ERR_RUNTIME, "unhashable type: 'slice'");
    jc_throw(c, JINJA_ERR_RUNTIME, "'%s' object is not subscriptable", jv_typename(obj));
}

/* ---- calls ------------------------------------------------------------------------------ */

static JVal capture_end(JCtx *c, size_t mark) {
    JVal s = jv_str(c, c->out ? c->out + mark : "", c->len - mark);
    c->len = mark;
    if (c->out) c->out[c->len] = 0;
    c->capture--;
    return s;
}

static JVal call_macro(JCtx *c, JMacro *m, JVal *args, size_t nargs, JVal *kwv, JStr *kwn,
                       size_t nkw) {
    const JNode *d = m->def;
    const char *mname = d->kind == JN_MACRO ? "macro" : "caller";
    JScope *sc = scope_new(c, m->closure);
    size_t np = d->nkids;
    if (nargs > np && !(d->flags & 1))
        jc_throw(c, JINJA_ERR_RUNTIME, "%s '%.*s' takes not more than %zu argument(s)", mname,
                 (int)d->s.n, d->s.p, np);
    int *used = nkw ? jc_alloc(c, nkw * sizeof *used) : NULL;
    for (size_t i = 0; i < np; i++) {
        JStr pn = d->kids[i]->s;
        JVal v;
        int have = 0;
        if (i < nargs) {
            v = args[i];
            have = 1;
        }
        for (size_t k = 0; k < nkw; k++)
            if (kwn[k].n == pn.n && memcmp(kwn[k].p, pn.p, pn.n) == 0) {
                if (have)
                    jc_throw(c, JINJA_ERR_RUNTIME, "macro got multiple values for argument '%.*s'",
                             (int)pn.n, pn.p);
                v = kwv[k];
                used[k] = 1;
                have = 1;
            }
        if (!have) {
            if (d->kids2[i])
                v = je_eval(c, sc, d->kids2[i]);
            else
                v = undef_fmt(c, "parameter '%.*s' was not provided%s", pn.p, pn.n, NULL);
        }
        scope_set(c, sc, pn, v);
    }
    if (d->flags & 1) {
        JList *va = jl_new(c, 0, JL_TUPLE);
        for (size_t i = np; i < nargs; i++)
            jl_push(c, va, args[i]);
        JStr nm = {"varargs", 7};
        scope_set(c, sc, nm, jv_list(va));
    }
    JDict *kw = jd_new(c);
    for (size_t k = 0; k < nkw; k++) {
        if (used[k]) continue;
        if (!(d->flags & 2))
            jc_throw(c, JINJA_ERR_RUNTIME, "%s '%.*s' takes no keyword argument '%.*s'", mname,
                     (int)d->s.n, d->s.p, (int)kwn[k].n, kwn[k].p);
        jd_set(c, kw, jv_strref(kwn[k].p, kwn[k].n), kwv[k]);
    }
    if (d->flags & 2) {
        JStr nm = {"kwargs", 6};
        scope_set(c, sc, nm, jv_dict(kw));
    }
    if (m->caller.t == JV_MACRO) {
        JStr nm = {"caller", 6};
        scope_set(c, sc, nm, m->caller);
    }
    size_t mark = c->len;
    c->capture++;
    int saved_ctl = c->ctl;
    exec_body(c, sc, d->b);
    c->ctl = saved_ctl;
    return capture_end(c, mark);
}

JVal je_call_value(JCtx *c, const JVal *f, JVal *args, size_t nargs, JVal *kwv, JStr *kwn,
                   size_t nkw) {
    switch (f->t) {
    case JV_MACRO:
        return call_macro(c, f->u.m, args, nargs, kwv, kwn, nkw);
    case JV_FUNC:
        return jb_call_func(c, f->u.fn, args, nargs, kwv, kwn, nkw);
    case JV_UNDEF:
        undefined_error(c, f);
    default:
        jc_throw(c, JINJA_ERR_RUNTIME, "'%s' object is not callable", jv_typename(f));
    }
}

typedef struct {
    JVal *args, *kwv;
    JStr *kwn;
    size_t nargs, nkw;
} Args;

static Args eval_args(JCtx *c, JScope *sc, const JNode *n) {
    Args a = {0};
    a.nargs = n->nkids;
    a.nkw = n->nkids2;
    if (a.nargs) a.args = jc_alloc(c, a.nargs * sizeof(JVal));
    if (a.nkw) a.kwv = jc_alloc(c, a.nkw * sizeof(JVal));
    for (size_t i = 0; i < a.nargs; i++)
        a.args[i] = je_eval(c, sc, n->kids[i]);
    for (size_t i = 0; i < a.nkw; i++)
        a.kwv[i] = je_eval(c, sc, n->kids2[i]);
    a.kwn = n->names;
    return a;
}

/* A call expression; a call block passes its caller. */
static JVal eval_call(JCtx *c, JScope *sc, const JNode *n, const JVal *caller) {
    JVal f = je_eval(c, sc, n->a);
    Args a = eval_args(c, sc, n);
    c->line = n->line;
    if (caller) {
        if (f.t != JV_MACRO)
            jc_throw(c, JINJA_ERR_UNSUPPORTED, "unsupported: a call block of a non-macro");
        if (f.u.m->def->kind == JN_MACRO && !(f.u.m->def->flags & 4))
            jc_throw(c, JINJA_ERR_RUNTIME,
                     "macro '%.*s' was invoked with two values for the special caller argument",
                     (int)f.u.m->def->s.n, f.u.m->def->s.p);
        JMacro *m = jc_alloc(c, sizeof *m);
        *m = *f.u.m;
        m->caller = *caller;
        f.u.m = m;
    }
    return je_call_value(c, &f, a.args, a.nargs, a.kwv, a.kwn, a.nkw);
}

/* ---- expressions ------------------------------------------------------------------------ */

static JVal eval_compare(JCtx *c, JScope *sc, const JNode *n) {
    JVal left = je_eval(c, sc, n->a);
    for (size_t i = 0; i < n->nkids; i++) {
        JVal right = je_eval(c, sc, n->kids[i]);
        c->line = n->line;
        int r;
        switch (n->ops[i]) {
        case JOP_EQ:
            r = jv_eq(c, &left, &right);
            break;
        case JOP_NE:
            r = !jv_eq(c, &left, &right);
            break;
        case JOP_LT:
            r = jv_cmp(c, &left, &right) < 0;
            break;
        case JOP_LE:
            r = jv_cmp(c, &left, &right) <= 0;
            break;
        case JOP_GT:
            r = jv_cmp(c, &left, &right) > 0;
            break;
        case JOP_GE:
            r = jv_cmp(c, &left, &right) >= 0;
            break;
        case JOP_IN:
            r = jv_contains(c, &right, &left);
            break;
        default:
            r = !jv_contains(c, &right, &left);
            break;
        }
        if (!r) return jv_bool(0);
        left = right;
    }
    return jv_bool(1);
}

static JVal eval_filter(JCtx *c, JScope *sc, const JNode *n, JVal in) {
    Args a = eval_args(c, sc, n);
    c->line = n->line;
    return jb_filter(c, n->fid, in, a.args, a.nargs, a.kwv, a.kwn, a.nkw);
}

JVal je_eval(JCtx *c, JScope *sc, const JNode *n) {
    step(c, n);
    enter(c);
    JVal r;
    switch (n->kind) {
    case JN_CONST:
        r = n->val;
        break;
    case JN_NAME:
        r = lookup(c, sc, n->s);
        break;
    case JN_LISTLIT:
    case JN_TUPLELIT: {
        JList *l = jl_new(c, n->nkids, n->kind == JN_LISTLIT ? JL_LIST : JL_TUPLE);
        for (size_t i = 0; i < n->nkids; i++)
            jl_push(c, l, je_eval(c, sc, n->kids[i]));
        r = jv_list(l);
        break;
    }
    case JN_DICTLIT: {
        JDict *d = jd_new(c);
        for (size_t i = 0; i < n->nkids; i++) {
            JVal k = je_eval(c, sc, n->kids[i]), v = je_eval(c, sc, n->kids2[i]);
            c->line = n->line;
            jd_set(c, d, k, v);
        }
        r = jv_dict(d);
        break;
    }
    case JN_GETATTR: {
        JVal o = je_eval(c, sc, n->a);
        c->line = n->line;
        r = je_getattr(c, &o, n->s.p, n->s.n);
        break;
    }
    case JN_GETITEM: {
        JVal o = je_eval(c, sc, n->a), k = je_eval(c, sc, n->b);
        c->line = n->line;
        r = je_getitem(c, &o, &k);
        break;
    }
    case JN_SLICE: {
        JVal o = je_eval(c, sc, n->a), v[3];
        const JNode *parts[3] = {n->b, n->c, n->d};
        for (int i = 0; i < 3; i++)
            v[i] = parts[i] ? je_eval(c, sc, parts[i]) : jv_none();
        c->line = n->line;
        /* Jinja folds an all-constant subscription at compile time through the sandbox's
         * getitem, whose failure is an undefined rather than an error */
        int folded = n->a->kind == JN_CONST;
        for (int i = 0; i < 3; i++)
            folded &= !parts[i] || parts[i]->kind == JN_CONST;
        if (folded && (o.t == JV_STR || o.t == JV_LIST))
            for (int i = 0; i < 3; i++)
                if (v[i].t != JV_NONE && v[i].t != JV_INT && v[i].t != JV_BOOL) folded = 2;
        r = folded == 2 ? jv_undef("no such item") : do_slice(c, &o, &v[0], &v[1], &v[2]);
        break;
    }
    case JN_CALL:
        r = eval_call(c, sc, n, NULL);
        break;
    case JN_FILTER:
        r = eval_filter(c, sc, n, je_eval(c, sc, n->a));
        break;
    case JN_TEST: {
        JVal in = je_eval(c, sc, n->a);
        Args a = eval_args(c, sc, n);
        c->line = n->line;
        int t = jb_test(c, n->fid, &in, a.args, a.nargs);
        r = jv_bool(n->flags & 1 ? !t : t);
        break;
    }
    case JN_BINOP: {
        JVal a = je_eval(c, sc, n->a), b = je_eval(c, sc, n->b);
        c->line = n->line;
        r = jv_binop(c, n->op, &a, &b);
        break;
    }
    case JN_UNARY: {
        JVal a = je_eval(c, sc, n->a);
        c->line = n->line;
        r = jv_unary(c, n->op, &a);
        break;
    }
    case JN_AND:
    case JN_OR: {
        JVal a = je_eval(c, sc, n->a);
        int t = jv_truthy(&a);
        r = (n->kind == JN_AND ? !t : t) ? a : je_eval(c, sc, n->b);
        break;
    }
    case JN_COMPARE:
        r = eval_compare(c, sc, n);
        break;
    case JN_CONCAT: {
        JBuf b = {0};
        for (size_t i = 0; i < n->nkids; i++) {
            JVal v = je_eval(c, sc, n->kids[i]);
            c->line = n->line;
            jv_write_str(c, &b, &v);
        }
        r = b.p ? jb_val(&b) : jv_strref("", 0);
        break;
    }
    case JN_CONDEXPR: {
        JVal t = je_eval(c, sc, n->a);
        if (jv_truthy(&t))
            r = je_eval(c, sc, n->b);
        else if (n->c)
            r = je_eval(c, sc, n->c);
        else
            r = jv_undef("the inline if-expression evaluated to false and no else section was "
                         "defined.");
        break;
    }
    default:
        jc_throw(c, JINJA_ERR_SYNTAX, "not an expression");
    }
    c->depth--;
    return r;
}

/* ---- statements ------------------------------------------------------------------------- */

static void assign(JCtx *c, JScope *sc, const JNode *target, JVal v) {
    if (target->kind == JN_NAME) {
        scope_set(c, sc, target->s, v);
        return;
    }
    JList *items = jv_iterate(c, &v);
    if (items->n != target->nkids)
        jc_throw(c, JINJA_ERR_RUNTIME, "%s values to unpack (expected %zu, got %zu)",
                 items->n > target->nkids ? "too many" : "not enough", target->nkids, items->n);
    for (size_t i = 0; i < target->nkids; i++)
        assign(c, sc, target->kids[i], items->v[i]);
}

static void exec_set(JCtx *c, JScope *sc, const JNode *target, JVal v) {
    if (target->kind == JN_GETATTR) {
        JVal ns = lookup(c, sc, target->a->s);
        if (ns.t != JV_NS)
            jc_throw(c, JINJA_ERR_RUNTIME, "cannot assign attribute on non-namespace object");
        jd_set(c, ns.u.d, jv_strref(target->s.p, target->s.n), v);
        return;
    }
    assign(c, sc, target, v);
}

/* The filters of a block set / filter block: f is the last of the chain (f->a the one
 * before, NULL at the start). */
static JVal apply_filters(JCtx *c, JScope *sc, const JNode *f, JVal v) {
    if (!f) return v;
    enter(c);
    v = apply_filters(c, sc, f->a, v);
    v = eval_filter(c, sc, f, v);
    c->depth--;
    return v;
}

static void exec_for(JCtx *c, JScope *sc, const JNode *n) {
    JVal it = je_eval(c, sc, n->b);
    c->line = n->line;
    JList *items = jv_iterate(c, &it);
    JScope *is = scope_new(c, sc);
    if (n->e) {
        JList *kept = jl_new(c, 0, JL_LIST);
        for (size_t i = 0; i < items->n; i++) {
            is->vars.n = 0;
            assign(c, is, n->a, items->v[i]);
            JVal t = je_eval(c, is, n->e);
            if (jv_truthy(&t)) jl_push(c, kept, items->v[i]);
        }
        items = kept;
    }
    if (items->n == 0) {
        if (n->d) exec_body(c, scope_new(c, sc), n->d);
        return;
    }
    JLoop *lp = jc_alloc(c, sizeof *lp);
    lp->items = items;
    JVal lv = {0};
    lv.t = JV_LOOP;
    lv.u.loop = lp;
    JStr loopname = {"loop", 4};
    for (size_t i = 0; i < items->n; i++) {
        step(c, n); /* an iteration is a step even when the body is empty */
        lp->i = i;
        is->vars.n = 0;
        assign(c, is, n->a, items->v[i]);
        scope_set(c, is, loopname, lv);
        exec_body(c, is, n->c);
        int ctl = c->ctl;
        c->ctl = 0;
        if (ctl == 1) break;
    }
}

static void exec_stmt(JCtx *c, JScope *sc, const JNode *n) {
    step(c, n);
    enter(c);
    switch (n->kind) {
    case JN_DATA:
        out_write(c, n->s.p, n->s.n);
        break;
    case JN_OUTPUT: {
        JVal v = je_eval(c, sc, n->a);
        c->line = n->line;
        char buf[64];
        const char *sc_str = jv_scalar_str(&v, buf);
        if (v.t == JV_STR) {
            out_write(c, v.u.s.p, v.u.s.n);
        } else if (sc_str) { /* no arena garbage for numbers printed in a loop */
            out_write(c, sc_str, strlen(sc_str));
        } else {
            JBuf b = {0};
            jv_write_str(c, &b, &v);
            out_write(c, b.p, b.n);
        }
        break;
    }
    case JN_IF: {
        const JNode *x = n;
        while (x && x->kind == JN_IF) {
            JVal t = je_eval(c, sc, x->a);
            if (jv_truthy(&t)) {
                exec_body(c, sc, x->b);
                x = NULL;
                break;
            }
            x = x->c;
        }
        if (x) exec_body(c, sc, x);
        break;
    }
    case JN_FOR:
        exec_for(c, sc, n);
        break;
    case JN_SET: {
        JVal v = je_eval(c, sc, n->b);
        c->line = n->line;
        exec_set(c, sc, n->a, v);
        break;
    }
    case JN_SETBLOCK:
    case JN_FILTERBLOCK: {
        size_t mark = c->len;
        c->capture++;
        exec_body(c, sc, n->b);
        JVal v = capture_end(c, mark);
        c->line = n->line;
        v = apply_filters(c, sc, n->c, v);
        if (n->kind == JN_SETBLOCK) {
            exec_set(c, sc, n->a, v);
        } else {
            JVal s = jv_to_str(c, &v);
            out_write(c, s.u.s.p, s.u.s.n);
        }
        break;
    }
    case JN_MACRO: {
        JMacro *m = jc_alloc(c, sizeof *m);
        m->def = n;
        m->closure = sc;
        JVal v = {0};
        v.t = JV_MACRO;
        v.u.m = m;
        scope_set(c, sc, n->s, v);
        break;
    }
    case JN_CALLBLOCK: {
        JMacro *m = jc_alloc(c, sizeof *m);
        m->def = n;
        m->closure = sc;
        JVal caller = {0};
        caller.t = JV_MACRO;
        caller.u.m = m;
        JVal r = eval_call(c, sc, n->a, &caller);
        JVal s = jv_to_str(c, &r);
        out_write(c, s.u.s.p, s.u.s.n);
        break;
    }
    case JN_WITH: {
        JScope *ws = scope_new(c, sc);
        JVal *vals = n->nkids ? jc_alloc(c, n->nkids * sizeof *vals) : NULL;
        for (size_t i = 0; i < n->nkids; i++)
            vals[i] = je_eval(c, sc, n->kids2[i]);
        for (size_t i = 0; i < n->nkids; i++)
            assign(c, ws, n->kids[i], vals[i]);
        exec_body(c, ws, n->b);
        break;
    }
    case JN_BREAK:
        c->ctl = 1;
        break;
    case JN_CONTINUE:
        c->ctl = 2;
        break;
    case JN_GENERATION: {
        if (c->capture)
            jc_throw(c, JINJA_ERR_UNSUPPORTED,
                     "unsupported: {%% generation %%} inside a macro, call or block set");
        size_t start = c->len;
        exec_body(c, scope_new(c, sc), n->b);
        if (c->ngen == c->capgen) {
            size_t cap = c->capgen ? c->capgen * 2 : 16;
            JinjaSpan *g = realloc(c->gen, cap * sizeof *g);
            if (!g) jc_throw(c, JINJA_ERR_LIMIT, "out of memory for the generation spans");
            c->gen = g;
            c->capgen = cap;
        }
        c->gen[c->ngen].start = start;
        c->gen[c->ngen].end = c->len;
        c->ngen++;
        break;
    }
    case JN_BODY:
        exec_body(c, sc, n);
        break;
    default:
        jc_throw(c, JINJA_ERR_SYNTAX, "not a statement");
    }
    c->depth--;
}

static void exec_body(JCtx *c, JScope *sc, const JNode *body) {
    if (body->kind != JN_BODY) {
        exec_stmt(c, sc, body);
        return;
    }
    for (size_t i = 0; i < body->nkids && !c->ctl; i++)
        exec_stmt(c, sc, body->kids[i]);
}

void je_render(JCtx *c, const JNode *root) {
    exec_body(c, c->top, root);
}
