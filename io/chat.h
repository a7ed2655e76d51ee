/* Chat templates: the model's own Jinja `chat_template` (io/jinja.h), rendered as Hugging Face
 * transformers' apply_chat_template renders it, and the label rule that turns a conversation
 * into counted (assistant) and masked text. A model without a template can name one of the
 * hand-written layouts of io/chatfmt.h instead (--chat-format); with a template, a named
 * layout must render as the template does. Special tokens appear as their text
 * ("<|eot_id|>", "<s>"); the tokenizer matches them.
 *
 * Where a template comes from, the first found wins: --chat-template FILE (a Jinja file),
 * MODEL/chat_template.jinja, tokenizer_config.json's "chat_template" (a string, or a list
 * of {"name", "template"}: "tool_use" for a line that gives "tools" when there is one, else
 * "default"). It is rendered with the variables messages, tools and documents (when the
 * line gives them), add_generation_prompt, the special tokens of tokenizer_config.json
 * (bos_token, eos_token, unk_token, pad_token, sep_token, cls_token, mask_token as strings,
 * additional_special_tokens as a list) and the --chat-template-kwargs object.
 *
 * The label rule (R(k, g) = the first k messages rendered with add_generation_prompt g,
 * F = R(n, False)): a template with {% generation %} blocks gives one segment, F, whose
 * generation spans are counted. Otherwise each assistant message i is rendered as the
 * continuation of its prompt: P_i = R(i, True) must be a prefix of N_i = R(i + 1, False)
 * and A_i = N_i[len(P_i):] is counted. While P_i extends the text E of the current segment,
 * P_i[len(E):] (masked) and A_i are appended to it; when it does not (the template renders
 * an earlier turn differently once later messages are added: Qwen3 drops earlier
 * reasoning, Mistral v0.3 moves the system prompt), a new segment starts with P_i. What F
 * adds after the last segment's text is appended masked. A consistent template gives one
 * segment equal to F. A hand-written layout gives one segment, its trained pieces counted. */
#ifndef SHARDLORA_IO_CHAT_H
#define SHARDLORA_IO_CHAT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "../runtime/err.h"
#include "chatfmt.h"
#include "jinja.h"
#include "tokenizer.h"

#define CHAT_ID_LEN 32 /* hex characters of ChatTemplate.id */

/* How a run renders "messages": the model's template (tpl != NULL), a hand-written format
 * (format != CHAT_NONE), or nothing (a "messages" line is then an error). Read-only once
 * loaded: one ChatTemplate serves every line. */
typedef struct {
    JinjaTemplate *tpl;       /* the template ("default" of a list); NULL: none */
    JinjaTemplate *tpl_tools; /* a list's "tool_use" template, for lines with "tools"; or NULL */
    ChatFormat format;        /* the hand-written format when tpl is NULL */
    char *source;             /* where tpl comes from ("MODEL/tokenizer_config.json", a file) */
    const char *why;          /* how it was chosen, for the log ("--chat-template", ...) */
    json_t *vars;             /* special tokens, then the kwargs over them (an object) */
    int has_generation;       /* tpl has {% generation %} blocks */
    size_t max_output;        /* bytes one render may write (JinjaLimits) */
    uint64_t max_steps;       /* evaluation steps one render may take */
    int64_t now;              /* strftime_now's time (JinjaLimits.now; -1: the clock) */
    char id[CHAT_ID_LEN + 1]; /* hash of all that decides the rendered text: templates, vars,
                                 format ("none" when there is nothing) */
} ChatTemplate;

/* What chat_template_load reads. */
typedef struct {
    const char *model_dir;
    const char *template_file; /* --chat-template FILE, or NULL */
    const char *kwargs;        /* --chat-template-kwargs JSON object, or NULL */
    const char *format;        /* --chat-format NAME; NULL or "auto": none named */
    Tokenizer *tk;             /* for the check that a format's markers are single tokens;
                                  NULL: not checked */
} ChatSetup;

/* Parses --chat-template-kwargs: a JSON object (new reference), or NULL with st =
 * "--chat-template-kwargs: ..." (a usage error). */
json_t *chat_parse_kwargs(const char *kwargs, ErrStatus *st);

/* Finds, reads and compiles the template of s (see the top of this file). With --chat-format
 * and a model template, both render a fixed probe conversation; a difference is refused
 * ("--chat-format X does not match the model's own chat template (SOURCE): ..."), equality
 * keeps the model's template. A format whose special markers are not single tokens of
 * s->tk is refused naming the marker. Returns 1, or 0 with st (one line naming the file and,
 * for a template the engine refuses, the construct and its line) and *status = EXIT_USAGE
 * (bad kwargs, a format name, a format that is not the model's) or EXIT_BAD_INPUT (files,
 * templates). Either way ct holds allocations: chat_template_free it. */
int chat_template_load(ChatTemplate *ct, const ChatSetup *s, int *status, ErrStatus *st);
/* A ChatTemplate of the hand-written format f (CHAT_NONE: no template), for tests and for
 * commands without a model directory. */
void chat_template_init_format(ChatTemplate *ct, ChatFormat f);
void chat_template_free(ChatTemplate *ct);
/* "the model's template (SOURCE)", "chatml (--chat-format)" or "none", into buf. */
const char *chat_template_describe(const ChatTemplate *ct, char *buf, size_t cap);

/* A conversation rendered by the label rule: the texts of its segments one after another,
 * and the counted byte ranges of that text. */
typedef struct {
    size_t start, end;
} ChatSpan;

typedef struct {
    char *text; /* malloc'd, NUL-terminated: the segments concatenated */
    size_t len, cap;
    size_t *seg_end; /* [nseg] byte end of each segment in text */
    size_t nseg, seg_cap;
    ChatSpan *span; /* [nspan] counted ranges, ascending, disjoint, non-empty */
    size_t nspan, span_cap;
} ChatRender;

/* Renders the conversation of a JSONL line (an object with "messages" and optional "tools"
 * and "documents"; every key of a message goes to the template) by the label rule into out
 * (zero-initialised or reused: it is reset). train_on_prompt: a conversation without an
 * assistant message is rendered whole instead of refused. Returns 1, or 0 with st giving the
 * reason only (the caller prefixes "FILE:LINE: "): "template error: MSG" for the template's
 * raise_exception(MSG), "chat template: ..." for other render failures, or what is wrong
 * with the messages. */
int chat_render_line(const ChatTemplate *ct, json_t *line, int train_on_prompt, ChatRender *out,
                     ErrStatus *st);
void chat_render_free(ChatRender *r);

/* The prompt text of messages (a JSON array; tools / documents may be NULL) with
 * add_generation_prompt = True, for generation. *text malloc'd. Errors as chat_render_line. */
int chat_render_prompt(const ChatTemplate *ct, json_t *messages, json_t *tools, json_t *documents,
                       char **text, size_t *len, ErrStatus *st);

#endif
