/* The Jinja lexer and parser: template source to the syntax tree of io/jinja_int.h, with
 * Jinja2 3.1's whitespace rules (trim_blocks, lstrip_blocks, the - and + markers) and its
 * grammar (operator precedence, filters and tests, the statements chat templates use). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_int.h"

#define JP_MAX_DEPTH 256 /* nested expressions / statements: deeper is a syntax error */

typedef enum {
    TK_EOF = 0,
    TK_DATA,
    TK_VBEGIN,
    TK_VEND,
    TK_BBEGIN,
    TK_BEND,
    TK_NAME,
    TK_STRING,
    TK_INT,
    TK_FLOAT,
    TK_OP
} TokType;

typedef struct {
    uint8_t type;
    int line;
    JStr s; /* name, operator, data text, or the unescaped string */
    int64_t i;
    double f;
} Tok;

typedef struct {
    JinjaTemplate *t;
    JErr *e;
    const char *src;
    size_t len;
    Tok *tok;
    size_t ntok, cap;
    size_t pos;     /* parser: current token */
    int depth;      /* parser nesting */
    int loop_depth; /* for loops enclosing the statement (reset inside macros) */
    int in_macro;
} JP;

_Noreturn void jerr_throw(JErr *e, JinjaErr kind, int line, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    e->kind = kind;
    if (kind == JINJA_ERR_RAISED)
        err_status_set(e->st, "%s", msg);
    else
        err_status_set(e->st, "line %d: %s", line, msg);
    longjmp(e->jb, 1);
}

static void *jp_alloc(JP *p, size_t n) {
    void *q = ja_alloc_raw(&p->t->arena, n);
    if (!q) jerr_throw(p->e, JINJA_ERR_LIMIT, 0, "out of memory compiling the template");
    return q;
}

/* ---- lexer ------------------------------------------------------------------------------ */

static int count_lines(const char *s, size_t a, size_t b) {
    int n = 0;
    for (size_t i = a; i < b; i++)
        n += s[i] == '\n';
    return n;
}

static Tok *lx_push(JP *p, int type, int line, const char *s, size_t n) {
    if (p->ntok == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        Tok *t = jp_alloc(p, cap * sizeof *t);
        if (p->ntok) memcpy(t, p->tok, p->ntok * sizeof *t);
        p->tok = t;
        p->cap = cap;
    }
    Tok *t = &p->tok[p->ntok++];
    memset(t, 0, sizeof *t);
    t->type = (uint8_t)type;
    t->line = line;
    t->s.p = s;
    t->s.n = n;
    return t;
}

/* Length of the Unicode whitespace character at s (0 when it is not one). */
static size_t ws_len(const char *s, size_t n) {
    if (n == 0) return 0;
    size_t adv;
    int32_t cp = ju_decode(s, n, &adv);
    return cp >= 0 && ju_isspace(cp) ? adv : 0;
}

static size_t skip_ws(const char *s, size_t pos, size_t len) {
    size_t k;
    while (pos < len && (k = ws_len(s + pos, len - pos)) > 0)
        pos += k;
    return pos;
}

/* Length of text without its trailing Unicode whitespace (Python's rstrip()). */
static size_t rstrip_len(const char *s, size_t n) {
    while (n > 0) {
        size_t b = n - 1;
        while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80)
            b--;
        if (ws_len(s + b, n - b) != n - b) break;
        n = b;
    }
    return n;
}

static int is_digit(char c) {
    return c >= '0' && c <= '9';
}
static int is_alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* (\d+_)*\d+ at s[i..): the end, or i when no digits. */
static size_t digits_us(const char *s, size_t i, size_t len, int (*ok)(char)) {
    size_t j = i;
    if (j >= len || !ok(s[j])) return i;
    while (j < len) {
        if (ok(s[j]))
            j++;
        else if (s[j] == '_' && j + 1 < len && ok(s[j + 1]))
            j++;
        else
            break;
    }
    return j;
}

static int dec_ok(char c) {
    return is_digit(c);
}
static int bin_ok(char c) {
    return c == '0' || c == '1';
}
static int oct_ok(char c) {
    return c >= '0' && c <= '7';
}
static int hex_ok(char c) {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Digits of s[a..b) without underscores into buf (NUL-terminated); 0 when too long. */
static int strip_us(const char *s, size_t a, size_t b, char *buf, size_t cap) {
    size_t k = 0;
    for (size_t i = a; i < b; i++)
        if (s[i] != '_') {
            if (k + 1 >= cap) return 0;
            buf[k++] = s[i];
        }
    buf[k] = 0;
    return 1;
}

/* A number token at s[i..): float, then integer, as Jinja's rules try them. */
static size_t lx_number(JP *p, size_t i, int line) {
    const char *s = p->src;
    size_t len = p->len, j = digits_us(s, i, len, dec_ok);
    int prev_dot = i > 0 && s[i - 1] == '.';
    if (!prev_dot && j > i) {
        size_t k = j, fend = 0;
        if (k < len && s[k] == '.' && digits_us(s, k + 1, len, dec_ok) > k + 1)
            k = digits_us(s, k + 1, len, dec_ok);
        if (k < len && (s[k] == 'e' || s[k] == 'E')) {
            size_t m = k + 1;
            if (m < len && (s[m] == '+' || s[m] == '-')) m++;
            size_t m2 = digits_us(s, m, len, dec_ok);
            if (m2 > m) fend = m2;
        }
        if (!fend && k > j) fend = k;
        if (fend) {
            char buf[400];
            if (!strip_us(s, i, fend, buf, sizeof buf))
                jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line,
                           "unsupported: a float literal this long");
            Tok *t = lx_push(p, TK_FLOAT, line, s + i, fend - i);
            t->f = strtod(buf, NULL);
            return fend;
        }
    }
    /* integers: 0b / 0o / 0x, [1-9](_?\d)*, 0(_?0)* */
    int base = 10;
    size_t a = i, end;
    if (s[i] == '0' && i + 2 <= len && i + 1 < len &&
        (s[i + 1] == 'b' || s[i + 1] == 'B' || s[i + 1] == 'o' || s[i + 1] == 'O' ||
         s[i + 1] == 'x' || s[i + 1] == 'X')) {
        char b = (char)(s[i + 1] | 0x20);
        int (*ok)(char) = b == 'b' ? bin_ok : b == 'o' ? oct_ok : hex_ok;
        size_t q = i + 2;
        if (q < len && s[q] == '_') q++;
        size_t e2 = digits_us(s, q, len, ok);
        if (e2 > q) {
            base = b == 'b' ? 2 : b == 'o' ? 8 : 16;
            a = i + 2;
            end = e2;
            goto have_int;
        }
    }
    if (s[i] == '0') {
        end = i + 1;
        while (end < len &&
               (s[end] == '0' || (s[end] == '_' && end + 1 < len && s[end + 1] == '0')))
            end++;
    } else {
        end = j;
    }
have_int:;
    char buf[80];
    if (!strip_us(s, a, end, buf, sizeof buf))
        jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line, "unsupported: integer overflow");
    errno = 0;
    char *ep;
    unsigned long long v = strtoull(buf, &ep, base);
    if (errno || v > (unsigned long long)INT64_MAX)
        jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line, "unsupported: integer overflow");
    Tok *t = lx_push(p, TK_INT, line, s + i, end - i);
    t->i = (int64_t)v;
    return end;
}

