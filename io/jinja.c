/* The public entry points of the Jinja engine (io/jinja.h): compile (UTF-8 check, Jinja's
 * newline normalisation, parse) and render (variables from JSON, bounds, the error exit). */
#include <stdlib.h>
#include <string.h>

#include "jinja_int.h"

#define JINJA_DEFAULT_OUTPUT ((size_t)64 << 20)
#define JINJA_DEFAULT_STEPS 100000000ull
#define JINJA_COMPILE_MEMORY ((size_t)256 << 20)

JinjaTemplate *jinja_compile(const char *src, size_t len, JinjaErr *kind_arg, ErrStatus *st) {
    JinjaErr dummy;
    JinjaErr *volatile kind = kind_arg ? kind_arg : &dummy;
    *kind = JINJA_OK;
    err_status_ok(st);
    size_t valid = ju_valid(src, len);
    if (valid < len) {
        int line = 1;
        for (size_t i = 0; i < valid; i++)
            line += src[i] == '\n';
        *kind = JINJA_ERR_SYNTAX;
        err_status_set(st, "line %d: invalid UTF-8 at byte %zu", line, valid);
        return NULL;
    }
    JinjaTemplate *t = calloc(1, sizeof *t);
    if (!t) {
        *kind = JINJA_ERR_LIMIT;
        err_status_set(st, "line 0: out of memory");
        return NULL;
    }
    t->arena.limit = JINJA_COMPILE_MEMORY;
    JErr e;
    e.st = st;
    e.kind = JINJA_OK;
    if (setjmp(e.jb)) {
        *kind = e.kind;
        jinja_free(t);
        return NULL;
    }
    /* Jinja2 splits the source on \r\n, \r, \n, joins with \n, and drops one trailing
     * newline (keep_trailing_newline is off) */
    char *norm = ja_alloc_raw(&t->arena, len + 1);
    if (!norm) jerr_throw(&e, JINJA_ERR_LIMIT, 0, "template too large");
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            norm[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            norm[n++] = src[i];
        }
    }
    if (n > 0 && norm[n - 1] == '\n') n--;
    norm[n] = 0;
    jparse_template(t, norm, n, &e);
    return t;
}

void jinja_free(JinjaTemplate *t) {
    if (!t) return;
    ja_free(&t->arena);
    free(t);
}

int jinja_has_generation(const JinjaTemplate *t) {
    return t && t->has_generation;
}

void jinja_output_free(JinjaOutput *out) {
    if (!out) return;
    free(out->text);
    free(out->gen);
    memset(out, 0, sizeof *out);
}

int jinja_render(const JinjaTemplate *t, const json_t *vars, const JinjaLimits *lim,
                 JinjaOutput *out, JinjaErr *kind_arg, ErrStatus *st) {
    JinjaErr dummy;
    JinjaErr *volatile kind = kind_arg ? kind_arg : &dummy;
    *kind = JINJA_OK;
    err_status_ok(st);
    memset(out, 0, sizeof *out);
    JCtx *c = calloc(1, sizeof *c);
    if (!c) {
        *kind = JINJA_ERR_LIMIT;
        err_status_set(st, "line 0: out of memory");
        return 0;
    }
    c->max_output = lim && lim->max_output ? lim->max_output : JINJA_DEFAULT_OUTPUT;
    c->max_steps = lim && lim->max_steps ? lim->max_steps : JINJA_DEFAULT_STEPS;
    c->now = lim ? lim->now : -1;
    /* everything a render allocates besides the output: a bound so that a template cannot
     * exhaust memory with strings or lists it never prints */
    c->arena.limit = c->max_output > ((size_t)16 << 20) ? 4 * c->max_output : (size_t)64 << 20;
    c->err.st = st;
    if (setjmp(c->err.jb)) {
        *kind = c->err.kind;
        free(c->out);
        free(c->gen);
        ja_free(&c->arena);
        free(c);
        return 0;
    }
    if (vars && !json_is_object(vars))
        jc_throw(c, JINJA_ERR_RUNTIME, "the variables must be a JSON object");
    if (vars) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)vars, k, v) {
            jd_set(c, &c->vars, jv_strref(k, strlen(k)), jv_from_json(c, v));
        }
    }
    c->top = jc_alloc(c, sizeof *c->top);
    je_render(c, t->root);
    if (!c->out) {
        c->out = malloc(1);
        if (!c->out) jc_throw(c, JINJA_ERR_LIMIT, "out of memory");
        c->out[0] = 0;
    }
    out->text = c->out;
    out->len = c->len;
    out->gen = c->gen;
    out->ngen = c->ngen;
    ja_free(&c->arena);
    free(c);
    return 1;
}
