/* Chat templates (see chat.h): the model's own Jinja template found, compiled and rendered
 * by the label rule into segments and counted ranges; and the hand-written fallback layouts
 * (official Hugging Face templates written out in C, as pieces that are trained on or
 * masked) with their detection and their check against the model's template. */
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

/* ---- the template of a run ----------------------------------------------------------- */

#define CHAT_MAX_FILE ((size_t)64 << 20) /* a template file or tokenizer_config.json */

/* 128 bits of FNV-1a in two lanes (different offsets), for ChatTemplate.id: a cache key,
 * not a defence against a chosen collision. Each item is prefixed with its length. */
static void chat_hash(uint64_t h[2], const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t len = n;
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < sizeof len; i++)
            h[k] = (h[k] ^ ((len >> (8 * i)) & 0xFF)) * 0x100000001b3ULL;
        for (size_t i = 0; i < n; i++)
            h[k] = (h[k] ^ b[i]) * 0x100000001b3ULL;
    }
}

static void chat_hash_str(uint64_t h[2], const char *s) {
    chat_hash(h, s ? s : "", s ? strlen(s) : 0);
}

json_t *chat_parse_kwargs(const char *kwargs, ErrStatus *st) {
    if (!kwargs) return json_object();
    json_error_t je;
    json_t *v = json_loads(kwargs, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!v) {
        err_status_set(st, "--chat-template-kwargs: not valid JSON (column %d): %s", je.column,
                       je.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        err_status_set(st, "--chat-template-kwargs: expected a JSON object of variables, such as "
                           "'{\"enable_thinking\": false}'");
        json_decref(v);
        return NULL;
    }
    return v;
}

/* A special token as transformers passes it: the string, or an AddedToken's "content";
 * NULL for anything else (null, a number) and for "" (transformers leaves those out). */
static const char *chat_token_text(const json_t *v) {
    if (json_is_object(v)) v = json_object_get(v, "content");
    const char *s = json_string_value(v);
    return s && s[0] ? s : NULL;
}

/* The special tokens of tokenizer_config.json into vars, as transformers'
 * special_tokens_map gives them to the template (unset ones are left out). */
static void chat_special_tokens(const json_t *cfg, json_t *vars) {
    static const char *const keys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                       "pad_token", "cls_token", "mask_token"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *s = chat_token_text(json_object_get(cfg, keys[i]));
        if (s) json_object_set_new(vars, keys[i], json_string(s));
    }
    const json_t *extra = json_object_get(cfg, "additional_special_tokens");
    json_t *list = json_array();
    size_t i;
    const json_t *e;
    json_array_foreach(extra, i, e) {
        const char *s = chat_token_text(e);
        if (s) json_array_append_new(list, json_string(s));
    }
    if (json_array_size(list) > 0)
        json_object_set_new(vars, "additional_special_tokens", list);
    else
        json_decref(list);
}

/* The texts of a "chat_template" value: a string, or a list of {"name", "template"} where
 * "default" is the template and "tool_use" the one for lines with tools (as transformers'
 * apply_chat_template picks them). Returns 1 (*text NULL when there is none), or 0 with st
 * for a list without "default". */
static int chat_config_template(const json_t *v, const char *path, const char **text,
                                const char **tools_text, ErrStatus *st) {
    *text = *tools_text = NULL;
    if (json_is_string(v)) {
        *text = json_string_value(v);
        return 1;
    }
    if (!json_is_array(v)) return 1;
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *t = json_string_value(json_object_get(e, "template"));
        if (!name || !t) continue;
        if (strcmp(name, "default") == 0) *text = t;
        if (strcmp(name, "tool_use") == 0) *tools_text = t;
    }
    if (!*text && json_array_size(v) > 0)
        return err_status_set(st,
                              "%s: \"chat_template\" is a list of templates with none named "
                              "\"default\"; give one with --chat-template FILE",
                              path);
    return 1;
}