static int hexval(char c) {
    return is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* Python's unicode-escape of a string literal's body s[a..b) into the arena. */
static JStr lx_unescape(JP *p, size_t a, size_t b, int line) {
    const char *s = p->src;
    char *out = jp_alloc(p, (b - a) + 1), *q = out;
    for (size_t i = a; i < b;) {
        if (s[i] != '\\') {
            *q++ = s[i++];
            continue;
        }
        char c = s[i + 1]; /* the lexer guarantees a character after a backslash */
        i += 2;
        int32_t cp = -1;
        switch (c) {
        case '\n':
            continue;
        case '\\':
            *q++ = '\\';
            continue;
        case '\'':
            *q++ = '\'';
            continue;
        case '"':
            *q++ = '"';
            continue;
        case 'a':
            *q++ = '\a';
            continue;
        case 'b':
            *q++ = '\b';
            continue;
        case 'f':
            *q++ = '\f';
            continue;
        case 'n':
            *q++ = '\n';
            continue;
        case 'r':
            *q++ = '\r';
            continue;
        case 't':
            *q++ = '\t';
            continue;
        case 'v':
            *q++ = '\v';
            continue;
        case 'x':
        case 'u':
        case 'U': {
            int nd = c == 'x' ? 2 : c == 'u' ? 4 : 8;
            cp = 0;
            for (int k = 0; k < nd; k++, i++) {
                if (i >= b || !hex_ok(s[i]))
                    jerr_throw(p->e, JINJA_ERR_SYNTAX, line, "truncated \\%c escape in a string",
                               c);
                cp = cp * 16 + hexval(s[i]);
                if (cp > 0x10FFFF)
                    jerr_throw(p->e, JINJA_ERR_SYNTAX, line, "illegal Unicode escape in a string");
            }
            break;
        }
        case 'N':
            jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line, "unsupported: \\N{...} escape");
        default:
            if (c >= '0' && c <= '7') {
                cp = c - '0';
                for (int k = 0; k < 2 && i < b && s[i] >= '0' && s[i] <= '7'; k++, i++)
                    cp = cp * 8 + (s[i] - '0');
                break;
            }
            if ((unsigned char)c >= 0x80)
                jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line,
                           "unsupported: a backslash before a non-ASCII character");
            *q++ = '\\'; /* unknown escapes stay as written */
            *q++ = c;
            continue;
        }
        if (cp >= 0xD800 && cp <= 0xDFFF)
            jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line, "unsupported: a surrogate escape");
        q += ju_encode(cp, q);
    }
    JStr r = {out, (size_t)(q - out)};
    return r;
}

static size_t lx_string(JP *p, size_t i, int line) {
    const char *s = p->src;
    char quote = s[i];
    size_t j = i + 1;
    while (j < p->len && s[j] != quote) {
        if (s[j] == '\\') {
            if (j + 1 >= p->len) break;
            j++;
        }
        j++;
    }
    if (j >= p->len) jerr_throw(p->e, JINJA_ERR_SYNTAX, line, "unexpected end of string");
    JStr v = lx_unescape(p, i + 1, j, line);
    Tok *t = lx_push(p, TK_STRING, line, v.p, v.n);
    (void)t;
    return j + 1;
}

static const char *const lx_ops2[] = {"//", "**", "==", "!=", ">=", "<="};

/* The tokens of one tag starting at pos (after its opening); returns the position after the
 * tag's end (and the whitespace / newline the end consumes). *trailing_nl: whether what the
 * end consumed ends with a newline (Jinja's line_starting). */
static size_t lx_tag(JP *p, size_t pos, int block, int *line, int *trailing_nl) {
    const char *s = p->src;
    size_t len = p->len;
    char stack[JP_MAX_DEPTH];
    int sp = 0;
    for (;;) {
        if (pos >= len)
            jerr_throw(p->e, JINJA_ERR_SYNTAX, *line, "unexpected end of template, expected '%s'",
                       block ? "%}" : "}}");
        const char *endtag = block ? "%}" : "}}";
        if (sp == 0) {
            size_t k = pos;
            int minus = 0, plus = 0;
            if (s[k] == '-')
                minus = 1, k++;
            else if (s[k] == '+' && block)
                plus = 1, k++;
            if (k + 1 < len && s[k] == endtag[0] && s[k + 1] == endtag[1]) {
                lx_push(p, block ? TK_BEND : TK_VEND, *line, s + pos, 0);
                size_t e = k + 2;
                if (minus)
                    e = skip_ws(s, e, len);
                else if (block && !plus && e < len && s[e] == '\n')
                    e++;
                *trailing_nl = e > pos && s[e - 1] == '\n';
                *line += count_lines(s, pos, e);
                return e;
            }
        }
        size_t w = ws_len(s + pos, len - pos);
        if (w) {
            *line += s[pos] == '\n';
            pos += w;
            continue;
        }
        char c = s[pos];
        if (is_digit(c)) {
            pos = lx_number(p, pos, *line);
        } else if (is_alpha(c)) {
            size_t j = pos;
            while (j < len && (is_alpha(s[j]) || is_digit(s[j])))
                j++;
            if (j < len && (unsigned char)s[j] >= 0x80)
                jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, *line, "unsupported: a non-ASCII name");
            lx_push(p, TK_NAME, *line, s + pos, j - pos);
            pos = j;
        } else if (c == '\'' || c == '"') {
            int l0 = *line;
            size_t e = lx_string(p, pos, l0);
            *line += count_lines(s, pos, e);
            pos = e;
        } else if ((unsigned char)c >= 0x80) {
            jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, *line,
                       "unsupported: a non-ASCII character in a tag");
        } else {
            size_t n = 0;
            for (size_t k = 0; k < sizeof lx_ops2 / sizeof *lx_ops2; k++)
                if (pos + 1 < len && s[pos] == lx_ops2[k][0] && s[pos + 1] == lx_ops2[k][1]) n = 2;
            if (!n && strchr("+-/*%~[](){}><=.:|,;", c)) n = 1;
            if (!n) jerr_throw(p->e, JINJA_ERR_SYNTAX, *line, "unexpected char '%c'", c);
            if (n == 1 && (c == '(' || c == '[' || c == '{')) {
                if (sp >= JP_MAX_DEPTH)
                    jerr_throw(p->e, JINJA_ERR_SYNTAX, *line, "too deeply nested");
                stack[sp++] = c == '(' ? ')' : c == '[' ? ']' : '}';
            } else if (n == 1 && (c == ')' || c == ']' || c == '}')) {
                if (sp == 0) jerr_throw(p->e, JINJA_ERR_SYNTAX, *line, "unexpected '%c'", c);
                if (stack[--sp] != c)
                    jerr_throw(p->e, JINJA_ERR_SYNTAX, *line, "unexpected '%c', expected '%c'", c,
                               stack[sp]);
            }
            lx_push(p, TK_OP, *line, s + pos, n);
            pos += n;
        }
    }
}

