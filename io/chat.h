/* Chat templates of the supported model families, rendered exactly as the Jinja
 * `chat_template` of each family's tokenizer_config.json renders a conversation (no Jinja
 * engine: the few official templates are written out in C), as a list of pieces that
 * are either trained on (assistant replies and their end-of-turn token) or masked.
 * Special tokens appear as their text ("<|eot_id|>", "<s>"); the tokenizer matches them.
 *
 * Formats (with the documented strings; R = role, X = content):
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

#include <stddef.h>

#include "../runtime/err.h"

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

#endif