static JinjaTemplate *chat_compile(const char *source, const char *what, const char *text,
                                   size_t len, ErrStatus *st) {
    JinjaErr kind;
    ErrStatus e;
    err_status_ok(&e);
    JinjaTemplate *t = jinja_compile(text, len, &kind, &e);
    if (!t) err_status_set(st, "%s: %s: %s", source, what, e.msg);
    return t;
}

/* The template sources in order: --chat-template, MODEL/chat_template.jinja,
 * tokenizer_config.json's "chat_template". Compiles what is found into ct (nothing found:
 * ct->tpl stays NULL) and hashes the texts into h. */
static int chat_find_template(ChatTemplate *ct, const ChatSetup *s, const json_t *cfg,
                              const char *cfg_path, uint64_t h[2], ErrStatus *st) {
    char *jinja_path = str_join_path(s->model_dir, "chat_template.jinja");
    const char *file = s->template_file;
    ct->why = "--chat-template";
    if (!file && access(jinja_path, F_OK) == 0) {
        file = jinja_path;
        ct->why = "chat_template.jinja";
    }
    int ok = 1;
    if (file) {
        size_t len;
        char *text = afile_read_input(file, CHAT_MAX_FILE, &len, st);
        ok = text != NULL;
        if (ok) {
            ct->source = str_dup(file);
            chat_hash(h, text, len);
            ct->tpl = chat_compile(file, "chat template", text, len, st);
            ok = ct->tpl != NULL;
        }
        free(text);
        free(jinja_path);
        return ok;
    }
    free(jinja_path);
    const char *text, *tools_text;
    if (!chat_config_template(json_object_get(cfg, "chat_template"), cfg_path, &text, &tools_text,
                              st))
        return 0;
    if (!text) return 1;
    ct->why = "tokenizer_config.json";
    ct->source = str_dup(cfg_path);
    chat_hash_str(h, text);
    chat_hash_str(h, tools_text);
    ct->tpl = chat_compile(cfg_path, "chat template", text, strlen(text), st);
    if (ct->tpl && tools_text) {
        ct->tpl_tools = chat_compile(cfg_path, "chat template \"tool_use\"", tools_text,
                                     strlen(tools_text), st);
        if (!ct->tpl_tools) return 0;
    }
    return ct->tpl != NULL;
}

/* The special tokens each hand-written format writes as text: the tokenizer must read each
 * as one token, else the model sees other ids than its template's. */