/* {% raw %} as Jinja's root rule spots it: {%[-+]?\s*raw\s*[-]?%}. */
static int lx_is_raw(const char *s, size_t pos, size_t len) {
    size_t k = pos + 2;
    if (k < len && (s[k] == '-' || s[k] == '+')) k++;
    k = skip_ws(s, k, len);
    if (k + 3 > len || memcmp(s + k, "raw", 3) != 0) return 0;
    k = skip_ws(s, k + 3, len);
    if (k < len && s[k] == '-') k++;
    return k + 1 < len && s[k] == '%' && s[k + 1] == '}';
}

/* The length of the text s[pos..k) kept before a tag whose opening has whitespace-control
 * sign (0, '-', '+'): '-' strips all whitespace before it; otherwise lstrip_blocks removes
 * the spaces between the line start and a block or comment tag (line_starting: the text
 * begins a line, as after a tag that consumed a newline). */
static size_t lx_strip_text(const char *s, size_t pos, size_t k, char sign, int lstrip,
                            int line_starting) {
    size_t tlen = k - pos;
    if (sign == '-') return rstrip_len(s + pos, tlen);
    if (sign == '+' || !lstrip) return tlen;
    size_t lp = tlen;
    while (lp > 0 && s[pos + lp - 1] != '\n')
        lp--;
    if ((lp > 0 || line_starting) && lp < tlen && skip_ws(s, pos + lp, k) == k) return lp;
    return tlen;
}

/* {% raw %}...{% endraw %} from pos (after the opening tag): the body is data, stripped as
 * the text before a block tag; the closing tag takes trim_blocks' newline. Returns the
 * position after it. */
static size_t lx_raw(JP *p, size_t pos, int *line, int *line_starting) {
    const char *s = p->src;
    size_t len = p->len;
    for (size_t e = pos; e + 1 < len; e++) {
        if (s[e] != '{' || s[e + 1] != '%') continue;
        size_t k = e + 2;
        char sign = k < len && (s[k] == '-' || s[k] == '+') ? s[k] : 0;
        if (sign) k++;
        k = skip_ws(s, k, len);
        if (k + 6 > len || memcmp(s + k, "endraw", 6) != 0) continue;
        k = skip_ws(s, k + 6, len);
        char esign = k < len && (s[k] == '-' || s[k] == '+') ? s[k] : 0;
        size_t q = k + (esign ? 1 : 0);
        if (!(q + 1 < len && s[q] == '%' && s[q + 1] == '}')) continue;
        size_t tlen = lx_strip_text(s, pos, e, sign, 1, *line_starting);
        if (tlen) lx_push(p, TK_DATA, *line, s + pos, tlen);
        size_t end = q + 2;
        if (esign == '-')
            end = skip_ws(s, end, len);
        else if (!esign && end < len && s[end] == '\n')
            end++;
        *line += count_lines(s, pos, end);
        *line_starting = s[end - 1] == '\n';
        return end;
    }
    jerr_throw(p->e, JINJA_ERR_SYNTAX, *line, "Missing end of raw directive");
}

static void lx_run(JP *p) {
    const char *s = p->src;
    size_t len = p->len, pos = 0;
    int line = 1, line_starting = 1;
    while (pos < len) {
        size_t k = pos;
        while (k + 1 < len &&
               !(s[k] == '{' && (s[k + 1] == '{' || s[k + 1] == '%' || s[k + 1] == '#')))
            k++;
        if (k + 1 >= len) {
            lx_push(p, TK_DATA, line, s + pos, len - pos);
            break;
        }
        char kind = s[k + 1];
        char sign = k + 2 < len && (s[k + 2] == '-' || s[k + 2] == '+') ? s[k + 2] : 0;
        size_t tlen = lx_strip_text(s, pos, k, sign, kind != '{', line_starting);
        if (tlen) lx_push(p, TK_DATA, line, s + pos, tlen);
        line += count_lines(s, pos, k);
        pos = k + 2 + (sign ? 1 : 0);
        if (kind == '%' && lx_is_raw(s, k, len)) {
            /* the opening ends at its %} (no trim_blocks newline), or -%} and whitespace */
            size_t q = pos;
            while (!(s[q] == '%' && s[q + 1] == '}'))
                q++;
            size_t e = q + 2;
            if (s[q - 1] == '-') e = skip_ws(s, e, len);
            line += count_lines(s, pos, e);
            line_starting = s[e - 1] == '\n';
            pos = lx_raw(p, e, &line, &line_starting);
            continue;
        }
        if (kind == '#') {
            if (pos >= len) break; /* Jinja's lexer ends quietly on "{#" at the very end */
            size_t j = pos;
            while (j + 1 < len && !(s[j] == '#' && s[j + 1] == '}'))
                j++;
            if (j + 1 >= len)
                jerr_throw(p->e, JINJA_ERR_SYNTAX, line, "missing end of comment tag");
            size_t e = j + 2;
            if (j > pos && s[j - 1] == '-')
                e = skip_ws(s, e, len);
            else if (!(j > pos && s[j - 1] == '+') && e < len && s[e] == '\n')
                e++;
            line_starting = s[e - 1] == '\n';
            line += count_lines(s, pos, e);
            pos = e;
            continue;
        }
        lx_push(p, kind == '%' ? TK_BBEGIN : TK_VBEGIN, line, s + k, 2);
        pos = lx_tag(p, pos, kind == '%', &line, &line_starting);
    }
    lx_push(p, TK_EOF, line, s + len, 0);
}

