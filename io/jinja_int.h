/* Internals of the Jinja engine (io/jinja.h): the arena, values, the syntax tree and the
 * render context shared by jinja_parse.c (lexer + parser), jinja_value.c (values, printing,
 * operators, JSON), jinja_eval.c (statements and expressions) and jinja_builtin.c (filters,
 * tests, methods, globals).
 *
 * Errors inside compile and render leave through longjmp to the public entry point: every
 * allocation of a compile or a render comes from one arena freed there, so no error path
 * has anything else to free (the render's output buffer is the one malloc'd block, freed by
 * the entry point too). */
#ifndef SHARDLORA_IO_JINJA_INT_H
#define SHARDLORA_IO_JINJA_INT_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

#include "jinja.h"

/* ---- arena ------------------------------------------------------------------------------ */

typedef struct JArenaBlock JArenaBlock;
typedef struct {
    JArenaBlock *head;
    size_t used;  /* bytes handed out so far (the budget counts these) */
    size_t limit; /* more than this: the owner's error (JINJA_ERR_LIMIT) */
} JArena;

void ja_free(JArena *a);
/* n zeroed bytes, 16-aligned, or NULL when the budget or malloc fails. */
void *ja_alloc_raw(JArena *a, size_t n);

/* ---- errors ----------------------------------------------------------------------------- */

/* Where an error leaves to: the kind and "line L: what" message, then longjmp. */
typedef struct {
    jmp_buf jb;
    JinjaErr kind;
    ErrStatus *st;
} JErr;

