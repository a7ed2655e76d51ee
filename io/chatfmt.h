/* Hand-written chat layouts: a few families' official Hugging Face chat templates written out
 * in C, for models without a template of their own (--chat-format). A conversation renders
 * as pieces that are either trained on (assistant replies and their end-of-turn token) or
 * masked. Special tokens appear as their text ("<|eot_id|>", "<s>"); the tokenizer matches
 * them. io/chat.h uses these when a run has no model template, and checks them against the
 * model's template when both are given.
 *
 * The layouts (with the documented strings; R = role, X = content):
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
#ifndef SHARDLORA_IO_CHATFMT_H
#define SHARDLORA_IO_CHATFMT_H

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
int chatfmt_parse(const char *name);
/* The name of a format ("none" for CHAT_NONE, "unknown" outside the enum). */
const char *chatfmt_name(ChatFormat f);

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
    ChatPiece *p; /* [n] non-empty; neighbours differ in train */
    size_t n, cap;
} ChatPieces;

/* Renders msgs[0..n) in format f, appending to out (zero-initialised by the caller).
 * Returns 1, or 0 with st saying what is wrong (no message, an unknown role for the format,
 * roles not alternating where the format needs it, CHAT_NONE) without a file or line, out
 * untouched: the caller prefixes "file:line: ". The concatenation of the pieces' texts is
 * the template's text. */
int chatfmt_render(ChatFormat f, const ChatMsg *msgs, size_t n, ChatPieces *out, ErrStatus *st);
void chatfmt_pieces_free(ChatPieces *ps);

/* What format f puts after a conversation so the model answers (HF's add_generation_prompt):
 * the assistant header; "" after Mistral's / Llama-2's "[/INST]" and for CHAT_NONE. */
const char *chatfmt_generation_prompt(ChatFormat f);
/* The special tokens format f writes as text, NULL-terminated (empty for CHAT_NONE): the
 * tokenizer must read each as one token, else the model sees other ids than its
 * template's. */
const char *const *chatfmt_markers(ChatFormat f);

#endif