/* ---- parser helpers --------------------------------------------------------------------- */

static Tok *cur(JP *p) {
    return &p->tok[p->pos];
}
static Tok *peek(JP *p) {
    return p->pos + 1 < p->ntok ? &p->tok[p->pos + 1] : &p->tok[p->ntok - 1];
}
static void next_tok(JP *p) {
    if (p->pos + 1 < p->ntok) p->pos++;
}

static int tok_is(const Tok *t, int type, const char *s) {
    if (t->type != type) return 0;
    if (!s) return 1;
    size_t n = strlen(s);
    return t->s.n == n && memcmp(t->s.p, s, n) == 0;
}
static int is_name(JP *p, const char *s) {
    return tok_is(cur(p), TK_NAME, s);
}
static int is_op(JP *p, const char *s) {
    return tok_is(cur(p), TK_OP, s);
}

static const char *tok_desc(const Tok *t, char *buf, size_t cap) {
    switch (t->type) {
    case TK_EOF:
        return "end of template";
    case TK_DATA:
        return "template data";
    case TK_VBEGIN:
        return "begin of print statement";
    case TK_VEND:
        return "end of print statement";
    case TK_BBEGIN:
        return "begin of statement block";
    case TK_BEND:
        return "end of statement block";
    case TK_STRING:
        return "string";
    case TK_INT:
        return "integer";
    case TK_FLOAT:
        return "float";
    default:
        snprintf(buf, cap, "%.*s", (int)(t->s.n > 60 ? 60 : t->s.n), t->s.p);
        return buf;
    }
}

_Noreturn static void fail_unexpected(JP *p, const char *expected) {
    char b[80];
    if (expected)
        jerr_throw(p->e, JINJA_ERR_SYNTAX, cur(p)->line, "expected %s, got '%s'", expected,
                   tok_desc(cur(p), b, sizeof b));
    jerr_throw(p->e, JINJA_ERR_SYNTAX, cur(p)->line, "unexpected '%s'",
               tok_desc(cur(p), b, sizeof b));
}

static void expect_op(JP *p, const char *s) {
    if (!is_op(p, s)) fail_unexpected(p, s);
    next_tok(p);
}
static void expect_type(JP *p, int type, const char *what) {
    if (cur(p)->type != type) fail_unexpected(p, what);
    next_tok(p);
}
static JStr expect_name(JP *p) {
    if (cur(p)->type != TK_NAME) fail_unexpected(p, "a name");
    JStr s = cur(p)->s;
    next_tok(p);
    return s;
}

static JNode *nnew(JP *p, int kind, int line) {
    JNode *n = jp_alloc(p, sizeof *n);
    n->kind = (uint8_t)kind;
    n->line = line;
    return n;
}

/* A growing list of nodes (copied into the node when done). */
typedef struct {
    JNode **v;
    JStr *names;
    size_t n, cap;
} NList;

static void nl_push(JP *p, NList *l, JNode *x, const JStr *name) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        JNode **v = jp_alloc(p, cap * sizeof *v);
        JStr *nm = jp_alloc(p, cap * sizeof *nm);
        if (l->n) {
            memcpy(v, l->v, l->n * sizeof *v);
            memcpy(nm, l->names, l->n * sizeof *nm);
        }
        l->v = v;
        l->names = nm;
        l->cap = cap;
    }
    if (name) l->names[l->n] = *name;
    l->v[l->n++] = x;
}

static void enter(JP *p) {
    if (++p->depth > JP_MAX_DEPTH)
        jerr_throw(p->e, JINJA_ERR_SYNTAX, cur(p)->line, "too deeply nested");
}

/* ---- expressions ------------------------------------------------------------------------ */

static JNode *parse_expression(JP *p, int with_condexpr);
static JNode *parse_unary(JP *p, int with_filter);
static JNode *parse_primary(JP *p);
static JNode *parse_postfix(JP *p, JNode *n);
static JNode *parse_filter_expr(JP *p, JNode *n);

static int is_tuple_end(JP *p, const char *extra) {
    Tok *t = cur(p);
    if (t->type == TK_VEND || t->type == TK_BEND || tok_is(t, TK_OP, ")")) return 1;
    return extra && tok_is(t, TK_NAME, extra);
}

/* simplified: primaries only (assignment targets). */
static JNode *parse_tuple(JP *p, int simplified, int with_condexpr, const char *extra,
                          int explicit_parens) {
    int line = cur(p)->line, is_tuple = 0;
    NList l = {0};
    for (;;) {
        if (l.n) expect_op(p, ",");
        if (is_tuple_end(p, extra)) break;
        JNode *x = simplified ? parse_primary(p) : parse_expression(p, with_condexpr);
        nl_push(p, &l, x, NULL);
        if (is_op(p, ","))
            is_tuple = 1;
        else
            break;
    }
    if (!is_tuple) {
        if (l.n) return l.v[0];
        if (!explicit_parens) fail_unexpected(p, "an expression");
    }
    JNode *n = nnew(p, JN_TUPLELIT, line);
    n->kids = l.v;
    n->nkids = l.n;
    return n;
}

static JNode *parse_or(JP *p);

static JNode *parse_condexpr(JP *p) {
    int line = cur(p)->line;
    JNode *e1 = parse_or(p);
    while (is_name(p, "if")) {
        next_tok(p);
        JNode *e2 = parse_or(p), *e3 = NULL;
        if (is_name(p, "else")) {
            next_tok(p);
            enter(p);
            e3 = parse_condexpr(p);
            p->depth--;
        }
        JNode *n = nnew(p, JN_CONDEXPR, line);
        n->a = e2;
        n->b = e1;
        n->c = e3;
        e1 = n;
    }
    return e1;
}

static JNode *parse_expression(JP *p, int with_condexpr) {
    enter(p);
    JNode *n = with_condexpr ? parse_condexpr(p) : parse_or(p);
    p->depth--;
    return n;
}

static JNode *parse_not(JP *p);

static JNode *parse_and(JP *p) {
    JNode *l = parse_not(p);
    while (is_name(p, "and")) {
        int line = cur(p)->line;
        next_tok(p);
        JNode *n = nnew(p, JN_AND, line);
        n->a = l;
        n->b = parse_not(p);
        l = n;
    }
    return l;
}

