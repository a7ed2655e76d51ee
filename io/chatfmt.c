/* Hand-written chat layouts (see chatfmt.h): each family's official Hugging Face template
 * written out in C as pieces that are trained on or masked, with the checks its template
 * makes (roles alternating, a system message only first). */
#include "chatfmt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/str.h"

/* Indexed by ChatFormat. */
static const char *const chatfmt_names[CHAT_NFORMATS] = {"none",   "llama3", "mistral",
                                                         "llama2", "chatml", "qwen2"};

int chatfmt_parse(const char *name) {
    for (int f = CHAT_NONE + 1; name && f < CHAT_NFORMATS; f++)
        if (strcmp(name, chatfmt_names[f]) == 0) return f;
    return -1;
}

const char *chatfmt_name(ChatFormat f) {
    return f >= CHAT_NONE && f < CHAT_NFORMATS ? chatfmt_names[f] : "unknown";
}

/* ---- pieces ------------------------------------------------------------------------ */

/* Appends text[0..len) to the last piece when that has the same flag, else as a new piece,
 * so adjacent pieces always differ in flag. Empty text adds nothing. */
static void chatfmt_emit(ChatPieces *ps, const char *text, size_t len, int train) {
    if (len == 0) return;
    if (ps->n == 0 || ps->p[ps->n - 1].train != train) {
        if (ps->n == ps->cap) {
            ps->cap = ps->cap ? 2 * ps->cap : 8;
            ps->p = str_xrealloc(ps->p, ps->cap * sizeof *ps->p);
        }
        ps->p[ps->n++] = (ChatPiece){NULL, 0, train};
    }
    ChatPiece *pc = &ps->p[ps->n - 1];
    pc->text = str_xrealloc(pc->text, pc->len + len + 1);
    memcpy(pc->text + pc->len, text, len);
    pc->len += len;
    pc->text[pc->len] = '\0';
}

static void chatfmt_emit_str(ChatPieces *ps, const char *s, int train) {
    chatfmt_emit(ps, s, strlen(s), train);
}

void chatfmt_pieces_free(ChatPieces *ps) {
    for (size_t i = 0; i < ps->n; i++)
        free(ps->p[i].text);
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}

/* ---- Python's str.strip() ---------------------------------------------------------- */

/* The code points for which Python's str.isspace() is true: Jinja's `trim` filter and
 * str.strip() (what the templates call) remove exactly these, not only ASCII blanks. */
static int chatfmt_is_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Decodes s[0..n) when it is exactly one well-formed UTF-8 code point; else returns 0 (such
 * bytes are never whitespace, so stripping stops there). */
static int chatfmt_utf8_exact(const unsigned char *s, size_t n, uint32_t *cp) {
    static const unsigned char lead_bits[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000}; /* below: overlong */
    size_t want = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : 4;
    if (n != want || (n == 4 && (s[0] >> 3) != 30)) return 0;
    uint32_t c = s[0] & lead_bits[n];
    for (size_t k = 1; k < n; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[k] & 0x3F);
    }
    *cp = c;
    return c >= least[n];
}

/* The span [*off, *off + *len) of s[0..n) without leading and trailing whitespace. */
static void chatfmt_strip(const char *s, size_t n, size_t *off, size_t *len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t b = 0, e = n;
    uint32_t c;
    while (b < e) {
        size_t k = 1;
        while (b + k < e && k < 4 && (u[b + k] & 0xC0) == 0x80)
            k++;
        if (!chatfmt_utf8_exact(u + b, k, &c) || !chatfmt_is_space(c)) break;
        b += k;
    }
    while (e > b) {
        size_t k = e - 1;
        while (k > b && e - k < 4 && (u[k] & 0xC0) == 0x80)
            k--;
        if (!chatfmt_utf8_exact(u + k, e - k, &c) || !chatfmt_is_space(c)) break;
        e = k;
    }
    *off = b;
    *len = e - b;
}

static void chatfmt_emit_stripped(ChatPieces *ps, const char *s, size_t n, int train) {
    size_t off, len;
    chatfmt_strip(s, n, &off, &len);
    chatfmt_emit(ps, s + off, len, train);
}

/* ---- checks (before anything is written, so out is untouched on error) ------------- */

static int chatfmt_is(const char *role, const char *name) {
    return strcmp(role, name) == 0;
}

/* mistral and llama2: the templates raise unless the roles after an optional leading
 * system message go user, assistant, user, ... and know no other role. */
