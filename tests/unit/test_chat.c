/* Unit test of io/chat: the model's own template (io/jinja) and how a run gets it: its
 * sources, tokenizer_config.json read as the Hub writes it, the special tokens and kwargs as
 * variables, the label rule and its segments, generation blocks, raise_exception, a refused
 * construct, and the --chat-format check: each hand-written layout of io/chatfmt.h equals its
 * family's official template as the engine renders it. (tests/unit/test_chatfmt.c checks
 * the layouts against strings written out by hand.) */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/chat.h"
#include "tests/unit/check.h"

#define NMSG(a) (sizeof(a) / sizeof((a)[0]))

/* The official templates of the hand-written layouts, as the Hub's tokenizer_config.json
 * files hold them (after JSON decoding). Meta-Llama-3-8B-Instruct: */
static const char tpl_llama3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% "
    "endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/* Mistral-7B-Instruct-v0.2 / Mixtral-8x7B-Instruct-v0.1 (December 2023): */
static const char tpl_mistral[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ "
    "'[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
    "message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}";

/* Llama-2-7b-chat-hf (its "\\n" are Jinja escapes): */
static const char tpl_llama2[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% "
    "set system_message = false %}{% endif %}{% for message in loop_messages %}{% if "
    "(message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
    "roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == "
    "0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] "
    "%}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() "
    "+ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + "
    "eos_token }}{% endif %}{% endfor %}";

/* Qwen2-7B-Instruct: */
static const char tpl_qwen2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif "
    "%}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/* teknium/OpenHermes-2.5-Mistral-7B (plain ChatML): */
static const char tpl_chatml[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";

static char tmpdir[64];

static void write_config(json_t *template_value) {
    char path[128];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", tmpdir);
    json_t *root = json_object();
    json_object_set_new(root, "bos_token", json_string("<s>"));
    if (template_value) json_object_set_new(root, "chat_template", template_value);
    if (json_dump_file(root, path, JSON_INDENT(2)) != 0) {
        printf("FAIL cannot write %s\n", path);
        exit(1);
    }
    json_decref(root);
}

static void write_raw(const char *text) {
    char path[128];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", tmpdir);
    FILE *fp = fopen(path, "w");
    if (!fp || fputs(text, fp) < 0 || fclose(fp) != 0) {
        printf("FAIL cannot write %s\n", path);
        exit(1);
    }
}

static json_t *named(const char *name, const char *tpl) {
    return json_pack("{s:s, s:s}", "name", name, "template", tpl);
}

/* ---- the model's own template (io/jinja) --------------------------------------------- */

/* ChatML written as a Jinja template: renders exactly what --chat-format chatml writes. */
static const char jt_chatml[] =
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
/* As Qwen3's: an empty think block only before the assistant replies after the last user
 * message, so an earlier reply renders differently once a user turn follows it. */
static const char jt_qwen3ish[] =
    "{%- set ns = namespace(last=-1) %}{% for m in messages %}{% if m.role == 'user' %}"
    "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' and loop.index0 > ns.last %}<think>\n\n</think>\n\n{% endif %}"
    "{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
/* {% generation %} blocks around the replies. */
static const char jt_generation[] =
    "{% for m in messages %}{% if m.role == 'assistant' %}A:{% generation %}{{ m.content }}!"
    "{% endgeneration %}|{% else %}U:{{ m.content }}|{% endif %}{% endfor %}";

static char *tmp_path(const char *leaf) {
    char *p = malloc(strlen(tmpdir) + strlen(leaf) + 2);
    sprintf(p, "%s/%s", tmpdir, leaf);
    return p;
}

static void write_text(const char *leaf, const char *text) {
    char *path = tmp_path(leaf);
    FILE *fp = fopen(path, "w");
    if (!fp || fputs(text, fp) < 0 || fclose(fp) != 0) {
        printf("FAIL cannot write %s\n", path);
        exit(1);
    }
    free(path);
}

static void remove_tmp(const char *leaf) {
    char *path = tmp_path(leaf);
    unlink(path);
    free(path);
}

/* Loads the template of tmpdir (with --chat-template file, kwargs, format when not NULL). */
static int load_tpl(ChatTemplate *ct, const char *file, const char *kwargs, const char *format,
                    int *status, ErrStatus *st) {
    ChatSetup s = {tmpdir, file, kwargs, format, NULL};
    return chat_template_load(ct, &s, status, st);
}

/* The prompt text of a line's messages (add_generation_prompt=True), or NULL. */
static char *prompt_of(const ChatTemplate *ct, const char *line_json) {
    json_t *line = json_loads(line_json, 0, NULL);
    char *text = NULL;
    size_t len;
    ErrStatus st;
    int ok = chat_render_prompt(ct, json_object_get(line, "messages"),
                                json_object_get(line, "tools"), NULL, &text, &len, &st);
    CHECK_TRUE(ok, "render of %s: %s", line_json, st.msg);
    json_decref(line);
    return ok ? text : NULL;
}

static void expect_prompt(const char *name, const ChatTemplate *ct, const char *line,
                          const char *want) {
    char *got = prompt_of(ct, line);
    CHECK_TRUE(got && strcmp(got, want) == 0, "%s: rendered '%s', want '%s'", name,
               got ? got : "(error)", want);
    free(got);
    printf("done %s\n", name);
}

static const char one_turn[] = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";

/* tokenizer_config.json as the Hub writes it (int(1e30) does not fit jansson's int64), and
 * the files that are not one: absent (no template), not JSON or unreadable (exit 3, the
 * message starts with the path), a root that is not an object (no template). */
static void test_config_file(void) {
    ChatTemplate ct;
    ErrStatus st;
    int status;
    json_t *tpl = json_string(tpl_llama3);
    char *quoted = json_dumps(tpl, JSON_ENCODE_ANY);
    size_t cap = strlen(quoted) + 256;
    char *text = malloc(cap);
    snprintf(text, cap,
             "{\n  \"add_bos_token\": true,\n  \"model_max_length\": "
             "1000000000000000019884624838656,\n  \"chat_template\": %s\n}\n",
             quoted);
    write_raw(text);
    CHECK_TRUE(load_tpl(&ct, NULL, NULL, NULL, &status, &st) && ct.tpl, "model_max_length 1e30: %s",
               st.msg);
    chat_template_free(&ct);
    free(text);
    free(quoted);
    json_decref(tpl);

    char *path = tmp_path("tokenizer_config.json");
    write_raw("{\"chat_template\": \"{{ bos_token }}\",\n  \"eos_token\": ");
    CHECK_TRUE(!load_tpl(&ct, NULL, NULL, NULL, &status, &st) && status == EXIT_BAD_INPUT &&
                   strncmp(st.msg, path, strlen(path)) == 0,
               "invalid JSON: status %d, %s", status, st.msg);
    chat_template_free(&ct);
    write_raw("[1, 2]");
    CHECK_TRUE(load_tpl(&ct, NULL, NULL, NULL, &status, &st) && !ct.tpl, "root not an object: %s",
               st.msg);
    chat_template_free(&ct);
    remove(path);
    CHECK_TRUE(load_tpl(&ct, NULL, NULL, NULL, &status, &st) && !ct.tpl &&
                   strcmp(ct.id, "none") == 0,
               "missing tokenizer_config.json: %s", st.msg);
    chat_template_free(&ct);
    mkdir(path, 0700); /* cannot be read: an error, not a missing template */
    CHECK_TRUE(!load_tpl(&ct, NULL, NULL, NULL, &status, &st) && status == EXIT_BAD_INPUT &&
                   strncmp(st.msg, path, strlen(path)) == 0,
               "a directory as tokenizer_config.json: %s", st.msg);
    chat_template_free(&ct);
    rmdir(path);
    free(path);
    printf("done tokenizer_config.json: 1e30, not JSON, not an object, absent, unreadable\n");
}

/* Sources in order: --chat-template, chat_template.jinja, tokenizer_config.json (a string,
 * or a list: "default", "tool_use" for lines with tools); none. */
static void test_template_sources(void) {
    ChatTemplate ct;
    ErrStatus st;
    int status;
    write_config(json_string("S{{ messages|length }}"));
    CHECK_TRUE(load_tpl(&ct, NULL, NULL, NULL, &status, &st), "string: %s", st.msg);
    CHECK_TRUE(ct.tpl && strstr(ct.source, "tokenizer_config.json"), "string: source %s",
               ct.source ? ct.source : "none");
    expect_prompt("template: tokenizer_config.json string", &ct, one_turn, "S1");
    char id_string[CHAT_ID_LEN + 1];
    memcpy(id_string, ct.id, sizeof id_string);
    chat_template_free(&ct);

    json_t *list = json_array();
    json_array_append_new(list, named("tool_use", "T{{ tools|length }}"));
    json_array_append_new(list, named("default", "D"));
    write_config(list);
    CHECK_TRUE(load_tpl(&ct, NULL, NULL, NULL, &status, &st), "list: %s", st.msg);
    expect_prompt("template: list, default", &ct, one_turn, "D");
    expect_prompt("template: list, tool_use for a line with tools", &ct,
                  "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
                  "\"tools\": [{\"name\": \"f\"}, {\"name\": \"g\"}]}",
                  "T2");
    CHECK_TRUE(strcmp(ct.id, id_string) != 0, "another template, the same id");
    chat_template_free(&ct);

    list = json_array();
    json_array_append_new(list, named("rag", "R"));
    write_config(list);
    CHECK_TRUE(!load_tpl(&ct, NULL, NULL, NULL, &status, &st) && status == EXIT_BAD_INPUT &&
                   strstr(st.msg, "none named \"default\""),
               "list without default: %s", st.msg);
    chat_template_free(&ct);

    write_config(json_string("S"));
    write_text("chat_template.jinja", "J");
    CHECK_TRUE(load_tpl(&ct, NULL, NULL, NULL, &status, &st), "jinja file: %s", st.msg);
    expect_prompt("template: chat_template.jinja over tokenizer_config.json", &ct, one_turn, "J");
    chat_template_free(&ct);
    write_text("own.jinja", "O{{ bos_token }}");
    char *own = tmp_path("own.jinja");
    CHECK_TRUE(load_tpl(&ct, own, NULL, NULL, &status, &st), "--chat-template: %s", st.msg);
    CHECK_TRUE(strcmp(ct.source, own) == 0, "--chat-template: source %s", ct.source);
    expect_prompt("template: --chat-template over both", &ct, one_turn, "O<s>");
    chat_template_free(&ct);
    free(own);
    remove_tmp("own.jinja");
    remove_tmp("chat_template.jinja");

    write_config(NULL);
    CHECK_TRUE(load_tpl(&ct, NULL, NULL, NULL, &status, &st), "none: %s", st.msg);
    CHECK_TRUE(!ct.tpl && ct.format == CHAT_NONE && strcmp(ct.id, "none") == 0, "none: id %s",
               ct.id);
    ChatRender r = {0};
    json_t *line = json_loads(one_turn, 0, NULL);
    CHECK_TRUE(!chat_render_line(&ct, line, 0, &r, &st) && strstr(st.msg, "--chat-template") &&
                   strstr(st.msg, "--chat-format"),
               "no template: %s", st.msg);
    json_decref(line);
    chat_render_free(&r);
    chat_template_free(&ct);
    printf("done template: none\n");
}

/* --chat-template-kwargs and the special tokens of tokenizer_config.json as variables. */
static void test_template_vars(void) {
    ChatTemplate ct;
    ErrStatus st;
    int status;
    json_t *cfg = json_object();
    json_object_set_new(cfg, "bos_token", json_string("<s>"));
    json_object_set_new(cfg, "eos_token",
                        json_pack("{s:s, s:s}", "__type", "AddedToken", "content", "</s>"));
    json_object_set_new(cfg, "pad_token", json_null());
    json_object_set_new(cfg, "additional_special_tokens",
                        json_pack("[s, {s:s}]", "<a>", "content", "<b>"));
    json_object_set_new(cfg, "chat_template",
                        json_string("{{ bos_token }}|{{ eos_token }}|{{ pad_token is defined }}|"
                                    "{{ additional_special_tokens|join(',') }}|"
                                    "{{ enable_thinking }}"));
    char *path = tmp_path("tokenizer_config.json");
    CHECK_TRUE(json_dump_file(cfg, path, 0) == 0, "cannot write %s", path);
    free(path);
    json_decref(cfg);
    CHECK_TRUE(load_tpl(&ct, NULL, NULL, NULL, &status, &st), "specials: %s", st.msg);
    expect_prompt("template: special tokens as variables", &ct, one_turn,
                  "<s>|</s>|False|<a>,<b>|");
    char id0[CHAT_ID_LEN + 1];
    memcpy(id0, ct.id, sizeof id0);
    chat_template_free(&ct);
    CHECK_TRUE(load_tpl(&ct, NULL, "{\"enable_thinking\": false, \"bos_token\": \"B\"}", NULL,
                        &status, &st),
               "kwargs: %s", st.msg);
    expect_prompt("template: kwargs (over the special tokens)", &ct, one_turn,
                  "B|</s>|False|<a>,<b>|False");
    CHECK_TRUE(strcmp(ct.id, id0) != 0, "kwargs do not change the id");
    chat_template_free(&ct);
    static const char *const bad[] = {"{bad", "[1]", "\"x\"", "{\"a\": 1, \"a\": 2}"};
    for (size_t i = 0; i < NMSG(bad); i++) {
        CHECK_TRUE(!load_tpl(&ct, NULL, bad[i], NULL, &status, &st) && status == EXIT_USAGE &&
                       strncmp(st.msg, "--chat-template-kwargs: ", 24) == 0,
                   "kwargs %s: status %d, %s", bad[i], status, st.msg);
        chat_template_free(&ct);
    }
    printf("done template: bad kwargs refused (exit 2)\n");
}

/* A line rendered by the label rule; checks the segments' texts and the counted text. */
static void expect_line(const char *name, const ChatTemplate *ct, const char *line_json,
                        const char *const *segs, size_t nseg, const char *counted) {
    json_t *line = json_loads(line_json, 0, NULL);
    ChatRender r = {0};
    ErrStatus st;
    int ok = chat_render_line(ct, line, 0, &r, &st);
    CHECK_TRUE(ok, "%s: %s", name, st.msg);
    if (ok) {
        CHECK_TRUE(r.nseg == nseg, "%s: %zu segments, want %zu", name, r.nseg, nseg);
        size_t at = 0;
        for (size_t k = 0; k < r.nseg && k < nseg; k++) {
            size_t len = r.seg_end[k] - at;
            CHECK_TRUE(len == strlen(segs[k]) && memcmp(r.text + at, segs[k], len) == 0,
                       "%s: segment %zu is '%.*s', want '%s'", name, k, (int)len, r.text + at,
                       segs[k]);
            at = r.seg_end[k];
        }
        char *c = calloc(r.len + 1, 1);
        for (size_t k = 0; k < r.nspan; k++)
            strncat(c, r.text + r.span[k].start, r.span[k].end - r.span[k].start);
        CHECK_TRUE(strcmp(c, counted) == 0, "%s: counted '%s', want '%s'", name, c, counted);
        free(c);
    }
    chat_render_free(&r);
    json_decref(line);
    printf("done %s\n", name);
}

static const char four_turns[] =
    "{\"messages\": [{\"role\": \"user\", \"content\": \"u1\"}, {\"role\": \"assistant\", "
    "\"content\": \"a1\"}, {\"role\": \"user\", \"content\": \"u2\"}, {\"role\": \"assistant\", "
    "\"content\": \"a2\"}]}";

/* The incremental rule: one segment equal to the full render for a consistent template,
 * a new segment where an earlier turn renders differently later; generation blocks. */
static void test_label_rule(void) {
    ChatTemplate ct;
    ErrStatus st;
    int status;
    write_config(json_string(jt_chatml));
    CHECK_TRUE(load_tpl(&ct, NULL, NULL, NULL, &status, &st), "chatml: %s", st.msg);
    const char *whole[] = {"<|im_start|>user\nu1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
                           "<|im_start|>user\nu2<|im_end|>\n<|im_start|>assistant\na2<|im_end|>\n"};
    expect_line("label rule: consistent template, one segment = F", &ct, four_turns, whole, 1,
                "a1<|im_end|>\na2<|im_end|>\n");
    chat_template_free(&ct);

    write_config(json_string(jt_qwen3ish));
    CHECK_TRUE(load_tpl(&ct, NULL, NULL, NULL, &status, &st), "qwen3ish: %s", st.msg);
    const char *segs[] = {
        "<|im_start|>user\nu1<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\na1"
        "<|im_end|>\n",
        "<|im_start|>user\nu1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
        "<|im_start|>user\nu2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\na2"
        "<|im_end|>\n"};
    expect_line("label rule: Qwen3-like template, two segments", &ct, four_turns, segs, 2,
                "<think>\n\n</think>\n\na1<|im_end|>\n<think>\n\n</think>\n\na2<|im_end|>\n");
    chat_template_free(&ct);

    write_config(json_string(jt_generation));
    CHECK_TRUE(load_tpl(&ct, NULL, NULL, NULL, &status, &st), "generation: %s", st.msg);
    CHECK_TRUE(ct.has_generation, "generation blocks not seen");
    const char *gen[] = {"U:u1|A:a1!|U:u2|A:a2!|"};
    expect_line("label rule: {% generation %} blocks counted", &ct, four_turns, gen, 1, "a1!a2!");
    chat_template_free(&ct);
    /* blocks the line never reaches: nothing counted (no spans once meant qsort(NULL, 0)) */
    write_config(json_string("{% for m in messages %}{% if m.role == 'tool' %}{% generation %}"
                             "{{ m.content }}{% endgeneration %}{% endif %}{{ m.content }}|"
                             "{% endfor %}"));
    CHECK_TRUE(load_tpl(&ct, NULL, NULL, NULL, &status, &st) && ct.has_generation,
               "unreached generation: %s", st.msg);
    const char *unreached[] = {"u1|a1|u2|a2|"};
    expect_line("label rule: {% generation %} blocks never rendered", &ct, four_turns, unreached, 1,
                "");
    chat_template_free(&ct);

    /* raise_exception on a line; a line without an assistant message */
    write_config(json_string("{% for m in messages %}{% if loop.first and m.role != 'user' %}"
                             "{{ raise_exception('first must be user') }}{% endif %}"
                             "{{ m.content }}{% endfor %}"));
    CHECK_TRUE(load_tpl(&ct, NULL, NULL, NULL, &status, &st), "raise: %s", st.msg);
    json_t *line =
        json_loads("{\"messages\": [{\"role\": \"assistant\", \"content\": \"x\"}]}", 0, NULL);
    ChatRender r = {0};
    CHECK_TRUE(!chat_render_line(&ct, line, 0, &r, &st) &&
                   strcmp(st.msg, "template error: first must be user") == 0,
               "raise_exception: %s", st.msg);
    json_decref(line);
    line = json_loads(one_turn, 0, NULL);
    CHECK_TRUE(!chat_render_line(&ct, line, 0, &r, &st) && strstr(st.msg, "nothing to train on"),
               "no assistant: %s", st.msg);
    CHECK_TRUE(chat_render_line(&ct, line, 1, &r, &st) && r.nseg == 1 && r.nspan == 0 &&
                   strcmp(r.text, "hi") == 0,
               "no assistant, train_on_prompt: %s", st.msg);
    json_decref(line);
    chat_render_free(&r);
    chat_template_free(&ct);
    printf("done label rule: raise_exception, no assistant message\n");

    /* a construct the engine refuses: one line naming the file and the template's line */
    write_config(json_string("x\n{% include 'other.jinja' %}"));
    CHECK_TRUE(!load_tpl(&ct, NULL, NULL, NULL, &status, &st) && status == EXIT_BAD_INPUT &&
                   strstr(st.msg, "tokenizer_config.json: chat template: line 2") &&
                   !strchr(st.msg, '\n'),
               "refused construct: %s", st.msg);
    chat_template_free(&ct);
    printf("done template: refused construct names the file and line\n");
}

/* user, assistant, user: what each official template accepts. */
static const char user_turns[] =
    "{\"messages\": [{\"role\": \"user\", \"content\": \"u1\"}, {\"role\": \"assistant\", "
    "\"content\": \"a1\"}, {\"role\": \"user\", \"content\": \"u2\"}]}";

/* --chat-format against the model's template: refused when they differ, the template kept
 * when they agree. */
static void test_format_check(void) {
    ChatTemplate ct;
    ErrStatus st;
    int status;
    write_config(json_string(jt_qwen3ish));
    CHECK_TRUE(!load_tpl(&ct, NULL, NULL, "chatml", &status, &st) && status == EXIT_USAGE &&
                   strstr(st.msg, "--chat-format chatml does not match the model's own chat "
                                  "template (") &&
                   strstr(st.msg, "drop --chat-format"),
               "mismatch: %s", st.msg);
    chat_template_free(&ct);
    write_config(json_string(jt_chatml));
    CHECK_TRUE(load_tpl(&ct, NULL, NULL, "chatml", &status, &st) && ct.tpl, "match: %s", st.msg);
    chat_template_free(&ct);
    CHECK_TRUE(!load_tpl(&ct, NULL, NULL, "llama3", &status, &st) &&
                   strstr(st.msg, "--chat-format llama3 does not match"),
               "llama3 vs chatml: %s", st.msg);
    chat_template_free(&ct);
    CHECK_TRUE(!load_tpl(&ct, NULL, NULL, "chatml2", &status, &st) && status == EXIT_USAGE,
               "unknown format: %s", st.msg);
    chat_template_free(&ct);
    /* each hand-written layout equals its family's official template (rendered by the
     * engine); Mistral v0.2's refuses a system message: compared without one */
    static const struct {
        const char *tpl, *format, *bos, *eos;
    } fam[] = {{tpl_llama3, "llama3", "<|begin_of_text|>", "<|eot_id|>"},
               {tpl_mistral, "mistral", "<s>", "</s>"},
               {tpl_llama2, "llama2", "<s>", "</s>"},
               {tpl_qwen2, "qwen2", "<|endoftext|>", "<|im_end|>"},
               {tpl_chatml, "chatml", "<s>", "</s>"}};
    for (size_t i = 0; i < NMSG(fam); i++) {
        json_t *cfg = json_pack("{s:s, s:s, s:s}", "bos_token", fam[i].bos, "eos_token", fam[i].eos,
                                "chat_template", fam[i].tpl);
        char *path = tmp_path("tokenizer_config.json");
        CHECK_TRUE(json_dump_file(cfg, path, 0) == 0, "cannot write %s", path);
        free(path);
        json_decref(cfg);
        CHECK_TRUE(load_tpl(&ct, NULL, NULL, fam[i].format, &status, &st) && ct.tpl,
                   "--chat-format %s against its official template: %s", fam[i].format, st.msg);
        /* and generation's prompt: the layout's text plus chatfmt_generation_prompt */
        ChatTemplate layout;
        chat_template_init_format(&layout, (ChatFormat)chatfmt_parse(fam[i].format));
        char *a = prompt_of(&ct, user_turns), *b = prompt_of(&layout, user_turns);
        CHECK_TRUE(a && b && strcmp(a, b) == 0, "%s prompt: template [%s], layout [%s]",
                   fam[i].format, a ? a : "(error)", b ? b : "(error)");
        free(a);
        free(b);
        chat_template_free(&layout);
        chat_template_free(&ct);
    }
    printf("done --chat-format against the model's template\n");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_chat.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("FAIL mkdtemp\n");
        return 1;
    }
    test_config_file();
    test_template_sources();
    test_template_vars();
    test_label_rule();
    test_format_check();
    remove_tmp("tokenizer_config.json");
    rmdir(tmpdir);
    return check_finish();
}