static JNode *parse_or(JP *p) {
    JNode *l = parse_and(p);
    while (is_name(p, "or")) {
        int line = cur(p)->line;
        next_tok(p);
        JNode *n = nnew(p, JN_OR, line);
        n->a = l;
        n->b = parse_and(p);
        l = n;
    }
    return l;
}

static JNode *parse_math1(JP *p);

static JNode *parse_compare(JP *p) {
    int line = cur(p)->line;
    JNode *first = parse_math1(p);
    NList l = {0};
    uint8_t ops[256];
    size_t nops = 0;
    for (;;) {
        int op = 0;
        Tok *t = cur(p);
        if (t->type == TK_OP && t->s.n <= 2) {
            static const char *const names[] = {"==", "!=", "<", "<=", ">", ">="};
            static const int codes[] = {JOP_EQ, JOP_NE, JOP_LT, JOP_LE, JOP_GT, JOP_GE};
            for (int k = 0; k < 6; k++)
                if (tok_is(t, TK_OP, names[k])) op = codes[k];
            if (op) next_tok(p);
        } else if (is_name(p, "in")) {
            op = JOP_IN;
            next_tok(p);
        } else if (is_name(p, "not") && tok_is(peek(p), TK_NAME, "in")) {
            op = JOP_NOTIN;
            next_tok(p);
            next_tok(p);
        }
        if (!op) break;
        if (nops >= sizeof ops) jerr_throw(p->e, JINJA_ERR_SYNTAX, line, "too deeply nested");
        ops[nops++] = (uint8_t)op;
        nl_push(p, &l, parse_math1(p), NULL);
    }
    if (!nops) return first;
    JNode *n = nnew(p, JN_COMPARE, line);
    n->a = first;
    n->kids = l.v;
    n->nkids = l.n;
    n->ops = jp_alloc(p, nops);
    memcpy(n->ops, ops, nops);
    return n;
}

static JNode *parse_not(JP *p) {
    if (is_name(p, "not")) {
        int line = cur(p)->line;
        next_tok(p);
        enter(p);
        JNode *n = nnew(p, JN_UNARY, line);
        n->op = JOP_NOT;
        n->a = parse_not(p);
        p->depth--;
        return n;
    }
    return parse_compare(p);
}

static JNode *binop(JP *p, int op, JNode *a, JNode *b, int line) {
    JNode *n = nnew(p, JN_BINOP, line);
    n->op = (uint8_t)op;
    n->a = a;
    n->b = b;
    return n;
}

static JNode *parse_concat(JP *p);

static JNode *parse_math1(JP *p) {
    JNode *l = parse_concat(p);
    while (is_op(p, "+") || is_op(p, "-")) {
        int op = is_op(p, "+") ? JOP_ADD : JOP_SUB, line = cur(p)->line;
        next_tok(p);
        l = binop(p, op, l, parse_concat(p), line);
    }
    return l;
}

static JNode *parse_math2(JP *p);

static JNode *parse_concat(JP *p) {
    int line = cur(p)->line;
    JNode *first = parse_math2(p);
    if (!is_op(p, "~")) return first;
    NList l = {0};
    nl_push(p, &l, first, NULL);
    while (is_op(p, "~")) {
        next_tok(p);
        nl_push(p, &l, parse_math2(p), NULL);
    }
    JNode *n = nnew(p, JN_CONCAT, line);
    n->kids = l.v;
    n->nkids = l.n;
    return n;
}

static JNode *parse_pow(JP *p);

static JNode *parse_math2(JP *p) {
    JNode *l = parse_pow(p);
    for (;;) {
        int op = is_op(p, "*")    ? JOP_MUL
                 : is_op(p, "/")  ? JOP_DIV
                 : is_op(p, "//") ? JOP_FLOORDIV
                 : is_op(p, "%")  ? JOP_MOD
                                  : 0;
        if (!op) break;
        int line = cur(p)->line;
        next_tok(p);
        l = binop(p, op, l, parse_pow(p), line);
    }
    return l;
}

static JNode *parse_pow(JP *p) {
    JNode *l = parse_unary(p, 1);
    while (is_op(p, "**")) {
        int line = cur(p)->line;
        next_tok(p);
        l = binop(p, JOP_POW, l, parse_unary(p, 1), line);
    }
    return l;
}

static JNode *parse_unary(JP *p, int with_filter) {
    int line = cur(p)->line;
    JNode *n;
    enter(p);
    if (is_op(p, "-") || is_op(p, "+")) {
        int op = is_op(p, "-") ? JOP_NEG : JOP_POS;
        next_tok(p);
        n = nnew(p, JN_UNARY, line);
        n->op = (uint8_t)op;
        n->a = parse_unary(p, 0);
    } else {
        n = parse_primary(p);
    }
    n = parse_postfix(p, n);
    if (with_filter) n = parse_filter_expr(p, n);
    p->depth--;
    return n;
}

static JNode *const_node(JP *p, JVal v, int line) {
    JNode *n = nnew(p, JN_CONST, line);
    n->val = v;
    return n;
}

static JNode *parse_primary(JP *p) {
    Tok *t = cur(p);
    int line = t->line;
    if (t->type == TK_NAME) {
        next_tok(p);
        if (tok_is(t, TK_NAME, "true") || tok_is(t, TK_NAME, "True"))
            return const_node(p, jv_bool(1), line);
        if (tok_is(t, TK_NAME, "false") || tok_is(t, TK_NAME, "False"))
            return const_node(p, jv_bool(0), line);
        if (tok_is(t, TK_NAME, "none") || tok_is(t, TK_NAME, "None"))
            return const_node(p, jv_none(), line);
        JNode *n = nnew(p, JN_NAME, line);
        n->s = t->s;
        return n;
    }
    if (t->type == TK_STRING) {
        size_t total = 0, k = p->pos;
        while (p->tok[k].type == TK_STRING)
            total += p->tok[k++].s.n;
        char *buf = jp_alloc(p, total + 1), *q = buf;
        while (cur(p)->type == TK_STRING) {
            if (cur(p)->s.n) memcpy(q, cur(p)->s.p, cur(p)->s.n);
            q += cur(p)->s.n;
            next_tok(p);
        }
        return const_node(p, jv_strref(buf, total), line);
    }
    if (t->type == TK_INT || t->type == TK_FLOAT) {
        next_tok(p);
        return const_node(p, t->type == TK_INT ? jv_int(t->i) : jv_float(t->f), line);
    }
    if (tok_is(t, TK_OP, "(")) {
        next_tok(p);
        JNode *n = parse_tuple(p, 0, 1, NULL, 1);
        expect_op(p, ")");
        return n;
    }
    if (tok_is(t, TK_OP, "[") || tok_is(t, TK_OP, "{")) {
        int dict = tok_is(t, TK_OP, "{");
        next_tok(p);
        NList k = {0}, v = {0};
        while (!is_op(p, dict ? "}" : "]")) {
            if (k.n) expect_op(p, ",");
            if (is_op(p, dict ? "}" : "]")) break;
            nl_push(p, &k, parse_expression(p, 1), NULL);
            if (dict) {
                expect_op(p, ":");
                nl_push(p, &v, parse_expression(p, 1), NULL);
            }
        }
        expect_op(p, dict ? "}" : "]");
        JNode *n = nnew(p, dict ? JN_DICTLIT : JN_LISTLIT, line);
        n->kids = k.v;
        n->nkids = k.n;
        n->kids2 = v.v;
        n->nkids2 = v.n;
        return n;
    }
    fail_unexpected(p, NULL);
}