static const char *const *chat_markers(ChatFormat f) {
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

static int chat_check_markers(ChatFormat f, Tokenizer *tk, ErrStatus *st) {
    TokIds ids = {0};
    int ok = 1;
    for (const char *const *m = chat_markers(f); ok && *m; m++) {
        ids.n = 0;
        ErrStatus e;
        if (!tok_encode(tk, *m, strlen(*m), 0, &ids, &e) || ids.n != 1)
            ok = err_status_set(st,
                                "--chat-format %s writes the special token %s, which is not a "
                                "single token of the model's tokenizer.json (it encodes to %zu "
                                "tokens): this format is not the model's",
                                chat_format_name(f), *m, ids.n);
    }
    tok_ids_free(&ids);
    return ok;
}

/* The conversation --chat-format is compared on: system, user, assistant, user, assistant. */
static json_t *chat_probe_messages(void) {
    static const char *const probe[][2] = {{"system", "You are a helpful assistant."},
                                           {"user", "Hello, who are you?"},
                                           {"assistant", "I am an assistant."},
                                           {"user", "What is 2 + 2?"},
                                           {"assistant", "2 + 2 = 4."}};
    json_t *msgs = json_array();
    for (size_t i = 0; i < sizeof probe / sizeof probe[0]; i++)
        json_array_append_new(msgs,
                              json_pack("{s:s, s:s}", "role", probe[i][0], "content", probe[i][1]));
    return msgs;
}

/* Up to 40 bytes of s[0..n) from off into buf, as a JSON string would write them. */
static const char *chat_excerpt(const char *s, size_t n, size_t off, char *buf, size_t cap) {
    size_t m = n > off ? n - off : 0;
    if (m > 40) m = 40;
    json_t *j = json_stringn_nocheck(s + off, m);
    char *d = json_dumps(j, JSON_ENCODE_ANY);
    snprintf(buf, cap, "%s%s", d ? d : "\"\"", m == 0 ? " (the end)" : "");
    free(d);
    json_decref(j);
    return buf;
}

/* The probe msgs[first..) rendered by the template (1, out filled; else 0 with e) and by
 * format f (*mine, malloc'd). */
static int chat_probe_both(const ChatTemplate *ct, ChatFormat f, json_t *msgs, size_t first,
                           JinjaOutput *out, char **mine, size_t *mlen, ErrStatus *e) {
    size_t n = json_array_size(msgs) - first;
    json_t *sub = json_array(), *vars = json_copy(ct->vars);
    ChatMsg cm[8];
    for (size_t i = 0; i < n && i < 8; i++) {
        json_t *m = json_array_get(msgs, first + i);
        json_array_append(sub, m);
        cm[i] = (ChatMsg){json_string_value(json_object_get(m, "role")),
                          json_string_value(json_object_get(m, "content"))};
    }
    json_object_set_new(vars, "messages", sub);
    json_object_set_new(vars, "add_generation_prompt", json_false());
    JinjaLimits lim = {ct->max_output, ct->max_steps, ct->now};
    JinjaErr kind;
    memset(out, 0, sizeof *out);
    int rendered = jinja_render(ct->tpl, vars, &lim, out, &kind, e);
    json_decref(vars);
    ChatPieces ps = {0};
    ErrStatus ignore;
    chat_render(f, cm, n, &ps, &ignore); /* the probe suits every format */
    *mine = NULL;
    *mlen = 0;
    for (size_t i = 0; i < ps.n; i++) {
        *mine = str_xrealloc(*mine, *mlen + ps.p[i].len + 1);
        memcpy(*mine + *mlen, ps.p[i].text, ps.p[i].len);
        *mlen += ps.p[i].len;
    }
    chat_pieces_free(&ps);
    return rendered;
}

/* --chat-format f against the model's template on the probe conversation (without its
 * system message when the template refuses one, as Mistral v0.2's does). */
static int chat_check_format(const ChatTemplate *ct, ChatFormat f, ErrStatus *st) {
    json_t *msgs = chat_probe_messages();
    JinjaOutput out;
    char *mine;
    size_t mlen;
    ErrStatus e;
    err_status_ok(&e);
    const char *conv = "a system/user/assistant conversation";
    int rendered = chat_probe_both(ct, f, msgs, 0, &out, &mine, &mlen, &e);
    if (!rendered) {
        free(mine);
        rendered = chat_probe_both(ct, f, msgs, 1, &out, &mine, &mlen, &e);
        conv = "a user/assistant conversation";
    }
    int ok = 1;
    const char *name = chat_format_name(f);
    if (!rendered) {
        ok = err_status_set(st,
                            "--chat-format %s does not match the model's own chat template (%s): "
                            "the template fails on %s (%s); drop --chat-format to use the "
                            "model's template",
                            name, ct->source, conv, e.msg);
    } else if (out.len != mlen || memcmp(out.text, mine, mlen) != 0) {
        size_t k = 0;
        while (k < out.len && k < mlen && out.text[k] == mine[k])
            k++;
        char a[128], b[128];
        ok = err_status_set(st,
                            "--chat-format %s does not match the model's own chat template (%s): "
                            "at byte %zu of %s the template writes %s, %s writes %s; drop "
                            "--chat-format to use the model's template",
                            name, ct->source, k, conv,
                            chat_excerpt(out.text, out.len, k, a, sizeof a), name,
                            chat_excerpt(mine, mlen, k, b, sizeof b));
    }
    free(mine);
    jinja_output_free(&out);
    json_decref(msgs);
    return ok;
}

void chat_template_init_format(ChatTemplate *ct, ChatFormat f) {
    memset(ct, 0, sizeof *ct);
    ct->format = f;
    ct->why = f == CHAT_NONE ? "none" : "--chat-format";
    ct->vars = json_object();
    ct->max_output = (size_t)16 << 20;
    ct->max_steps = 20000000;
    ct->now = -1;
    snprintf(ct->id, sizeof ct->id, "%s", f == CHAT_NONE ? "none" : chat_format_name(f));
}

void chat_template_free(ChatTemplate *ct) {
    if (ct->tpl) jinja_free(ct->tpl);
    if (ct->tpl_tools) jinja_free(ct->tpl_tools);
    free(ct->source);
    if (ct->vars) json_decref(ct->vars);
    memset(ct, 0, sizeof *ct);
}

const char *chat_template_describe(const ChatTemplate *ct, char *buf, size_t cap) {
    if (ct->tpl)
        snprintf(buf, cap, "the model's template (%s%s%s)", ct->source,
                 ct->has_generation ? ", {% generation %} blocks" : "",
                 ct->format != CHAT_NONE ? "; --chat-format matches it" : "");
    else if (ct->format != CHAT_NONE)
        snprintf(buf, cap, "%s (--chat-format)", chat_format_name(ct->format));
    else
        snprintf(buf, cap, "none");
    return buf;
}

/* chat_template_load's steps; on failure ct holds what was set up (the caller frees it). */
static int chat_template_load_parts(ChatTemplate *ct, const ChatSetup *s, int *status,
                                    ErrStatus *st) {
    *status = EXIT_USAGE;
    ChatFormat f = CHAT_NONE;
    if (s->format && strcmp(s->format, "auto") != 0) {
        int k = chat_parse_format(s->format);
        if (k < 0)
            return err_status_set(
                st, "--chat-format '%s': expected auto, llama3, mistral, llama2, chatml or qwen2",
                s->format);
        f = (ChatFormat)k;
    }
    json_t *kwargs = chat_parse_kwargs(s->kwargs, st);
    if (!kwargs) return 0;
    *status = EXIT_BAD_INPUT;
    char *cfg_path = str_join_path(s->model_dir, "tokenizer_config.json");
    int absent;
    json_t *cfg = chat_load_config(cfg_path, &absent, st);
    int ok = cfg != NULL || absent;
    uint64_t h[2] = {0xcbf29ce484222325ULL, 0x84222325cbf29ce4ULL};
    if (ok) {
        chat_special_tokens(cfg, ct->vars);
        json_object_update(ct->vars, kwargs); /* transformers: kwargs over special tokens */
        ok = chat_find_template(ct, s, cfg, cfg_path, h, st);
    }
    json_decref(kwargs);
    if (cfg) json_decref(cfg);
    free(cfg_path);
    if (!ok) return 0;
    *status = EXIT_USAGE; /* --chat-format names a layout that is not the model's */
    if (f != CHAT_NONE && s->tk && !chat_check_markers(f, s->tk, st)) return 0;
    if (ct->tpl && f != CHAT_NONE && !chat_check_format(ct, f, st)) return 0;
    ct->format = f;
    if (ct->tpl) ct->has_generation = jinja_has_generation(ct->tpl);
    if (!ct->tpl && f == CHAT_NONE) {
        ct->why = "none";
        snprintf(ct->id, sizeof ct->id, "none");
        return 1;
    }
    if (!ct->tpl) ct->why = "--chat-format";
    char *vars = json_dumps(ct->vars, JSON_SORT_KEYS | JSON_COMPACT);
    chat_hash_str(h, vars);
    free(vars);
    chat_hash_str(h, ct->tpl ? "jinja" : chat_format_name(f));
    snprintf(ct->id, sizeof ct->id, "%016llx%016llx", (unsigned long long)str_mix64(h[0]),
             (unsigned long long)str_mix64(h[1]));
    return 1;
}

int chat_template_load(ChatTemplate *ct, const ChatSetup *s, int *status, ErrStatus *st) {
    err_status_ok(st);
    chat_template_init_format(ct, CHAT_NONE);
    if (chat_template_load_parts(ct, s, status, st)) return 1;
    chat_template_free(ct);
    chat_template_init_format(ct, CHAT_NONE);
    return 0;
}

/* ---- rendering by the label rule ----------------------------------------------------- */

void chat_render_free(ChatRender *r) {
    free(r->text);
    free(r->seg_end);
    free(r->span);
    memset(r, 0, sizeof *r);
}

static void chat_out_text(ChatRender *r, const char *s, size_t n) {
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1)
            cap *= 2;
        r->text = str_xrealloc(r->text, cap);
        r->cap = cap;
    }
    memcpy(r->text + r->len, s, n);
    r->len += n;
    r->text[r->len] = '\0';
}

