/* Chat templates (see chat.h): the model's own Jinja template found, compiled and rendered
 * by the label rule into segments and counted ranges; a hand-written layout (io/chatfmt.h)
 * as the fallback, checked against the model's template when both are given. */
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

/* ---- the template of a run ----------------------------------------------------------- */

#define CHAT_MAX_FILE ((size_t)64 << 20) /* a template file or tokenizer_config.json */

/* Parses path. NULL when it does not exist (*absent = 1: a model directory without the
 * file simply has no template there) or with st set when it cannot be read or parsed. */
static json_t *chat_load_config(const char *path, int *absent, ErrStatus *st) {
    *absent = 0;
    /* Numbers as doubles: the Hub's files say "model_max_length":
     * 1000000000000000019884624838656 (int(1e30)), which jansson's int64 integers reject.
     * No JSON_REJECT_DUPLICATES: transformers reads the file with Python's json, where the
     * last duplicate wins, as it does in jansson. */
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        *absent = 1;
        return NULL;
    }
    return afile_read_json(path, CHAT_MAX_FILE, JSON_DECODE_INT_AS_REAL, st);
}

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

/* Each special token format f writes (chatfmt_markers) must be one token of tk. */
static int chat_check_markers(ChatFormat f, Tokenizer *tk, ErrStatus *st) {
    TokIds ids = {0};
    int ok = 1;
    for (const char *const *m = chatfmt_markers(f); ok && *m; m++) {
        ids.n = 0;
        ErrStatus e;
        if (!tok_encode(tk, *m, strlen(*m), 0, &ids, &e) || ids.n != 1)
            ok = err_status_set(st,
                                "--chat-format %s writes the special token %s, which is not a "
                                "single token of the model's tokenizer.json (it encodes to %zu "
                                "tokens): this format is not the model's",
                                chatfmt_name(f), *m, ids.n);
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
    chatfmt_render(f, cm, n, &ps, &ignore); /* the probe suits every format */
    *mine = NULL;
    *mlen = 0;
    for (size_t i = 0; i < ps.n; i++) {
        *mine = str_xrealloc(*mine, *mlen + ps.p[i].len + 1);
        memcpy(*mine + *mlen, ps.p[i].text, ps.p[i].len);
        *mlen += ps.p[i].len;
    }
    chatfmt_pieces_free(&ps);
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
    const char *name = chatfmt_name(f);
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
    snprintf(ct->id, sizeof ct->id, "%s", f == CHAT_NONE ? "none" : chatfmt_name(f));
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
        snprintf(buf, cap, "%s (--chat-format)", chatfmt_name(ct->format));
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
        int k = chatfmt_parse(s->format);
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
    chat_hash_str(h, ct->tpl ? "jinja" : chatfmt_name(f));
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
                                i, chatfmt_name(f));
        else if (strlen(json_string_value(content)) != json_string_length(content))
            ok = err_status_set(st, "\"messages\"[%zu] contains a \\u0000 character", i);
        else
            cm[i] = (ChatMsg){json_string_value(json_object_get(m, "role")),
                              json_string_value(content)};
    }
    ChatPieces ps = {0};
    if (ok) ok = chatfmt_render(f, cm, n, &ps, st);
    for (size_t k = 0; ok && k < ps.n; k++) {
        size_t a = out->len;
        chat_out_text(out, ps.p[k].text, ps.p[k].len);
        if (ps.p[k].train) chat_out_span(out, a, out->len);
    }
    if (ok) chat_out_segment(out);
    chatfmt_pieces_free(&ps);
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
        const char *gp = chatfmt_generation_prompt(ct->format);
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