static int chatfmt_check_alternating(ChatFormat f, const ChatMsg *m, size_t n, ErrStatus *st) {
    const char *fmt = chatfmt_name(f);
    size_t first = chatfmt_is(m[0].role, "system") ? 1 : 0;
    if (first == 1 && n == 1)
        return err_status_set(st,
                              "messages[0]: a system message needs a user message after it "
                              "(the %s chat format puts it into the first user turn)",
                              fmt);
    for (size_t i = first; i < n; i++) {
        const char *role = m[i].role;
        const char *want = (i - first) % 2 == 0 ? "user" : "assistant";
        if (chatfmt_is(role, "system"))
            return err_status_set(st,
                                  "messages[%zu]: the %s chat format supports a system message "
                                  "only as the first message",
                                  i, fmt);
        if (!chatfmt_is(role, "user") && !chatfmt_is(role, "assistant"))
            return err_status_set(st,
                                  "messages[%zu]: role '%s' is not supported by the %s "
                                  "chat format",
                                  i, role, fmt);
        if (!chatfmt_is(role, want))
            return err_status_set(st,
                                  "messages[%zu]: role '%s' where '%s' was expected (the %s chat "
                                  "format needs user/assistant/user/... after the optional "
                                  "system message)",
                                  i, role, want, fmt);
    }
    return 1;
}

static int chatfmt_check(ChatFormat f, const ChatMsg *m, size_t n, ErrStatus *st) {
    if (f <= CHAT_NONE || f >= CHAT_NFORMATS)
        return err_status_set(st, "no chat format to render messages with (format '%s')",
                              chatfmt_name(f));
    if (n == 0) return err_status_set(st, "messages: the list is empty");
    for (size_t i = 0; i < n; i++) {
        if (!m[i].role) return err_status_set(st, "messages[%zu]: role is missing", i);
        if (!m[i].content) return err_status_set(st, "messages[%zu]: content is null", i);
    }
    if (f == CHAT_MISTRAL || f == CHAT_LLAMA2) return chatfmt_check_alternating(f, m, n, st);
    return 1;
}

/* ---- the formats ------------------------------------------------------------------- */

/* meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json:
 *   {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' +
 *      message['content'] | trim + '<|eot_id|>' %}, bos_token before the first only
 * (`|` binds tighter than `+`: only the content is trimmed). */
static void chatfmt_render_llama3(const ChatMsg *m, size_t n, ChatPieces *ps) {
    chatfmt_emit_str(ps, "<|begin_of_text|>", 0);
    for (size_t i = 0; i < n; i++) {
        int train = chatfmt_is(m[i].role, "assistant");
        chatfmt_emit_str(ps, "<|start_header_id|>", 0);
        chatfmt_emit_str(ps, m[i].role, 0);
        chatfmt_emit_str(ps, "<|end_header_id|>\n\n", 0);
        chatfmt_emit_stripped(ps, m[i].content, strlen(m[i].content), train);
        chatfmt_emit_str(ps, "<|eot_id|>", train);
    }
}

/* mistralai/Mistral-7B-Instruct-v0.2 (and Mixtral-8x7B-Instruct-v0.1) tokenizer_config.json
 * as of December 2023: bos_token, then user '[INST] ' + content + ' [/INST]', assistant
 * content + eos_token, no strip. That template raises on a system message; here a leading
 * one goes before the first user content with "\n\n", as mistral-common's v1 tokenizer and
 * Mistral-7B-Instruct-v0.1's 2024 Hub template do. */
static void chatfmt_render_mistral(const ChatMsg *m, size_t n, ChatPieces *ps) {
    size_t first = chatfmt_is(m[0].role, "system") ? 1 : 0;
    chatfmt_emit_str(ps, "<s>", 0);
    for (size_t i = first; i < n; i++) {
        if (chatfmt_is(m[i].role, "assistant")) {
            chatfmt_emit_str(ps, m[i].content, 1);
            chatfmt_emit_str(ps, "</s>", 1);
            continue;
        }
        chatfmt_emit_str(ps, "[INST] ", 0);
        if (i == first && first == 1) {
            chatfmt_emit_str(ps, m[0].content, 0);
            chatfmt_emit_str(ps, "\n\n", 0);
        }
        chatfmt_emit_str(ps, m[i].content, 0);
        chatfmt_emit_str(ps, " [/INST]", 0);
    }
}

/* meta-llama/Llama-2-7b-chat-hf tokenizer_config.json: user bos_token + '[INST] ' +
 * content.strip() + ' [/INST]', assistant ' ' + content.strip() + ' ' + eos_token, where the
 * first user content is '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content when a system
 * message leads. strip() applies to that whole text, so the system text and the user text's
 * leading whitespace stay as they are there. */
