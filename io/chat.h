/* Chat templates: the model's own Jinja `chat_template` (io/jinja.h), rendered as Hugging Face
 * transformers' apply_chat_template renders it, and the label rule that turns a conversation
 * into counted (assistant) and masked text; and, as a named fallback for models without a
 * template, a few families' official templates written out in C as pieces that are either
 * trained on (assistant replies and their end-of-turn token) or masked. Special tokens
 * appear as their text ("<|eot_id|>", "<s>"); the tokenizer matches them.
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
 * segment equal to F.
 *
 * Hand-written formats (with the documented strings; R = role, X = content):
 *   llama3  Llama-3 Instruct: "<|begin_of_text|>" then per message
 *           "<|start_header_id|>R<|end_header_id|>\n\n" + trim(X) + "<|eot_id|>";
 *           trained: trim(X) + "<|eot_id|>" of assistant messages.
 *   mistral Mistral Instruct v0.2 / Mixtral v0.1 as of Dec 2023 (v0.1's file then had
 *           "X</s> "; Mistral's 2024 Hub templates differ again): "<s>" then user
 *           "[INST] X [/INST]", assistant "X</s>", no strip; a leading system message is put
 *           before the first user message's content followed by "\n\n" (as mistral-common
 *           does); roles must alternate user/assistant. Trained: "X</s>" of assistant messages.
 *   llama2  Llama-2 Chat: user "<s>[INST] " + strip(X) + " [/INST]" (the first one with
 *           "<<SYS>>\n" + system + "\n<</SYS>>\n\n" before X when a system message leads;
 *           strip() then applies to that whole text, so the system text and X's leading
 *           whitespace are kept), assistant " " + strip(X) + " </s>". Trained: the
 *           assistant piece. strip / trim remove what Python's str.isspace() calls space.
 *   chatml  ChatML (e.g. OpenHermes-2.5): per message "<|im_start|>R\n" + X + "<|im_end|>\n";
 *           trained: X + "<|im_end|>" of assistant messages. Not Qwen1.5/2.5 (other default
 *           system turns) nor Qwen3 ("<think>\n\n</think>\n\n" before the last reply).
 *   qwen2   ChatML with Qwen2's default system message ("You are a helpful assistant.")
 *           when the conversation has none. */
#ifndef SHARDLORA_IO_CHAT_H
#define SHARDLORA_IO_CHAT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "../runtime/err.h"
#include "jinja.h"
#include "tokenizer.h"

typedef enum {
    CHAT_NONE = 0,
    CHAT_LLAMA3,
    CHAT_MISTRAL,
    CHAT_LLAMA2,
    CHAT_CHATML,
    CHAT_QWEN2,
    CHAT_NFORMATS
} ChatFormat;

/* "llama3" | "mistral" | "llama2" | "chatml" | "qwen2"; -1 if none of these. */
int chat_parse_format(const char *name);
/* The name of a format ("none" for CHAT_NONE). */
const char *chat_format_name(ChatFormat f);

/* Identifies the family of DIR/tokenizer_config.json's "chat_template" (a string, or a
 * list of {"name", "template"} where "default" is taken, else the first) by markers, and
 * names one only for a template rendered here byte for byte:
 *   "<|start_header_id|>"  llama3; none with "Cutting Knowledge Date" (Llama 3.1+'s dated
 *                          system header)
 *   "<|im_start|>"         none with "<think>" (Qwen3); else qwen2 when every
 *                          "<|im_start|>system" in it is followed by a newline and Qwen2's
 *                          exact default "You are a helpful assistant.<|im_end|>"; none when
 *                          any is not (a template writing another system turn: Qwen1.5,
 *                          Qwen2.5 "You are Qwen, ..."); chatml when there is none
 *   "[INST]"               none when a "[/INST]" in it is not preceded by a space (Mistral
 *                          v0.3+ '[INST] ' + X + '[/INST]', system folded into the last user
 *                          turn); else llama2 with "<<SYS>>", mistral without.
 * Sets *out to CHAT_NONE and returns 1 when the file or the template is absent or the
 * template is none of these; returns 0 with st naming the file when the file cannot be
 * read or is not valid JSON. */
int chat_detect(const char *model_dir, ChatFormat *out, ErrStatus *st);

typedef struct {
    const char *role;    /* "system", "user", "assistant" (llama3 / chatml: any role) */
    const char *content; /* UTF-8, NUL-terminated */
} ChatMsg;

typedef struct {
    char *text; /* malloc'd, NUL-terminated */
    size_t len;
    int train; /* 1: part of an assistant reply the loss counts */
} ChatPiece;

typedef struct {
    ChatPiece *p;
    size_t n, cap;
} ChatPieces;

/* Renders msgs[0..n) in format f, appending to out (zero-initialised by the caller).
 * Returns 1, or 0 with st saying what is wrong (no message, an unknown role for the format,
 * roles not alternating where the format needs it) without a file or line: the caller
 * prefixes "file:line: ". The concatenation of the pieces' texts is the template's text. */
int chat_render(ChatFormat f, const ChatMsg *msgs, size_t n, ChatPieces *out, ErrStatus *st);
void chat_pieces_free(ChatPieces *ps);

/* ---- the template of a run ------------------------------------------------------------ */

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
 * templates). */
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