/* ( args ) into n->kids (positional) and n->kids2 / n->names (keywords). */
static void parse_call_args(JP *p, JNode *n) {
    int line = cur(p)->line;
    expect_op(p, "(");
    NList a = {0}, k = {0};
    int need_comma = 0;
    while (!is_op(p, ")")) {
        if (need_comma) {
            expect_op(p, ",");
            if (is_op(p, ")")) break;
        }
        if (is_op(p, "*") || is_op(p, "**"))
            jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line,
                       "unsupported: *args / **kwargs in a call");
        if (cur(p)->type == TK_NAME && tok_is(peek(p), TK_OP, "=")) {
            JStr name = cur(p)->s;
            next_tok(p);
            next_tok(p);
            nl_push(p, &k, parse_expression(p, 1), &name);
        } else {
            if (k.n)
                jerr_throw(p->e, JINJA_ERR_SYNTAX, line,
                           "invalid syntax for function call expression");
            nl_push(p, &a, parse_expression(p, 1), NULL);
        }
        need_comma = 1;
    }
    expect_op(p, ")");
    n->kids = a.v;
    n->nkids = a.n;
    n->kids2 = k.v;
    n->names = k.names;
    n->nkids2 = k.n;
}

static JNode *parse_subscribed(JP *p) {
    int line = cur(p)->line;
    JNode *args[3] = {NULL, NULL, NULL};
    if (is_op(p, ":")) {
        next_tok(p);
    } else {
        JNode *x = parse_expression(p, 1);
        if (!is_op(p, ":")) return x;
        next_tok(p);
        args[0] = x;
    }
    if (!is_op(p, ":") && !is_op(p, "]") && !is_op(p, ",")) args[1] = parse_expression(p, 1);
    if (is_op(p, ":")) {
        next_tok(p);
        if (!is_op(p, "]") && !is_op(p, ",")) args[2] = parse_expression(p, 1);
    }
    JNode *n = nnew(p, JN_SLICE, line);
    n->b = args[0];
    n->c = args[1];
    n->d = args[2];
    return n;
}

static JNode *parse_postfix(JP *p, JNode *n) {
    for (;;) {
        int line = cur(p)->line;
        if (is_op(p, ".")) {
            next_tok(p);
            Tok *t = cur(p);
            if (t->type == TK_NAME) {
                JNode *g = nnew(p, JN_GETATTR, line);
                g->a = n;
                g->s = t->s;
                n = g;
            } else if (t->type == TK_INT) {
                JNode *g = nnew(p, JN_GETITEM, line);
                g->a = n;
                g->b = const_node(p, jv_int(t->i), line);
                n = g;
            } else {
                fail_unexpected(p, "name or number");
            }
            next_tok(p);
        } else if (is_op(p, "[")) {
            next_tok(p);
            if (is_op(p, "]")) jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line, "unsupported: x[]");
            JNode *arg = parse_subscribed(p);
            if (is_op(p, ","))
                jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line, "unsupported: a tuple subscript");
            expect_op(p, "]");
            if (arg->kind == JN_SLICE) {
                arg->a = n;
                n = arg;
            } else {
                JNode *g = nnew(p, JN_GETITEM, line);
                g->a = n;
                g->b = arg;
                n = g;
            }
        } else if (is_op(p, "(")) {
            JNode *c = nnew(p, JN_CALL, line);
            c->a = n;
            parse_call_args(p, c);
            n = c;
        } else {
            return n;
        }
    }
}

/* The filters of `| name(args) | ...`; in == NULL for a filter block. */
static JNode *parse_filters(JP *p, JNode *in, int start_inline) {
    while (is_op(p, "|") || start_inline) {
        if (!start_inline) next_tok(p);
        start_inline = 0;
        int line = cur(p)->line;
        JStr name = expect_name(p);
        if (is_op(p, "."))
            jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line, "unsupported: a dotted filter name");
        JNode *f = nnew(p, JN_FILTER, line);
        f->a = in;
        f->s = name;
        f->fid = jb_filter_id(name.p, name.n);
        if (f->fid < 0)
            jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line, "unsupported: filter '%.*s'",
                       (int)(name.n > 60 ? 60 : name.n), name.p);
        if (is_op(p, "(")) parse_call_args(p, f);
        in = f;
    }
    return in;
}

static JNode *parse_test(JP *p, JNode *n) {
    int line = cur(p)->line;
    next_tok(p); /* is */
    int neg = 0;
    if (is_name(p, "not")) {
        neg = 1;
        next_tok(p);
    }
    JStr name = expect_name(p);
    if (is_op(p, "."))
        jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line, "unsupported: a dotted test name");
    JNode *t = nnew(p, JN_TEST, line);
    t->a = n;
    t->s = name;
    t->flags = (uint8_t)neg;
    t->fid = jb_test_id(name.p, name.n);
    if (t->fid < 0)
        jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line, "unsupported: test '%.*s'",
                   (int)(name.n > 60 ? 60 : name.n), name.p);
    Tok *c = cur(p);
    if (is_op(p, "(")) {
        parse_call_args(p, t);
    } else if ((c->type == TK_NAME || c->type == TK_STRING || c->type == TK_INT ||
                c->type == TK_FLOAT || is_op(p, "[") || is_op(p, "{")) &&
               !is_name(p, "else") && !is_name(p, "or") && !is_name(p, "and")) {
        if (is_name(p, "is"))
            jerr_throw(p->e, JINJA_ERR_SYNTAX, line, "You cannot chain multiple tests with is");
        NList a = {0};
        nl_push(p, &a, parse_postfix(p, parse_primary(p)), NULL);
        t->kids = a.v;
        t->nkids = 1;
    }
    return t;
}