static void chatfmt_render_llama2(const ChatMsg *m, size_t n, ChatPieces *ps) {
    size_t first = chatfmt_is(m[0].role, "system") ? 1 : 0;
    for (size_t i = first; i < n; i++) {
        const char *x = m[i].content;
        if (chatfmt_is(m[i].role, "assistant")) {
            chatfmt_emit_str(ps, " ", 1);
            chatfmt_emit_stripped(ps, x, strlen(x), 1);
            chatfmt_emit_str(ps, " </s>", 1);
            continue;
        }
        chatfmt_emit_str(ps, "<s>[INST] ", 0);
        if (i == first && first == 1) {
            size_t cap = strlen(m[0].content) + strlen(x) + sizeof "<<SYS>>\n\n<</SYS>>\n\n";
            char *t = malloc(cap);
            SL_CHECK(t != NULL, "out of memory");
            int tlen = snprintf(t, cap, "<<SYS>>\n%s\n<</SYS>>\n\n%s", m[0].content, x);
            chatfmt_emit_stripped(ps, t, (size_t)tlen, 0);
            free(t);
        } else {
            chatfmt_emit_stripped(ps, x, strlen(x), 0);
        }
        chatfmt_emit_str(ps, " [/INST]", 0);
    }
}

/* ChatML as in Qwen/Qwen2-7B-Instruct tokenizer_config.json:
 *   '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'
 * and for qwen2, when messages[0]['role'] != 'system', first
 *   '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'.
 * The "\n" after <|im_end|> is not part of the reply, so it is not trained. */
static void chatfmt_render_chatml(const ChatMsg *m, size_t n, int qwen2_default, ChatPieces *ps) {
    if (qwen2_default && !chatfmt_is(m[0].role, "system"))
        chatfmt_emit_str(ps, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n", 0);
    for (size_t i = 0; i < n; i++) {
        int train = chatfmt_is(m[i].role, "assistant");
        chatfmt_emit_str(ps, "<|im_start|>", 0);
        chatfmt_emit_str(ps, m[i].role, 0);
        chatfmt_emit_str(ps, "\n", 0);
        chatfmt_emit_str(ps, m[i].content, train);
        chatfmt_emit_str(ps, "<|im_end|>", train);
        chatfmt_emit_str(ps, "\n", 0);
    }
}

int chatfmt_render(ChatFormat f, const ChatMsg *msgs, size_t n, ChatPieces *out, ErrStatus *st) {
    err_status_ok(st);
    if (!chatfmt_check(f, msgs, n, st)) return 0;
    switch (f) {
    case CHAT_LLAMA3:
        chatfmt_render_llama3(msgs, n, out);
        break;
    case CHAT_MISTRAL:
        chatfmt_render_mistral(msgs, n, out);
        break;
    case CHAT_LLAMA2:
        chatfmt_render_llama2(msgs, n, out);
        break;
    case CHAT_CHATML:
        chatfmt_render_chatml(msgs, n, 0, out);
        break;
    case CHAT_QWEN2:
        chatfmt_render_chatml(msgs, n, 1, out);
        break;
    default:
        SL_FATAL("chat format %d passed the check", (int)f);
    }
    return 1;
}

/* ---- what callers need besides the text ---------------------------------------------- */

/* What a hand-written format puts after the conversation so the model answers (HF's
 * add_generation_prompt): the assistant header; nothing after Mistral's / Llama-2's
 * "[/INST]". */
const char *chatfmt_generation_prompt(ChatFormat f) {
    switch (f) {
    case CHAT_LLAMA3:
        return "<|start_header_id|>assistant<|end_header_id|>\n\n";
    case CHAT_CHATML:
    case CHAT_QWEN2:
        return "<|im_start|>assistant\n";
    default:
        return "";
    }
}

/* The special tokens each hand-written format writes as text: the tokenizer must read each
 * as one token, else the model sees other ids than its template's. */
const char *const *chatfmt_markers(ChatFormat f) {
    static const char *const llama3[] = {"<|begin_of_text|>", "<|start_header_id|>",
                                         "<|end_header_id|>", "<|eot_id|>", NULL};
    static const char *const inst[] = {"<s>", "</s>", NULL};
    static const char *const chatml[] = {"<|im_start|>", "<|im_end|>", NULL};
    static const char *const none[] = {NULL};
    switch (f) {
    case CHAT_LLAMA3:
        return llama3;
    case CHAT_MISTRAL:
    case CHAT_LLAMA2:
        return inst;
    case CHAT_CHATML:
    case CHAT_QWEN2:
        return chatml;
    default:
        return none;
    }
}