/* Marks [start, end) of the text counted (joined to the last span when they touch). */
static void chat_out_span(ChatRender *r, size_t start, size_t end) {
    if (end <= start) return;
    if (r->nspan > 0 && r->span[r->nspan - 1].end >= start) {
        if (end > r->span[r->nspan - 1].end) r->span[r->nspan - 1].end = end;
        return;
    }
    if (r->nspan == r->span_cap) {
        r->span_cap = r->span_cap ? 2 * r->span_cap : 16;
        r->span = str_xrealloc(r->span, r->span_cap * sizeof *r->span);
    }
    r->span[r->nspan++] = (ChatSpan){start, end};
}

static void chat_out_segment(ChatRender *r) {
    if (r->nseg == r->seg_cap) {
        r->seg_cap = r->seg_cap ? 2 * r->seg_cap : 4;
        r->seg_end = str_xrealloc(r->seg_end, r->seg_cap * sizeof *r->seg_end);
    }
    r->seg_end[r->nseg++] = r->len;
}

/* One conversation's rendering state: the template, its variables with tools / documents
 * of the line, and the messages. */
typedef struct {
    const ChatTemplate *ct;
    const JinjaTemplate *t;
    json_t *vars; /* owned */
    json_t *msgs;
} ChatConv;

/* R(k, gen) into out (freed by the caller on success). */
static int chat_conv_render(const ChatConv *c, size_t k, int gen, JinjaOutput *out, ErrStatus *st) {
    json_t *sub = json_array();
    for (size_t i = 0; i < k; i++)
        json_array_append(sub, json_array_get(c->msgs, i));
    json_object_set_new(c->vars, "messages", sub);
    json_object_set_new(c->vars, "add_generation_prompt", json_boolean(gen));
    JinjaLimits lim = {c->ct->max_output, c->ct->max_steps, c->ct->now};
    JinjaErr kind = JINJA_OK;
    ErrStatus e;
    err_status_ok(&e);
    memset(out, 0, sizeof *out);
    if (jinja_render(c->t, c->vars, &lim, out, &kind, &e)) return 1;
    if (kind == JINJA_ERR_RAISED) return err_status_set(st, "template error: %s", e.msg);
    return err_status_set(st, "chat template: %s", e.msg);
}