static JNode *parse_filter_expr(JP *p, JNode *n) {
    for (;;) {
        if (is_op(p, "|"))
            n = parse_filters(p, n, 0);
        else if (is_name(p, "is"))
            n = parse_test(p, n);
        else if (is_op(p, "(")) {
            JNode *c = nnew(p, JN_CALL, cur(p)->line);
            c->a = n;
            parse_call_args(p, c);
            n = c;
        } else
            return n;
    }
}

/* ---- statements ------------------------------------------------------------------------- */

static JNode *subparse(JP *p, const char *const *end);

static int can_assign(const JNode *n) {
    if (n->kind == JN_NAME) return 1;
    if (n->kind != JN_TUPLELIT) return 0;
    for (size_t i = 0; i < n->nkids; i++)
        if (!can_assign(n->kids[i])) return 0;
    return 1;
}

static JNode *parse_target(JP *p, const char *extra, int with_ns) {
    int line = cur(p)->line;
    JNode *t;
    if (with_ns && cur(p)->type == TK_NAME && tok_is(peek(p), TK_OP, ".")) {
        JStr ns = expect_name(p);
        next_tok(p);
        t = nnew(p, JN_GETATTR, line);
        t->a = nnew(p, JN_NAME, line);
        t->a->s = ns;
        t->s = expect_name(p);
        return t;
    }
    t = parse_tuple(p, 1, 1, extra, 0);
    if (!can_assign(t)) jerr_throw(p->e, JINJA_ERR_SYNTAX, line, "can't assign to this target");
    return t;
}

/* block_end, the body up to one of end (left as the current token: the end tag's name). */
static JNode *parse_body(JP *p, const char *const *end) {
    if (is_op(p, ":")) next_tok(p);
    expect_type(p, TK_BEND, "end of statement block");
    JNode *b = subparse(p, end);
    if (cur(p)->type == TK_EOF) {
        jerr_throw(p->e, JINJA_ERR_SYNTAX, cur(p)->line,
                   "unexpected end of template: expected '%s'", end[0]);
    }
    return b;
}

/* The body up to end[0], whose tag is consumed up to (not including) its block_end. */
static JNode *parse_body_drop(JP *p, const char *const *end) {
    JNode *b = parse_body(p, end);
    next_tok(p);
    return b;
}

static void parse_signature(JP *p, JNode *n) {
    expect_op(p, "(");
    NList a = {0}, d = {0};
    int have_default = 0;
    while (!is_op(p, ")")) {
        if (a.n) expect_op(p, ",");
        JNode *x = nnew(p, JN_NAME, cur(p)->line);
        x->s = expect_name(p);
        JNode *def = NULL;
        if (is_op(p, "=")) {
            next_tok(p);
            def = parse_expression(p, 1);
            have_default = 1;
        } else if (have_default) {
            jerr_throw(p->e, JINJA_ERR_SYNTAX, cur(p)->line,
                       "non-default argument follows default argument");
        }
        nl_push(p, &a, x, NULL);
        nl_push(p, &d, def, NULL);
    }
    expect_op(p, ")");
    n->kids = a.v;
    n->nkids = a.n;
    n->kids2 = d.v;
    n->nkids2 = d.n;
}

static int uses_name(const JNode *n, const char *name, int depth) {
    if (!n || depth > 2 * JP_MAX_DEPTH + 10) return 0;
    if (n->kind == JN_NAME && n->s.n == strlen(name) && memcmp(n->s.p, name, n->s.n) == 0) return 1;
    const JNode *ch[] = {n->a, n->b, n->c, n->d, n->e};
    for (int i = 0; i < 5; i++)
        if (uses_name(ch[i], name, depth + 1)) return 1;
    for (size_t i = 0; i < n->nkids; i++)
        if (uses_name(n->kids[i], name, depth + 1)) return 1;
    for (size_t i = 0; i < n->nkids2; i++)
        if (uses_name(n->kids2[i], name, depth + 1)) return 1;
    return 0;
}

static const char *const end_for[] = {"endfor", "else", NULL};
static const char *const end_for2[] = {"endfor", NULL};
static const char *const end_if[] = {"elif", "else", "endif", NULL};
static const char *const end_if2[] = {"endif", NULL};
static const char *const end_set[] = {"endset", NULL};
static const char *const end_macro[] = {"endmacro", NULL};
static const char *const end_call[] = {"endcall", NULL};
static const char *const end_filter[] = {"endfilter", NULL};
static const char *const end_with[] = {"endwith", NULL};
static const char *const end_gen[] = {"endgeneration", NULL};

static JNode *parse_for(JP *p, int line) {
    JNode *n = nnew(p, JN_FOR, line);
    n->a = parse_target(p, "in", 0);
    if (!is_name(p, "in")) fail_unexpected(p, "'in'");
    next_tok(p);
    n->b = parse_tuple(p, 0, 0, "recursive", 0);
    if (is_name(p, "if")) {
        next_tok(p);
        n->e = parse_expression(p, 1);
    }
    if (is_name(p, "recursive"))
        jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line, "unsupported: recursive for loops");
    p->loop_depth++;
    n->c = parse_body(p, end_for);
    p->loop_depth--;
    int has_else = is_name(p, "else");
    next_tok(p);
    if (has_else) n->d = parse_body_drop(p, end_for2);
    return n;
}

static JNode *parse_if(JP *p, int line) {
    JNode *n = nnew(p, JN_IF, line), *last = n;
    for (;;) {
        last->a = parse_tuple(p, 0, 0, NULL, 0);
        last->b = parse_body(p, end_if);
        if (is_name(p, "elif")) {
            next_tok(p);
            JNode *x = nnew(p, JN_IF, cur(p)->line);
            last->c = x;
            last = x;
            continue;
        }
        int is_else = is_name(p, "else");
        next_tok(p);
        if (is_else) last->c = parse_body_drop(p, end_if2);
        return n;
    }
}

static JNode *parse_set(JP *p, int line) {
    JNode *target = parse_target(p, NULL, 1);
    if (is_op(p, "=")) {
        next_tok(p);
        JNode *n = nnew(p, JN_SET, line);
        n->a = target;
        n->b = parse_tuple(p, 0, 1, NULL, 0);
        return n;
    }
    JNode *n = nnew(p, JN_SETBLOCK, line);
    n->a = target;
    n->c = parse_filters(p, NULL, 0);
    n->b = parse_body_drop(p, end_set);
    return n;
}

