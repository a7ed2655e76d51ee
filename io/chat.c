/* Chat templates of the supported families (see chat.h): each official Hugging Face Jinja
 * `chat_template` written out in C, rendered as pieces that are trained on or masked, and
 * their detection, which names a family only for templates rendered here byte for byte. */
#include "chat.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "afile.h"
#include "runtime/str.h"

/* Indexed by ChatFormat. */
static const char *const chat_names[CHAT_NFORMATS] = {"none",   "llama3", "mistral",
                                                      "llama2", "chatml", "qwen2"};

int chat_parse_format(const char *name) {
    for (int f = CHAT_NONE + 1; name && f < CHAT_NFORMATS; f++)
        if (strcmp(name, chat_names[f]) == 0) return f;
    return -1;
}

const char *chat_format_name(ChatFormat f) {
    return f >= CHAT_NONE && f < CHAT_NFORMATS ? chat_names[f] : "unknown";
}

/* ---- detection --------------------------------------------------------------------- */

/* Qwen2's default system turn after "<|im_start|>system" and its newline as the template
 * file has it: a real one (JSON "\n") or the Jinja escape (JSON "\\n"). */
static int chat_is_qwen2_default(const char *after_system) {
    static const char dflt[] = "You are a helpful assistant.<|im_end|>";
    const char *p = after_system;
    if (*p == '\n')
        p += 1;
    else if (p[0] == '\\' && p[1] == 'n')
        p += 2;
    else
        return 0;
    return strncmp(p, dflt, sizeof dflt - 1) == 0;
}

/* A ChatML template renders as chatml or qwen2 only when it writes no system turn of its
 * own (the text "<|im_start|>system" is absent: plain ChatML) or when every one it writes
 * is Qwen2's exact default ("<|im_start|>system" + newline + "You are a helpful
 * assistant.<|im_end|>"). Any other is another layout: Qwen1.5's default lacks the full
 * stop, Qwen2.5's is "You are Qwen, created by Alibaba Cloud. ..." and it writes the
 * system turn in pieces, Qwen2.5-Math asks to reason step by step. Qwen3's templates
 * (they contain "<think>") put "<think>\n\n</think>\n\n" before the last assistant reply.
 * All of these are CHAT_NONE, so the user chooses with --chat-format. */
static ChatFormat chat_family_chatml(const char *tpl) {
    static const char sys[] = "<|im_start|>system";
    if (strstr(tpl, "<think>")) return CHAT_NONE;
    int n = 0;
    for (const char *p = strstr(tpl, sys); p; p = strstr(p + 1, sys), n++)
        if (!chat_is_qwen2_default(p + sizeof sys - 1)) return CHAT_NONE;
    return n > 0 ? CHAT_QWEN2 : CHAT_CHATML;
}

/* The [INST] family renders "X [/INST]": Mistral v0.3 and later (and the tekken
 * templates) write '[INST] ' + X + '[/INST]' with no space before "[/INST]" (and fold the
 * system message into the last user turn), so any "[/INST]" in the template not preceded
 * by a space means another layout: CHAT_NONE. */
static ChatFormat chat_family_inst(const char *tpl) {
    static const char close[] = "[/INST]";
    for (const char *p = strstr(tpl, close); p; p = strstr(p + 1, close))
        if (p == tpl || p[-1] != ' ') return CHAT_NONE;
    return strstr(tpl, "<<SYS>>") ? CHAT_LLAMA2 : CHAT_MISTRAL;
}

/* The family of a template, by the markers only its family's templates contain; CHAT_NONE
 * unless the template is one rendered here byte for byte. */
static ChatFormat chat_family(const char *tpl) {
    /* Llama 3.1 and later always open with a system header holding "Cutting Knowledge Date"
     * and a date (3.2: today's): not the llama3 layout, and not rendered here */
    if (strstr(tpl, "<|start_header_id|>"))
        return strstr(tpl, "Cutting Knowledge Date") ? CHAT_NONE : CHAT_LLAMA3;
    if (strstr(tpl, "<|im_start|>")) return chat_family_chatml(tpl);
    if (strstr(tpl, "[INST]")) return chat_family_inst(tpl);
    return CHAT_NONE;
}