static int chat_starts_with(const char *s, size_t n, const char *p, size_t pn) {
    return pn <= n && memcmp(s, p, pn) == 0;
}

/* The incremental rule (chat.h) over the assistant messages of c into out. */
static int chat_conv_incremental(const ChatConv *c, size_t n, int train_on_prompt, ChatRender *out,
                                 ErrStatus *st) {
    size_t seg = 0; /* where the current segment starts in out->text */
    int assistants = 0;
    for (size_t i = 0; i < n; i++) {
        const char *role = json_string_value(json_object_get(json_array_get(c->msgs, i), "role"));
        if (strcmp(role, "assistant") != 0) continue;
        assistants++;
        JinjaOutput p, nx;
        if (!chat_conv_render(c, i, 1, &p, st)) return 0;
        if (!chat_conv_render(c, i + 1, 0, &nx, st)) {
            jinja_output_free(&p);
            return 0;
        }
        int ok = chat_starts_with(nx.text, nx.len, p.text, p.len);
        if (!ok)
            err_status_set(st,
                           "chat template: the template does not render assistant message "
                           "messages[%zu] as a continuation of its prompt (the conversation up "
                           "to it with add_generation_prompt=True is not a prefix of the "
                           "conversation with it)",
                           i);
        const char *e = out->text ? out->text + seg : "";
        size_t elen = out->len - seg;
        if (ok && !chat_starts_with(p.text, p.len, e, elen)) {
            chat_out_segment(out); /* an earlier turn renders differently now: new segment */
            seg = out->len;
            elen = 0;
        }
        if (ok) {
            chat_out_text(out, p.text + elen, p.len - elen);
            size_t a = out->len;
            chat_out_text(out, nx.text + p.len, nx.len - p.len);
            chat_out_span(out, a, out->len);
        }
        jinja_output_free(&p);
        jinja_output_free(&nx);
        if (!ok) return 0;
    }
    if (assistants == 0 && !train_on_prompt)
        return err_status_set(st, "nothing to train on: the conversation has no assistant "
                                  "message (--train-on-prompt counts it whole)");
    JinjaOutput f;
    if (!chat_conv_render(c, n, 0, &f, st)) return 0;
    size_t elen = out->len - seg;
    if (chat_starts_with(f.text, f.len, out->text ? out->text + seg : "", elen))
        chat_out_text(out, f.text + elen, f.len - elen);
    jinja_output_free(&f);
    chat_out_segment(out);
    return 1;
}