static JNode *parse_macro(JP *p, int line) {
    JNode *n = nnew(p, JN_MACRO, line);
    n->s = expect_name(p);
    parse_signature(p, n);
    int saved = p->loop_depth;
    p->loop_depth = 0;
    n->b = parse_body_drop(p, end_macro);
    p->loop_depth = saved;
    n->flags =
        (uint8_t)((uses_name(n->b, "varargs", 0) ? 1 : 0) | (uses_name(n->b, "kwargs", 0) ? 2 : 0) |
                  (uses_name(n->b, "caller", 0) ? 4 : 0));
    return n;
}

static JNode *parse_callblock(JP *p, int line) {
    JNode *n = nnew(p, JN_CALLBLOCK, line);
    if (is_op(p, "(")) parse_signature(p, n);
    n->a = parse_expression(p, 1);
    if (n->a->kind != JN_CALL) jerr_throw(p->e, JINJA_ERR_SYNTAX, line, "expected call");
    int saved = p->loop_depth;
    p->loop_depth = 0;
    n->b = parse_body_drop(p, end_call);
    p->loop_depth = saved;
    n->flags =
        (uint8_t)((uses_name(n->b, "varargs", 0) ? 1 : 0) | (uses_name(n->b, "kwargs", 0) ? 2 : 0));
    return n;
}

static JNode *parse_statement(JP *p) {
    Tok *t = cur(p);
    int line = t->line;
    char b[80];
    if (t->type != TK_NAME)
        jerr_throw(p->e, JINJA_ERR_SYNTAX, line, "tag name expected, got '%s'",
                   tok_desc(t, b, sizeof b));
    enter(p);
    next_tok(p);
    JNode *n;
    if (tok_is(t, TK_NAME, "for")) {
        n = parse_for(p, line);
    } else if (tok_is(t, TK_NAME, "if")) {
        n = parse_if(p, line);
    } else if (tok_is(t, TK_NAME, "set")) {
        n = parse_set(p, line);
    } else if (tok_is(t, TK_NAME, "macro")) {
        n = parse_macro(p, line);
    } else if (tok_is(t, TK_NAME, "call")) {
        n = parse_callblock(p, line);
    } else if (tok_is(t, TK_NAME, "filter")) {
        n = nnew(p, JN_FILTERBLOCK, line);
        n->c = parse_filters(p, NULL, 1);
        n->b = parse_body_drop(p, end_filter);
    } else if (tok_is(t, TK_NAME, "with")) {
        n = nnew(p, JN_WITH, line);
        NList a = {0}, v = {0};
        while (cur(p)->type != TK_BEND) {
            if (a.n) expect_op(p, ",");
            nl_push(p, &a, parse_target(p, NULL, 0), NULL);
            expect_op(p, "=");
            nl_push(p, &v, parse_expression(p, 1), NULL);
        }
        n->kids = a.v;
        n->nkids = a.n;
        n->kids2 = v.v;
        n->nkids2 = v.n;
        n->b = parse_body_drop(p, end_with);
    } else if (tok_is(t, TK_NAME, "print")) {
        /* each comma-separated expression is printed on its own */
        n = nnew(p, JN_BODY, line);
        NList l = {0};
        while (cur(p)->type != TK_BEND) {
            if (l.n) expect_op(p, ",");
            JNode *o = nnew(p, JN_OUTPUT, line);
            o->a = parse_expression(p, 1);
            nl_push(p, &l, o, NULL);
        }
        n->kids = l.v;
        n->nkids = l.n;
    } else if (tok_is(t, TK_NAME, "break") || tok_is(t, TK_NAME, "continue")) {
        if (p->loop_depth == 0)
            jerr_throw(p->e, JINJA_ERR_SYNTAX, line, "'%.*s' outside loop", (int)t->s.n, t->s.p);
        n = nnew(p, tok_is(t, TK_NAME, "break") ? JN_BREAK : JN_CONTINUE, line);
    } else if (tok_is(t, TK_NAME, "generation")) {
        /* transformers' block is a call block: its body is a function of its own, where
         * break / continue of an enclosing loop are syntax errors */
        n = nnew(p, JN_GENERATION, line);
        int saved = p->loop_depth;
        p->loop_depth = 0;
        n->b = parse_body_drop(p, end_gen);
        p->loop_depth = saved;
        p->t->has_generation = 1;
    } else {
        static const char *const known[] = {"block", "extends",    "include", "import",
                                            "from",  "autoescape", NULL};
        for (int k = 0; known[k]; k++)
            if (tok_is(t, TK_NAME, known[k]))
                jerr_throw(p->e, JINJA_ERR_UNSUPPORTED, line, "unsupported: {%% %s %%}", known[k]);
        jerr_throw(p->e, JINJA_ERR_SYNTAX, line, "Encountered unknown tag '%.*s'",
                   (int)(t->s.n > 60 ? 60 : t->s.n), t->s.p);
    }
    p->depth--;
    return n;
}

static int at_end(JP *p, const char *const *end) {
    if (!end) return 0;
    for (int k = 0; end[k]; k++)
        if (is_name(p, end[k])) return 1;
    return 0;
}

static JNode *subparse(JP *p, const char *const *end) {
    JNode *body = nnew(p, JN_BODY, cur(p)->line);
    NList l = {0};
    for (;;) {
        Tok *t = cur(p);
        if (t->type == TK_EOF) break;
        if (t->type == TK_DATA) {
            JNode *n = nnew(p, JN_DATA, t->line);
            n->s = t->s;
            nl_push(p, &l, n, NULL);
            next_tok(p);
        } else if (t->type == TK_VBEGIN) {
            next_tok(p);
            JNode *n = nnew(p, JN_OUTPUT, t->line);
            n->a = parse_tuple(p, 0, 1, NULL, 0);
            expect_type(p, TK_VEND, "end of print statement");
            nl_push(p, &l, n, NULL);
        } else if (t->type == TK_BBEGIN) {
            next_tok(p);
            if (at_end(p, end)) break;
            nl_push(p, &l, parse_statement(p), NULL);
            expect_type(p, TK_BEND, "end of statement block");
        } else {
            fail_unexpected(p, NULL);
        }
    }
    body->kids = l.v;
    body->nkids = l.n;
    return body;
}

void jparse_template(JinjaTemplate *t, const char *src, size_t len, JErr *e) {
    JP p = {0};
    p.t = t;
    p.e = e;
    p.src = src;
    p.len = len;
    lx_run(&p);
    t->root = subparse(&p, NULL);
    if (cur(&p)->type != TK_EOF) fail_unexpected(&p, NULL);
}