_Noreturn void jerr_throw(JErr *e, JinjaErr kind, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- values ----------------------------------------------------------------------------- */

typedef enum {
    JV_UNDEF = 0, /* Jinja's Undefined; u.s holds the name for the message (may be empty) */
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,   /* u.s: UTF-8 bytes (valid UTF-8, not NUL-terminated) */
    JV_LIST,  /* u.l; JList.kind says list, tuple, generator, dict view */
    JV_DICT,  /* u.d */
    JV_NS,    /* namespace(): u.d holds the attributes */
    JV_MACRO, /* u.m: a macro or a call block's caller */
    JV_FUNC,  /* u.fn: a global function or a bound method */
    JV_LOOP   /* u.loop: the `loop` variable of a for */
} JvType;

typedef enum {
    JL_LIST = 0,
    JL_TUPLE,
    JL_GEN, /* a generator (map, select, ...): single use, prints as an object */
    JL_ITEMS,
    JL_KEYS,
    JL_VALUES
} JListKind;

typedef struct JList JList;
typedef struct JDict JDict;
typedef struct JMacro JMacro;
typedef struct JFunc JFunc;
typedef struct JLoop JLoop;

typedef struct {
    const char *p;
    size_t n;
} JStr;

typedef struct {
    uint8_t t;      /* JvType */
    uint8_t unsafe; /* JV_UNDEF: a sandbox-blocked attribute (calling it is a runtime error) */
    union {
        int b;
        int64_t i;
        double f;
        JStr s;
        JList *l;
        JDict *d;
        JMacro *m;
        JFunc *fn;
        JLoop *loop;
    } u;
} JVal;

struct JList {
    JVal *v;
    size_t n, cap;
    size_t pos; /* JL_GEN: items before pos were consumed */
    uint8_t kind;
};

struct JDict {
    JVal *k, *v;
    size_t n, cap;
};

typedef struct JNode JNode;
typedef struct JScope JScope;

struct JMacro {
    const JNode *def; /* JN_MACRO or JN_CALLBLOCK */
    JScope *closure;
    JVal caller; /* JV_MACRO when the macro was called from a call block, else undefined */
};

/* Global functions and bound methods; `self` is the receiver of a method. */
typedef enum {
    JF_RANGE = 1,
    JF_DICT,
    JF_NAMESPACE,
    JF_RAISE,
    JF_STRFTIME,
    JF_UNSUPPORTED_GLOBAL, /* lipsum, cycler, joiner */
    JF_METHOD,             /* name is the method, self the receiver */
    JF_LOOP_CYCLE
} JFuncKind;

struct JFunc {
    int kind;
    const char *name;
    JVal self;
};

struct JLoop {
    JList *items;
    size_t i;
};

/* ---- syntax tree ------------------------------------------------------------------------ */

typedef enum {
    /* statements */
    JN_BODY = 1,    /* kids: statements */
    JN_DATA,        /* s: text */
    JN_OUTPUT,      /* a: expression */
    JN_IF,          /* a: test, b: body, c: else (JN_BODY, JN_IF for elif, or NULL) */
    JN_FOR,         /* a: target, b: iterable, c: body, d: else, e: filter condition */
    JN_SET,         /* a: target, b: value */
    JN_SETBLOCK,    /* a: target, b: body, kids: filters (JN_FILTER with a == NULL) */
    JN_MACRO,       /* s: name, kids: params (JN_NAME), kids2: defaults (aligned, NULL: none),
                       b: body; flags: 1 uses varargs, 2 uses kwargs, 4 uses caller */
    JN_CALLBLOCK,   /* a: the call (JN_CALL), kids/kids2: caller params/defaults, b: body */
    JN_FILTERBLOCK, /* b: body, kids: filters */
    JN_WITH,        /* kids: targets, kids2: values, b: body */
    JN_BREAK,
    JN_CONTINUE,
    JN_GENERATION, /* b: body */
    /* expressions */
    JN_CONST,   /* val */
    JN_NAME,    /* s */
    JN_LISTLIT, /* kids */
    JN_TUPLELIT,
    JN_DICTLIT, /* kids: keys, kids2: values */
    JN_GETATTR, /* a: object, s: name */
    JN_GETITEM, /* a: object, b: key */
    JN_SLICE,   /* a: object, b, c, d: start, stop, step (each may be NULL) */
    JN_CALL,    /* a: callee, kids: positional, kids2: keyword values, names: keyword names */
    JN_FILTER,  /* a: input (NULL in filter blocks), s: name, kids/kids2/names: arguments */
    JN_TEST,    /* a: input, s: name, kids/kids2/names: arguments; flags 1: negated */
    JN_BINOP,   /* op, a, b */
    JN_UNARY,   /* op ('-', '+', '!' for not), a */
    JN_AND,
    JN_OR,
    JN_COMPARE, /* a: first, kids: operands, ops: operators */
    JN_CONCAT,  /* kids */
    JN_CONDEXPR /* a: test, b: then, c: else (NULL: undefined) */
} JNodeKind;

/* Binary and comparison operators. */
typedef enum {
    JOP_ADD = 1,
    JOP_SUB,
    JOP_MUL,
    JOP_DIV,
    JOP_FLOORDIV,
    JOP_MOD,
    JOP_POW,
    JOP_EQ,
    JOP_NE,
    JOP_LT,
    JOP_LE,
    JOP_GT,
    JOP_GE,
    JOP_IN,
    JOP_NOTIN,
    JOP_NEG,
    JOP_POS,
    JOP_NOT
} JOp;

struct JNode {
    uint8_t kind; /* JNodeKind */
    uint8_t op;   /* JOp */
    uint8_t flags;
    int line;
    JNode *a, *b, *c, *d, *e;
    JNode **kids, **kids2;
    JStr *names; /* keyword argument names, aligned with kids2 */
    uint8_t *ops;
    size_t nkids, nkids2;
    JStr s;
    JVal val;
    int fid; /* JN_FILTER / JN_TEST: the builtin's index */
};

struct JinjaTemplate {
    JArena arena;
    JNode *root;
    int has_generation;
};

/* Parses src (already newline-normalised) into t->root; errors leave through e. */
void jparse_template(JinjaTemplate *t, const char *src, size_t len, JErr *e);

/* ---- render context --------------------------------------------------------------------- */

struct JScope {
    JScope *parent;
    JDict vars;
};

typedef struct {
    JErr err;
    JArena arena;
    char *out; /* malloc'd output */
    size_t len, cap, max_output;
    size_t capture; /* > 0 while a macro, set block or filter block captures output */
    JinjaSpan *gen;
    size_t ngen, capgen;
    uint64_t steps, max_steps;
    int depth;
    int64_t now;
    int ctl;    /* 1: break, 2: continue pending */
    int line;   /* the line being evaluated, for messages */
    JDict vars; /* the render's variables */
    JScope *top;
} JCtx;

#define JCTX_MAX_DEPTH 400 /* nested evaluation frames (macro recursion included) */

_Noreturn void jc_throw(JCtx *c, JinjaErr kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void *jc_alloc(JCtx *c, size_t n);
/* Charges work that is not one evaluation step (scanning or copying): 64 units are a step,
 * a byte is a unit, comparing an element 64 units. Bounds the time of every render. */
void jc_work(JCtx *c, size_t units);
#define JC_ELEM 64

/* Values (jinja_value.c). */
JVal jv_undef(const char *name);
JVal jv_none(void);
JVal jv_bool(int b);
JVal jv_int(int64_t i);
JVal jv_float(double f);
JVal jv_str(JCtx *c, const char *p, size_t n); /* copies */
JVal jv_strref(const char *p, size_t n);       /* borrows */
JList *jl_new(JCtx *c, size_t cap, int kind);
void jl_push(JCtx *c, JList *l, JVal v);
JVal jv_list(JList *l);
JDict *jd_new(JCtx *c);
void jd_set(JCtx *c, JDict *d, JVal k, JVal v);
JVal *jd_get(JCtx *c, JDict *d, JVal k);
JVal *jd_gets(JDict *d, const char *name, size_t n);
JVal jv_dict(JDict *d);
JVal jv_from_json(JCtx *c, const json_t *j);

int jv_truthy(const JVal *v);
int jv_is_str(const JVal *v, const char *s);
int jv_eq(JCtx *c, const JVal *a, const JVal *b);
int jv_cmp(JCtx *c, const JVal *a, const JVal *b); /* <0, 0, >0; TypeError when unordered */
int jv_hashable(JCtx *c, const JVal *v);
const char *jv_typename(const JVal *v);

/* Growable byte buffer in the arena. */
typedef struct {
    char *p;
    size_t n, cap;
} JBuf;
void jb_add(JCtx *c, JBuf *b, const char *s, size_t n);
void jb_adds(JCtx *c, JBuf *b, const char *s);
void jb_addc(JCtx *c, JBuf *b, char ch);
JVal jb_val(JBuf *b);

void jv_write_str(JCtx *c, JBuf *b, const JVal *v);  /* Python str() */
void jv_write_repr(JCtx *c, JBuf *b, const JVal *v); /* Python repr() */
JVal jv_to_str(JCtx *c, const JVal *v);
void jv_write_float(JBuf *b, JCtx *c, double f);
/* str() of undefined, none, bool, int or float into buf (or a constant); NULL otherwise. */
const char *jv_scalar_str(const JVal *v, char buf[64]);
/* json.dumps(v, ensure_ascii, indent (NULL: none), separators, sort_keys). */
void jv_write_json(JCtx *c, JBuf *b, const JVal *v, int ensure_ascii, const JStr *indent,
                   JStr item_sep, JStr key_sep, int sort_keys, int level);

JVal jv_binop(JCtx *c, int op, const JVal *a, const JVal *b);
JVal jv_unary(JCtx *c, int op, const JVal *a);
int jv_contains(JCtx *c, const JVal *container, const JVal *item);
/* The items of an iterable (a generator is consumed); TypeError otherwise. */
JList *jv_iterate(JCtx *c, const JVal *v);
int64_t jv_pylen(JCtx *c, const JVal *v); /* len(); TypeError when it has none */

/* UTF-8 helpers. */
size_t ju_count(const char *p, size_t n);                /* code points */
size_t ju_offset(const char *p, size_t n, size_t k);     /* byte offset of code point k */
int32_t ju_decode(const char *p, size_t n, size_t *adv); /* -1 when invalid */
size_t ju_encode(int32_t cp, char *out);                 /* 1..4 bytes */
int ju_isspace(int32_t cp);                              /* Python's str.isspace */
size_t ju_valid(const char *p, size_t n);                /* bytes of the valid prefix */

/* Evaluation (jinja_eval.c). */
JVal je_eval(JCtx *c, JScope *sc, const JNode *n);
JVal je_call_value(JCtx *c, const JVal *f, JVal *args, size_t nargs, JVal *kwv, JStr *kwn,
                   size_t nkw);
JVal je_getattr(JCtx *c, const JVal *obj, const char *name, size_t n);
JVal je_getitem(JCtx *c, const JVal *obj, const JVal *key);
void je_render(JCtx *c, const JNode *root);

/* Builtins (jinja_builtin.c). fid is the index jb_filter_id / jb_test_id return (>= 0), -1
 * when Jinja2 has no such filter / test, -2 when it has one this engine does not
 * implement. */
int jb_filter_id(const char *name, size_t n);
int jb_test_id(const char *name, size_t n);
JVal jb_filter(JCtx *c, int fid, JVal in, JVal *args, size_t nargs, JVal *kwv, JStr *kwn,
               size_t nkw);
int jb_test(JCtx *c, int fid, const JVal *in, JVal *args, size_t nargs);
JVal jb_global(JCtx *c, const char *name, size_t n); /* undefined when none */
JVal jb_call_func(JCtx *c, JFunc *f, JVal *args, size_t nargs, JVal *kwv, JStr *kwn, size_t nkw);
/* Attribute of a str / dict / list / number that Python has (a method): a JV_FUNC, or
 * t == JV_UNDEF when there is none. */
JVal jb_method(JCtx *c, const JVal *self, const char *name, size_t n);

#endif