static int chat_span_cmp(const void *a, const void *b) {
    const ChatSpan *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start ? 1 : 0;
}

/* A template with {% generation %} blocks: F, its generation spans counted. */
static int chat_conv_generation(const ChatConv *c, size_t n, ChatRender *out, ErrStatus *st) {
    JinjaOutput f;
    if (!chat_conv_render(c, n, 0, &f, st)) return 0;
    chat_out_text(out, f.text, f.len);
    /* nested blocks come out of order; none rendered: f.gen is NULL, which qsort must not get */
    if (f.ngen > 1) qsort(f.gen, f.ngen, sizeof *f.gen, chat_span_cmp);
    for (size_t i = 0; i < f.ngen; i++)
        chat_out_span(out, f.gen[i].start, f.gen[i].end);
    chat_out_segment(out);
    jinja_output_free(&f);
    return 1;
}

/* A hand-written format: its pieces as one segment, the trained ones counted. */
static int chat_conv_format(ChatFormat f, json_t *msgs, size_t n, ChatRender *out, ErrStatus *st) {
    ChatMsg *cm = calloc(n, sizeof *cm);
    SL_CHECK(cm != NULL, "out of memory");
    int ok = 1;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *m = json_array_get(msgs, i), *content = json_object_get(m, "content");
        if (!json_is_string(content))
            ok = err_status_set(st,
                                "\"messages\"[%zu].\"content\" must be a string for --chat-format "
                                "%s (the model's own template takes lists and null)",
                                i, chat_format_name(f));
        else if (strlen(json_string_value(content)) != json_string_length(content))
            ok = err_status_set(st, "\"messages\"[%zu] contains a \\u0000 character", i);
        else
            cm[i] = (ChatMsg){json_string_value(json_object_get(m, "role")),
                              json_string_value(content)};
    }
    ChatPieces ps = {0};
    if (ok) ok = chat_render(f, cm, n, &ps, st);
    for (size_t k = 0; ok && k < ps.n; k++) {
        size_t a = out->len;
        chat_out_text(out, ps.p[k].text, ps.p[k].len);
        if (ps.p[k].train) chat_out_span(out, a, out->len);
    }
    if (ok) chat_out_segment(out);
    chat_pieces_free(&ps);
    free(cm);
    return ok;
}

/* The messages of a line: a non-empty array of objects with a string "role". */
static int chat_check_messages(json_t *msgs, ErrStatus *st) {
    if (!json_is_array(msgs)) return err_status_set(st, "\"messages\" must be an array");
    if (json_array_size(msgs) == 0) return err_status_set(st, "\"messages\" is empty");
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (!json_is_object(m))
            return err_status_set(st, "\"messages\"[%zu] must be an object, not %s", i,
                                  json_is_array(m)    ? "an array"
                                  : json_is_string(m) ? "a string"
                                  : json_is_number(m) ? "a number"
                                  : json_is_null(m)   ? "null"
                                                      : "a boolean");
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role))
            return err_status_set(st, "\"messages\"[%zu].\"role\" must be a string", i);
        if (strlen(json_string_value(role)) != json_string_length(role))
            return err_status_set(st, "\"messages\"[%zu] contains a \\u0000 character", i);
    }
    return 1;
}