/* "chat_template" is a string, or (transformers >= 4.40, several templates) a list of
 * {"name", "template"}: the one named "default", else the first. NULL if there is none. */
static const char *chat_template_text(const json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    const char *first = NULL;
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *text = json_string_value(json_object_get(e, "template"));
        if (!text) continue;
        if (name && strcmp(name, "default") == 0) return text;
        if (!first) first = text;
    }
    return first;
}

/* Parses path. NULL when it does not exist (*absent = 1: a model directory without the
 * file simply has no template to detect) or with st set when it cannot be read or parsed. */
static json_t *chat_load_config(const char *path, int *absent, ErrStatus *st) {
    *absent = 0;
    /* Numbers as doubles: the Hub's files say "model_max_length":
     * 1000000000000000019884624838656 (int(1e30)), which jansson's int64 integers reject.
     * No JSON_REJECT_DUPLICATES: transformers reads the file with Python's json, where the
     * last duplicate wins, as it does in jansson. 64 MB: far above any chat template. */
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        *absent = 1;
        return NULL;
    }
    return afile_read_json(path, (size_t)64 << 20, JSON_DECODE_INT_AS_REAL, st);
}

int chat_detect(const char *model_dir, ChatFormat *out, ErrStatus *st) {
    err_status_ok(st);
    *out = CHAT_NONE;
    static const char leaf[] = "/tokenizer_config.json";
    size_t dlen = strlen(model_dir);
    char *path = malloc(dlen + sizeof leaf);
    SL_CHECK(path != NULL, "out of memory");
    memcpy(path, model_dir, dlen);
    memcpy(path + dlen, leaf, sizeof leaf);
    int absent;
    json_t *root = chat_load_config(path, &absent, st);
    free(path);
    if (!root) return absent;
    const char *tpl = chat_template_text(json_object_get(root, "chat_template"));
    if (tpl) *out = chat_family(tpl);
    json_decref(root);
    return 1;
}

/* ---- pieces ------------------------------------------------------------------------ */

/* Appends text[0..len) to the last piece when that has the same flag, else as a new piece,
 * so adjacent pieces always differ in flag. Empty text adds nothing. */
