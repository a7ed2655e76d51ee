/* A Jinja2 template engine for the chat templates models ship in tokenizer_config.json,
 * rendering byte for byte what Python's Jinja2 renders when configured as Hugging Face
 * transformers' apply_chat_template configures it: an immutable sandbox, trim_blocks and
 * lstrip_blocks on, the loopcontrols extension (break / continue), `tojson` as
 * json.dumps(x, ensure_ascii=False) (with its indent / separators / sort_keys arguments),
 * the globals raise_exception(msg) and strftime_now(fmt), and transformers' {% generation %}
 * block, whose rendered byte ranges are reported.
 *
 * Values are Python's: none, bool, int, float, str, list, dict (insertion ordered),
 * namespace, macro, and Jinja's Undefined (prints as "", is falsy, fails on attribute
 * access or a call). Printing follows Python's str(): True, None, 1.0, ['a', 1] and
 * {'k': 'v'} as repr() writes them.
 *
 * A template is compiled once. A construct outside what the engine implements (an
 * unknown filter, test or statement, {% include %}, {% extends %}, ...) is refused at compile
 * time, and an unknown method at render time, with one line naming the construct and the
 * template's line: a template is never rendered differently from Jinja2. */
#ifndef SHARDLORA_IO_JINJA_H
#define SHARDLORA_IO_JINJA_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "../runtime/err.h"

typedef struct JinjaTemplate JinjaTemplate;

/* What went wrong in jinja_compile / jinja_render, for the caller's message. */
typedef enum {
    JINJA_OK = 0,
    JINJA_ERR_SYNTAX,      /* the template is not valid Jinja */
    JINJA_ERR_UNSUPPORTED, /* valid Jinja that this engine does not implement */
    JINJA_ERR_RAISED,      /* raise_exception(msg): st->msg is msg, as the template wrote it */
    JINJA_ERR_RUNTIME,     /* an error Jinja2 raises too (undefined attribute, bad operand
                              types, division by zero, a sandbox violation) */
    JINJA_ERR_LIMIT        /* the output or step bound of JinjaLimits was reached, or the
                              render's memory (4 x max_output, at least 64 MiB) or its
                              evaluation depth (macro recursion, values nested ~400 deep) */
} JinjaErr;

/* Compiles src[0..len) (UTF-8). Returns NULL with *kind set and st saying "line L: what"
 * (the caller prefixes the template's file name). kind may be NULL. */
JinjaTemplate *jinja_compile(const char *src, size_t len, JinjaErr *kind, ErrStatus *st);
void jinja_free(JinjaTemplate *t);

/* 1 when the template contains a {% generation %} block. */
int jinja_has_generation(const JinjaTemplate *t);

typedef struct {
    size_t max_output;  /* bytes of output; 0: 64 MiB */
    uint64_t max_steps; /* evaluation steps (expressions, statements, loop iterations);
                           0: 100,000,000 */
    int64_t now;        /* seconds since the epoch for strftime_now (local time); -1: the
                           current time */
} JinjaLimits;

typedef struct {
    size_t start, end; /* bytes [start, end) of the output */
} JinjaSpan;

typedef struct {
    char *text; /* malloc'd, NUL-terminated */
    size_t len;
    JinjaSpan *gen; /* the output of each {% generation %} block run, in the order the
                       blocks close (as transformers records them: an inner block before the
                       one around it; empty ones included); a block inside a macro, call or
                       block set is refused */
    size_t ngen;
} JinjaOutput;

/* Renders t with the variables of the JSON object vars (messages, tools, documents,
 * add_generation_prompt, bos_token, the caller's keyword arguments, ...; JSON values map to
 * Python's: integers to int, reals to float, objects to dict in their key order). lim may be
 * NULL (defaults). Returns 1 with *out filled (free with jinja_output_free), or 0 with *kind
 * set and st saying "line L: what" (for JINJA_ERR_RAISED, st->msg is only the raised
 * message). out is left empty on failure. */
int jinja_render(const JinjaTemplate *t, const json_t *vars, const JinjaLimits *lim,
                 JinjaOutput *out, JinjaErr *kind, ErrStatus *st);
void jinja_output_free(JinjaOutput *out);

#endif