static const char chat_no_template[] =
    "a \"messages\" line needs a chat template: the model has none (no --chat-template, "
    "chat_template.jinja or \"chat_template\" in tokenizer_config.json); give --chat-template "
    "FILE or --chat-format llama3|mistral|llama2|chatml|qwen2, or pre-tokenise (input_ids, "
    "labels)";

/* The variables of one line: the template's, plus the line's tools and documents, none
 * when the line has none (transformers passes tools=None, documents=None: a template's
 * `tools is defined` is true and `tools is none` tells). */
static void chat_conv_init(ChatConv *c, const ChatTemplate *ct, json_t *msgs, json_t *tools,
                           json_t *docs) {
    if (json_is_null(tools)) tools = NULL;
    if (json_is_null(docs)) docs = NULL;
    c->ct = ct;
    c->t = tools && ct->tpl_tools ? ct->tpl_tools : ct->tpl;
    c->vars = json_copy(ct->vars);
    c->msgs = msgs;
    if (tools || !json_object_get(c->vars, "tools"))
        json_object_set_new(c->vars, "tools", tools ? json_incref(tools) : json_null());
    if (docs || !json_object_get(c->vars, "documents"))
        json_object_set_new(c->vars, "documents", docs ? json_incref(docs) : json_null());
}

int chat_render_line(const ChatTemplate *ct, json_t *line, int train_on_prompt, ChatRender *out,
                     ErrStatus *st) {
    err_status_ok(st);
    out->len = out->nseg = out->nspan = 0;
    json_t *msgs = json_object_get(line, "messages");
    if (!chat_check_messages(msgs, st)) return 0;
    size_t n = json_array_size(msgs);
    if (!ct->tpl && ct->format == CHAT_NONE) return err_status_set(st, "%s", chat_no_template);
    if (!ct->tpl) return chat_conv_format(ct->format, msgs, n, out, st);
    ChatConv c;
    chat_conv_init(&c, ct, msgs, json_object_get(line, "tools"),
                   json_object_get(line, "documents"));
    int ok = jinja_has_generation(c.t) ? chat_conv_generation(&c, n, out, st)
                                       : chat_conv_incremental(&c, n, train_on_prompt, out, st);
    json_decref(c.vars);
    return ok;
}

/* What a hand-written format puts after the conversation so the model answers (HF's
 * add_generation_prompt): the assistant header; nothing after Mistral's / Llama-2's
 * "[/INST]". */
static const char *chat_generation_prompt(ChatFormat f) {
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

int chat_render_prompt(const ChatTemplate *ct, json_t *messages, json_t *tools, json_t *documents,
                       char **text, size_t *len, ErrStatus *st) {
    err_status_ok(st);
    *text = NULL;
    *len = 0;
    if (!chat_check_messages(messages, st)) return 0;
    size_t n = json_array_size(messages);
    if (!ct->tpl && ct->format == CHAT_NONE)
        return err_status_set(st, "a chat prompt needs a chat template: the model has none; give "
                                  "--chat-template FILE or --chat-format NAME");
    if (!ct->tpl) {
        ChatRender r = {0};
        if (!chat_conv_format(ct->format, messages, n, &r, st)) {
            chat_render_free(&r);
            return 0;
        }
        const char *gp = chat_generation_prompt(ct->format);
        chat_out_text(&r, gp, strlen(gp));
        *text = r.text;
        *len = r.len;
        r.text = NULL;
        chat_render_free(&r);
        return 1;
    }
    ChatConv c;
    chat_conv_init(&c, ct, messages, tools, documents);
    JinjaOutput out;
    int ok = chat_conv_render(&c, n, 1, &out, st);
    json_decref(c.vars);
    if (!ok) return 0;
    *text = out.text;
    *len = out.len;
    out.text = NULL;
    jinja_output_free(&out);
    return 1;
}