static void chat_emit(ChatPieces *ps, const char *text, size_t len, int train) {
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

static void chat_emit_str(ChatPieces *ps, const char *s, int train) {
    chat_emit(ps, s, strlen(s), train);
}

void chat_pieces_free(ChatPieces *ps) {
    for (size_t i = 0; i < ps->n; i++)
        free(ps->p[i].text);
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}

/* ---- Python's str.strip() ---------------------------------------------------------- */

/* The code points for which Python's str.isspace() is true: Jinja's `trim` filter and
 * str.strip() (what the templates call) remove exactly these, not only ASCII blanks. */
static int chat_is_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Decodes s[0..n) when it is exactly one well-formed UTF-8 code point; else returns 0 (such
 * bytes are never whitespace, so stripping stops there). */
static int chat_utf8_exact(const unsigned char *s, size_t n, uint32_t *cp) {
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
static void chat_strip(const char *s, size_t n, size_t *off, size_t *len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t b = 0, e = n;
    uint32_t c;
    while (b < e) {
        size_t k = 1;
        while (b + k < e && k < 4 && (u[b + k] & 0xC0) == 0x80)
            k++;
        if (!chat_utf8_exact(u + b, k, &c) || !chat_is_space(c)) break;
        b += k;
    }
    while (e > b) {
        size_t k = e - 1;
        while (k > b && e - k < 4 && (u[k] & 0xC0) == 0x80)
            k--;
        if (!chat_utf8_exact(u + k, e - k, &c) || !chat_is_space(c)) break;
        e = k;
    }
    *off = b;
    *len = e - b;
}

static void chat_emit_stripped(ChatPieces *ps, const char *s, size_t n, int train) {
    size_t off, len;
    chat_strip(s, n, &off, &len);
    chat_emit(ps, s + off, len, train);
}

/* ---- checks (before anything is written, so out is untouched on error) ------------- */

static int chat_is(const char *role, const char *name) {
    return strcmp(role, name) == 0;
}

/* mistral and llama2: the templates raise unless the roles after an optional leading
 * system message go user, assistant, user, ... and know no other role. */
static int chat_check_alternating(ChatFormat f, const ChatMsg *m, size_t n, ErrStatus *st) {
    const char *fmt = chat_format_name(f);
    size_t first = chat_is(m[0].role, "system") ? 1 : 0;
    if (first == 1 && n == 1)
        return err_status_set(st,
                              "messages[0]: a system message needs a user message after it "
                              "(the %s chat format puts it into the first user turn)",
                              fmt);
    for (size_t i = first; i < n; i++) {
        const char *role = m[i].role;
        const char *want = (i - first) % 2 == 0 ? "user" : "assistant";
        if (chat_is(role, "system"))
            return err_status_set(st,
                                  "messages[%zu]: the %s chat format supports a system message "
                                  "only as the first message",
                                  i, fmt);
        if (!chat_is(role, "user") && !chat_is(role, "assistant"))
            return err_status_set(st,
                                  "messages[%zu]: role '%s' is not supported by the %s "
                                  "chat format",
                                  i, role, fmt);
        if (!chat_is(role, want))
            return err_status_set(st,
                                  "messages[%zu]: role '%s' where '%s' was expected (the %s chat "
                                  "format needs user/assistant/user/... after the optional "
                                  "system message)",
                                  i, role, want, fmt);
    }
    return 1;
}

static int chat_check(ChatFormat f, const ChatMsg *m, size_t n, ErrStatus *st) {
    if (f <= CHAT_NONE || f >= CHAT_NFORMATS)
        return err_status_set(st, "no chat format to render messages with (format '%s')",
                              chat_format_name(f));
    if (n == 0) return err_status_set(st, "messages: the list is empty");
    for (size_t i = 0; i < n; i++) {
        if (!m[i].role) return err_status_set(st, "messages[%zu]: role is missing", i);
        if (!m[i].content) return err_status_set(st, "messages[%zu]: content is null", i);
    }
    if (f == CHAT_MISTRAL || f == CHAT_LLAMA2) return chat_check_alternating(f, m, n, st);
    return 1;
}

/* ---- the formats ------------------------------------------------------------------- */

/* meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json:
 *   {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' +
 *      message['content'] | trim + '<|eot_id|>' %}, bos_token before the first only
 * (`|` binds tighter than `+`: only the content is trimmed). */
static void chat_render_llama3(const ChatMsg *m, size_t n, ChatPieces *ps) {
    chat_emit_str(ps, "<|begin_of_text|>", 0);
    for (size_t i = 0; i < n; i++) {
        int train = chat_is(m[i].role, "assistant");
        chat_emit_str(ps, "<|start_header_id|>", 0);
        chat_emit_str(ps, m[i].role, 0);
        chat_emit_str(ps, "<|end_header_id|>\n\n", 0);
        chat_emit_stripped(ps, m[i].content, strlen(m[i].content), train);
        chat_emit_str(ps, "<|eot_id|>", train);
    }
}

/* mistralai/Mistral-7B-Instruct-v0.2 (and Mixtral-8x7B-Instruct-v0.1) tokenizer_config.json
 * as of December 2023: bos_token, then user '[INST] ' + content + ' [/INST]', assistant
 * content + eos_token, no strip. That template raises on a system message; here a leading
 * one goes before the first user content with "\n\n", as mistral-common's v1 tokenizer and
 * Mistral-7B-Instruct-v0.1's 2024 Hub template do. */
static void chat_render_mistral(const ChatMsg *m, size_t n, ChatPieces *ps) {
    size_t first = chat_is(m[0].role, "system") ? 1 : 0;
    chat_emit_str(ps, "<s>", 0);
    for (size_t i = first; i < n; i++) {
        if (chat_is(m[i].role, "assistant")) {
            chat_emit_str(ps, m[i].content, 1);
            chat_emit_str(ps, "</s>", 1);
            continue;
        }
        chat_emit_str(ps, "[INST] ", 0);
        if (i == first && first == 1) {
            chat_emit_str(ps, m[0].content, 0);
            chat_emit_str(ps, "\n\n", 0);
        }
        chat_emit_str(ps, m[i].content, 0);
        chat_emit_str(ps, " [/INST]", 0);
    }
}

/* meta-llama/Llama-2-7b-chat-hf tokenizer_config.json: user bos_token + '[INST] ' +
 * content.strip() + ' [/INST]', assistant ' ' + content.strip() + ' ' + eos_token, where the
 * first user content is '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content when a system
 * message leads. strip() applies to that whole text, so the system text and the user text's
 * leading whitespace stay as they are there. */
static void chat_render_llama2(const ChatMsg *m, size_t n, ChatPieces *ps) {
    size_t first = chat_is(m[0].role, "system") ? 1 : 0;
    for (size_t i = first; i < n; i++) {
        const char *x = m[i].content;
        if (chat_is(m[i].role, "assistant")) {
            chat_emit_str(ps, " ", 1);
            chat_emit_stripped(ps, x, strlen(x), 1);
            chat_emit_str(ps, " </s>", 1);
            continue;
        }
        chat_emit_str(ps, "<s>[INST] ", 0);
        if (i == first && first == 1) {
            size_t cap = strlen(m[0].content) + strlen(x) + sizeof "<<SYS>>\n\n<</SYS>>\n\n";
            char *t = malloc(cap);
            SL_CHECK(t != NULL, "out of memory");
            int tlen = snprintf(t, cap, "<<SYS>>\n%s\n<</SYS>>\n\n%s", m[0].content, x);
            chat_emit_stripped(ps, t, (size_t)tlen, 0);
            free(t);
        } else {
            chat_emit_stripped(ps, x, strlen(x), 0);
        }
        chat_emit_str(ps, " [/INST]", 0);
    }
}

/* ChatML as in Qwen/Qwen2-7B-Instruct tokenizer_config.json:
 *   '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'
 * and for qwen2, when messages[0]['role'] != 'system', first
 *   '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'.
 * The "\n" after <|im_end|> is not part of the reply, so it is not trained. */
static void chat_render_chatml(const ChatMsg *m, size_t n, int qwen2_default, ChatPieces *ps) {
    if (qwen2_default && !chat_is(m[0].role, "system"))
        chat_emit_str(ps, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n", 0);
    for (size_t i = 0; i < n; i++) {
        int train = chat_is(m[i].role, "assistant");
        chat_emit_str(ps, "<|im_start|>", 0);
        chat_emit_str(ps, m[i].role, 0);
        chat_emit_str(ps, "\n", 0);
        chat_emit_str(ps, m[i].content, train);
        chat_emit_str(ps, "<|im_end|>", train);
        chat_emit_str(ps, "\n", 0);
    }
}

int chat_render(ChatFormat f, const ChatMsg *msgs, size_t n, ChatPieces *out, ErrStatus *st) {
    err_status_ok(st);
    if (!chat_check(f, msgs, n, st)) return 0;
    switch (f) {
    case CHAT_LLAMA3:
        chat_render_llama3(msgs, n, out);
        break;
    case CHAT_MISTRAL:
        chat_render_mistral(msgs, n, out);
        break;
    case CHAT_LLAMA2:
        chat_render_llama2(msgs, n, out);
        break;
    case CHAT_CHATML:
        chat_render_chatml(msgs, n, 0, out);
        break;
    case CHAT_QWEN2:
        chat_render_chatml(msgs, n, 1, out);
        break;
    default:
        SL_FATAL("chat format %d passed the check", (int)f);
    }
    return 1;
}
