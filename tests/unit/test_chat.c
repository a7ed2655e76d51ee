/* Unit test of io/chat: every format renders conversations to the text the official Hugging
 * Face chat template gives (expected strings written out by hand from the templates, and
 * outputs of transformers published in other projects' tests), the trained pieces are the
 * assistant replies with their end-of-turn token, detection from tokenizer_config.json
 * files holding the real templates, and every error. */
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

/* ---- rendering ----------------------------------------------------------------------- */

/* The texts of the pieces with train == want (want < 0: all), concatenated. */
static char *join(const ChatPieces *ps, int want) {
    size_t len = 0;
    for (size_t i = 0; i < ps->n; i++)
        if (want < 0 || ps->p[i].train == want) len += ps->p[i].len;
    char *s = malloc(len + 1), *q = s;
    for (size_t i = 0; i < ps->n; i++)
        if (want < 0 || ps->p[i].train == want) {
            memcpy(q, ps->p[i].text, ps->p[i].len);
            q += ps->p[i].len;
        }
    *q = '\0';
    return s;
}

/* Pieces are non-empty, their len is right, and neighbours differ in flag (merged). */
static int pieces_well_formed(const ChatPieces *ps) {
    for (size_t i = 0; i < ps->n; i++) {
        if (ps->p[i].len == 0 || strlen(ps->p[i].text) != ps->p[i].len) return 0;
        if (ps->p[i].train != 0 && ps->p[i].train != 1) return 0;
        if (i > 0 && ps->p[i].train == ps->p[i - 1].train) return 0;
    }
    return 1;
}

/* Renders m in format f and compares the whole text with want, the trained text with
 * want_train, and the trained pieces one by one with trained[] (NULL-terminated). */
static void expect_render(const char *name, ChatFormat f, const ChatMsg *m, size_t n,
                          const char *want, const char *want_train, const char *const *trained) {
    ChatPieces ps = {0};
    ErrStatus st;
    int ok = chat_render(f, m, n, &ps, &st);
    CHECK_TRUE(ok, "%s: render failed: %s", name, st.msg);
    char *text = join(&ps, -1), *tr = join(&ps, 1);
    CHECK_TRUE(strcmp(text, want) == 0, "%s: text\n  got  [%s]\n  want [%s]", name, text, want);
    CHECK_TRUE(strcmp(tr, want_train) == 0, "%s: trained\n  got  [%s]\n  want [%s]", name, tr,
               want_train);
    CHECK_TRUE(pieces_well_formed(&ps), "%s: pieces empty, mis-sized or not merged", name);
    size_t k = 0;
    for (size_t i = 0; i < ps.n; i++) {
        if (!ps.p[i].train) continue;
        CHECK_TRUE(trained[k] && strcmp(ps.p[i].text, trained[k]) == 0,
                   "%s: trained piece %zu is [%s], want [%s]", name, k, ps.p[i].text,
                   trained[k] ? trained[k] : "(none)");
        if (trained[k]) k++;
    }
    CHECK_TRUE(trained[k] == NULL, "%s: %zu trained pieces, want more", name, k);
    printf("%s %-40s %zu pieces, %zu bytes\n", "done", name, ps.n, strlen(text));
    free(text);
    free(tr);
    chat_pieces_free(&ps);
    CHECK_TRUE(ps.n == 0 && ps.p == NULL, "%s: chat_pieces_free leaves it zeroed", name);
}

/* transformers' own test conversation (huggingface.js @huggingface/jinja tests list the
 * rendered targets for Mixtral-8x7B-Instruct-v0.1, Llama-2 and the ChatML base template). */
static const ChatMsg hf_chat[] = {
    {"user", "Hello, how are you?"},
    {"assistant", "I'm doing great. How can I help you today?"},
    {"user", "I'd like to show off how chat templating works!"},
};
static const ChatMsg hf_chat_sys[] = {
    {"system", "You are a friendly chatbot who always responds in the style of a pirate"},
    {"user", "Hello, how are you?"},
    {"assistant", "I'm doing great. How can I help you today?"},
    {"user", "I'd like to show off how chat templating works!"},
};
/* mistral.rs's test_chat_templates (outputs made with transformers' apply_chat_template):
 * an assistant reply padded with spaces shows which templates strip. */
static const ChatMsg padded_chat[] = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "Who are you"},
    {"assistant", "   I am an assistant   "},
    {"user", "Another question"},
};

static void test_llama3(void) {
    const ChatMsg m[] = {
        {"system", "  You are terse.\n"}, {"user", "\tHi there!  "},
        {"assistant", " Hello.\n\n"},     {"user", "Bye\n"},
        {"assistant", "Goodbye! "},
    };
    const char *tr[] = {"Hello.<|eot_id|>", "Goodbye!<|eot_id|>", NULL};
    expect_render("llama3 system + 2 turns, trimmed", CHAT_LLAMA3, m, NMSG(m),
                  "<|begin_of_text|>"
                  "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nGoodbye!<|eot_id|>",
                  "Hello.<|eot_id|>Goodbye!<|eot_id|>", tr);

    /* `trim` is Python's str.strip(): NBSP, ideographic space, line separator and \x1f are
     * whitespace, the zero-width space is not. Any role is allowed. */
    const ChatMsg u[] = {
        {"user", "\xc2\xa0\xe3\x80\x80Hi\xe2\x80\xa8"},
        {"ipython", "\xe2\x80\x8b"
                    "data "},
        {"assistant", "ok\x1f"},
    };
    const char *tru[] = {"ok<|eot_id|>", NULL};
    expect_render("llama3 unicode whitespace, other role", CHAT_LLAMA3, u, NMSG(u),
                  "<|begin_of_text|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                  "<|start_header_id|>ipython<|end_header_id|>\n\n\xe2\x80\x8b"
                  "data<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nok<|eot_id|>",
                  "ok<|eot_id|>", tru);

    const ChatMsg e[] = {{"user", "q"}, {"assistant", "  \n"}};
    const char *tre[] = {"<|eot_id|>", NULL};
    expect_render("llama3 empty reply", CHAT_LLAMA3, e, NMSG(e),
                  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nq<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>",
                  "<|eot_id|>", tre);
}

static void test_mistral(void) {
    const char *tr_hf[] = {"I'm doing great. How can I help you today?</s>", NULL};
    expect_render("mistral transformers example", CHAT_MISTRAL, hf_chat, NMSG(hf_chat),
                  "<s>[INST] Hello, how are you? [/INST]I'm doing great. How can I help you "
                  "today?</s>[INST] I'd like to show off how chat templating works! [/INST]",
                  "I'm doing great. How can I help you today?</s>", tr_hf);

    const char *tr_pad[] = {"Hi there</s>", "   I am an assistant   </s>", NULL};
    expect_render("mistral padded reply (no strip)", CHAT_MISTRAL, padded_chat + 1,
                  NMSG(padded_chat) - 1,
                  "<s>[INST] Hello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an "
                  "assistant   </s>[INST] Another question [/INST]",
                  "Hi there</s>   I am an assistant   </s>", tr_pad);

    /* A leading system message goes before the first user content, then "\n\n". */
    const ChatMsg m[] = {
        {"system", "Be brief."}, {"user", " What is 2+2? "}, {"assistant", "4"},
        {"user", "And 3+3?"},    {"assistant", " 6 "},
    };
    const char *tr[] = {"4</s>", " 6 </s>", NULL};
    expect_render(
        "mistral system + 2 turns", CHAT_MISTRAL, m, NMSG(m),
        "<s>[INST] Be brief.\n\n What is 2+2?  [/INST]4</s>[INST] And 3+3? [/INST] 6 </s>",
        "4</s> 6 </s>", tr);
}

static void test_llama2(void) {
    const char *tr_hf[] = {" I'm doing great. How can I help you today? </s>", NULL};
    expect_render("llama2 transformers example", CHAT_LLAMA2, hf_chat_sys, NMSG(hf_chat_sys),
                  "<s>[INST] <<SYS>>\nYou are a friendly chatbot who always responds in the "
                  "style of a pirate\n<</SYS>>\n\nHello, how are you? [/INST] I'm doing great. "
                  "How can I help you today? </s><s>[INST] I'd like to show off how chat "
                  "templating works! [/INST]",
                  " I'm doing great. How can I help you today? </s>", tr_hf);

    const char *tr_pad[] = {" Hi there </s>", " I am an assistant </s>", NULL};
    expect_render("llama2 padded reply (stripped)", CHAT_LLAMA2, padded_chat, NMSG(padded_chat),
                  "<s>[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi "
                  "there </s><s>[INST] Who are you [/INST] I am an assistant </s><s>[INST] "
                  "Another question [/INST]",
                  " Hi there </s> I am an assistant </s>", tr_pad);

    /* strip() applies to the whole first turn: the system text and the user text's leading
     * blanks stay; later user turns are stripped on both sides. */
    const ChatMsg m[] = {
        {"system", " Be a pirate. "}, {"user", "  Hello  "},
        {"assistant", "\nAhoy!\n"},   {"user", " Bye "},
        {"assistant", "Arr"},
    };
    const char *tr[] = {" Ahoy! </s>", " Arr </s>", NULL};
    expect_render("llama2 system + 2 turns", CHAT_LLAMA2, m, NMSG(m),
                  "<s>[INST] <<SYS>>\n Be a pirate. \n<</SYS>>\n\n  Hello [/INST] Ahoy! "
                  "</s><s>[INST] Bye [/INST] Arr </s>",
                  " Ahoy! </s> Arr </s>", tr);

    const ChatMsg ns[] = {{"user", " Q "}, {"assistant", " A "}};
    const char *trn[] = {" A </s>", NULL};
    expect_render("llama2 no system", CHAT_LLAMA2, ns, NMSG(ns), "<s>[INST] Q [/INST] A </s>",
                  " A </s>", trn);
}

static void test_chatml(void) {
    const char *tr_hf[] = {"I'm doing great. How can I help you today?<|im_end|>", NULL};
    expect_render("chatml transformers example", CHAT_CHATML, hf_chat, NMSG(hf_chat),
                  "<|im_start|>user\nHello, how are you?<|im_end|>\n<|im_start|>assistant\nI'm "
                  "doing great. How can I help you today?<|im_end|>\n<|im_start|>user\nI'd like "
                  "to show off how chat templating works!<|im_end|>\n",
                  "I'm doing great. How can I help you today?<|im_end|>", tr_hf);

    const ChatMsg m[] = {
        {"system", "S "}, {"user", " Hi "},    {"assistant", "Hello\n"},
        {"user", "x"},    {"assistant", " y"},
    };
    const char *want = "<|im_start|>system\nS <|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n"
                       "<|im_start|>assistant\nHello\n<|im_end|>\n<|im_start|>user\nx<|im_end|>\n"
                       "<|im_start|>assistant\n y<|im_end|>\n";
    const char *tr[] = {"Hello\n<|im_end|>", " y<|im_end|>", NULL};
    expect_render("chatml system + 2 turns (no strip)", CHAT_CHATML, m, NMSG(m), want,
                  "Hello\n<|im_end|> y<|im_end|>", tr);
    /* With a system message, qwen2 adds nothing. */
    expect_render("qwen2 system + 2 turns", CHAT_QWEN2, m, NMSG(m), want,
                  "Hello\n<|im_end|> y<|im_end|>", tr);

    const ChatMsg q[] = {
        {"user", " Hi "}, {"assistant", "Hello "}, {"tool", "42"}, {"assistant", "It is 42."}};
    const char *trq[] = {"Hello <|im_end|>", "It is 42.<|im_end|>", NULL};
    expect_render("qwen2 default system + tool turn", CHAT_QWEN2, q, NMSG(q),
                  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                  "<|im_start|>user\n Hi <|im_end|>\n<|im_start|>assistant\nHello <|im_end|>\n"
                  "<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\nIt is 42.<|im_end|>\n",
                  "Hello <|im_end|>It is 42.<|im_end|>", trq);
}

/* ---- errors -------------------------------------------------------------------------- */

/* Rendering fails with exactly want (want_prefix: msg starts with it) and leaves out as it
 * was. */
static void expect_error(const char *name, ChatFormat f, const ChatMsg *m, size_t n,
                         const char *want, int want_prefix) {
    ChatPieces ps = {0};
    ErrStatus st;
    const ChatMsg seed[] = {{"user", "before"}};
    CHECK_TRUE(chat_render(CHAT_CHATML, seed, 1, &ps, &st), "%s: seed render", name);
    size_t n0 = ps.n, len0 = ps.p[ps.n - 1].len;
    int ok = chat_render(f, m, n, &ps, &st);
    int match = want_prefix ? strncmp(st.msg, want, strlen(want)) == 0 : strcmp(st.msg, want) == 0;
    CHECK_TRUE(!ok && !st.ok, "%s: accepted", name);
    CHECK_TRUE(match, "%s: message [%s], want %s[%s]", name, st.msg, want_prefix ? "prefix " : "",
               want);
    CHECK_TRUE(strstr(st.msg, ".c:") == NULL, "%s: message has a file:line: %s", name, st.msg);
    CHECK_TRUE(ps.n == n0 && ps.p[ps.n - 1].len == len0, "%s: out changed on error", name);
    printf("done %-40s -> %s\n", name, st.msg);
    chat_pieces_free(&ps);
}

static void test_errors(void) {
    for (int f = CHAT_LLAMA3; f < CHAT_NFORMATS; f++)
        expect_error(chat_format_name((ChatFormat)f), (ChatFormat)f, NULL, 0,
                     "messages: the list is empty", 0);
    const ChatMsg tool[] = {{"user", "u"}, {"assistant", "a"}, {"tool", "t"}};
    expect_error("mistral tool role", CHAT_MISTRAL, tool, NMSG(tool),
                 "messages[2]: role 'tool' is not supported by the mistral chat format", 0);
    expect_error("llama2 tool role", CHAT_LLAMA2, tool, NMSG(tool),
                 "messages[2]: role 'tool' is not supported by the llama2 chat format", 0);
    const ChatMsg late_sys[] = {
        {"system", "s"}, {"user", "u"}, {"assistant", "a"}, {"system", "s2"}, {"user", "u2"}};
    expect_error("llama2 second system", CHAT_LLAMA2, late_sys, NMSG(late_sys),
                 "messages[3]: the llama2 chat format supports a system message only as the "
                 "first message",
                 0);
    expect_error("mistral second system", CHAT_MISTRAL, late_sys, NMSG(late_sys),
                 "messages[3]: the mistral chat format supports a system message only", 1);
    const ChatMsg uu[] = {{"user", "u"}, {"user", "u2"}};
    expect_error("mistral user twice", CHAT_MISTRAL, uu, NMSG(uu),
                 "messages[1]: role 'user' where 'assistant' was expected", 1);
    const ChatMsg sa[] = {{"system", "s"}, {"assistant", "a"}};
    expect_error("llama2 assistant first", CHAT_LLAMA2, sa, NMSG(sa),
                 "messages[1]: role 'assistant' where 'user' was expected", 1);
    const ChatMsg so[] = {{"system", "s"}};
    expect_error("mistral system only", CHAT_MISTRAL, so, NMSG(so),
                 "messages[0]: a system message needs a user message after it", 1);
    const ChatMsg nc[] = {{"user", "u"}, {"assistant", NULL}};
    expect_error("llama3 null content", CHAT_LLAMA3, nc, NMSG(nc), "messages[1]: content is null",
                 0);
    const ChatMsg nr[] = {{NULL, "x"}};
    expect_error("chatml null role", CHAT_CHATML, nr, NMSG(nr), "messages[0]: role is missing", 0);
    expect_error("format none", CHAT_NONE, nc, 1, "no chat format", 1);
}

static void test_names(void) {
    for (int f = CHAT_LLAMA3; f < CHAT_NFORMATS; f++)
        CHECK_TRUE(chat_parse_format(chat_format_name((ChatFormat)f)) == f, "round trip of %d", f);
    CHECK_TRUE(chat_parse_format("qwen2") == CHAT_QWEN2, "qwen2");
    CHECK_TRUE(chat_parse_format("llama3") == CHAT_LLAMA3, "llama3");
    CHECK_TRUE(chat_parse_format("none") == -1, "none is not a format to choose");
    CHECK_TRUE(chat_parse_format("Llama3") == -1, "case matters");
    CHECK_TRUE(chat_parse_format("") == -1 && chat_parse_format(NULL) == -1, "empty / NULL");
    CHECK_TRUE(strcmp(chat_format_name(CHAT_NONE), "none") == 0, "name of CHAT_NONE");
    CHECK_TRUE(strcmp(chat_format_name(CHAT_MISTRAL), "mistral") == 0, "name of mistral");
}

/* ---- detection ----------------------------------------------------------------------- */

/* The real templates, as the Hub's tokenizer_config.json files hold them (after JSON
 * decoding). Meta-Llama-3-8B-Instruct: */
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
/* The same with the Jinja escape instead of a newline. */
static const char tpl_qwen2_esc[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif "
    "%}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}";
/* teknium/OpenHermes-2.5-Mistral-7B (plain ChatML): */
static const char tpl_chatml[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";
/* The default-system part of Qwen2.5-7B-Instruct's template: another default, so none. */
static const char tpl_qwen25_part[] =
    "{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- "
    "'<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n  "
    "      {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n";
/* Qwen1.5-7B-Chat: ChatML whose default system turn has no full stop. */
static const char tpl_qwen15[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif "
    "%}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}";
/* The message loop of Qwen3-8B's template (without its system part, so that "<think>" alone
 * decides): ChatML turns, a "<think>" block in assistant replies after the last query. */
static const char tpl_qwen3_part[] =
    "{%- for message in messages %}\n    {%- if (message.role == \"user\") %}\n        {{- "
    "'<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role + "
    "'\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + "
    "content.lstrip('\\n') }}\n";
/* Part of Mistral-7B-Instruct-v0.3's template: no space before [/INST], the system message
 * in the last user turn. */
static const char tpl_mistral_v03_part[] =
    "{%- if loop.last and system_message is defined %}\n            {{- \"[INST] \" + "
    "system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n        {%- else "
    "%}\n            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n        {%- endif "
    "%}\n    {%- elif message[\"role\"] == \"assistant\" %}\n        {{- \" \" + "
    "message[\"content\"]|trim + eos_token}}\n";
/* The same layout with single quotes ('[INST] ' + content + '[/INST]'). */
static const char tpl_mistral_v03_single[] =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' "
    "+ message['content'] + '[/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + "
    "message['content'] + eos_token }}{% endif %}{% endfor %}";
/* HuggingFaceH4/zephyr-7b-beta: none of the families. */
/* The start of Llama-3.1-8B-Instruct's template (its system header always names the
 * knowledge cut-off and a date), enough for detection. */
static const char tpl_llama31_part[] =
    "{{- bos_token }}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul "
    "2024\" %}\n"
    "{%- endif %}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + "
    "\"\\n\\n\" }}";
static const char tpl_zephyr[] =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ "
    "'<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == "
    "'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% "
    "if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

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

static void expect_detect(const char *name, const char *dir, ChatFormat want) {
    ChatFormat got = CHAT_NFORMATS;
    ErrStatus st;
    int ok = chat_detect(dir, &got, &st);
    CHECK_TRUE(ok && st.ok, "%s: detect failed: %s", name, st.msg);
    CHECK_TRUE(got == want, "%s: detected %s, want %s", name, chat_format_name(got),
               chat_format_name(want));
    printf("done %-40s -> %s\n", name, chat_format_name(got));
}

static json_t *named(const char *name, const char *tpl) {
    return json_pack("{s:s, s:s}", "name", name, "template", tpl);
}

/* The shape of the Hub's files: int(1e30) does not fit jansson's int64. */
static void test_detect_big_integer(void) {
    json_t *tpl = json_string(tpl_llama3);
    char *quoted = json_dumps(tpl, JSON_ENCODE_ANY);
    size_t cap = strlen(quoted) + 256;
    char *text = malloc(cap);
    snprintf(text, cap,
             "{\n  \"add_bos_token\": true,\n  \"model_max_length\": "
             "1000000000000000019884624838656,\n  \"chat_template\": %s\n}\n",
             quoted);
    write_raw(text);
    expect_detect("model_max_length 1e30", tmpdir, CHAT_LLAMA3);
    free(text);
    free(quoted);
    json_decref(tpl);
}

static void test_detect(void) {
    const struct {
        const char *name, *tpl;
        ChatFormat want;
    } cases[] = {
        {"Meta-Llama-3-8B-Instruct", tpl_llama3, CHAT_LLAMA3},
        {"Mistral-7B-Instruct-v0.2", tpl_mistral, CHAT_MISTRAL},
        {"Llama-2-7b-chat-hf", tpl_llama2, CHAT_LLAMA2},
        {"Qwen2-7B-Instruct", tpl_qwen2, CHAT_QWEN2},
        {"Qwen2 with escaped newlines", tpl_qwen2_esc, CHAT_QWEN2},
        {"OpenHermes ChatML", tpl_chatml, CHAT_CHATML},
        {"Qwen2.5 default system", tpl_qwen25_part, CHAT_NONE},
        {"Qwen1.5 default system", tpl_qwen15, CHAT_NONE},
        {"Qwen3 (<think>)", tpl_qwen3_part, CHAT_NONE},
        {"Mistral-7B-Instruct-v0.3", tpl_mistral_v03_part, CHAT_NONE},
        {"Mistral v0.3 layout, single quotes", tpl_mistral_v03_single, CHAT_NONE},
        {"zephyr", tpl_zephyr, CHAT_NONE},
        {"Llama-3.1 (dated system header)", tpl_llama31_part, CHAT_NONE},
    };
    for (size_t i = 0; i < NMSG(cases); i++) {
        write_config(json_string(cases[i].tpl));
        expect_detect(cases[i].name, tmpdir, cases[i].want);
    }

    /* List form: "default" wherever it is, else the first. */
    write_config(json_pack("[o, o]", named("tool_use", tpl_chatml), named("default", tpl_llama3)));
    expect_detect("list with default second", tmpdir, CHAT_LLAMA3);
    write_config(json_pack("[o, o]", named("rag", tpl_mistral), named("tool_use", tpl_llama3)));
    expect_detect("list without default", tmpdir, CHAT_MISTRAL);
    write_config(json_array());
    expect_detect("empty list", tmpdir, CHAT_NONE);

    write_config(NULL);
    expect_detect("no chat_template", tmpdir, CHAT_NONE);
    write_config(json_null());
    expect_detect("chat_template null", tmpdir, CHAT_NONE);
    test_detect_big_integer();
    write_raw("[1, 2]");
    expect_detect("root not an object", tmpdir, CHAT_NONE);

    char path[128];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", tmpdir);
    write_raw("{\"chat_template\": \"{{ bos_token }}\",\n  \"eos_token\": ");
    ChatFormat got = CHAT_LLAMA3;
    ErrStatus st;
    int ok = chat_detect(tmpdir, &got, &st);
    CHECK_TRUE(!ok && !st.ok, "invalid JSON accepted");
    CHECK_TRUE(strncmp(st.msg, path, strlen(path)) == 0, "message does not name %s: %s", path,
               st.msg);
    CHECK_TRUE(got == CHAT_NONE, "invalid JSON: out is %s", chat_format_name(got));
    printf("done %-40s -> %s\n", "invalid JSON", st.msg);

    remove(path);
    expect_detect("missing tokenizer_config.json", tmpdir, CHAT_NONE);

    /* A tokenizer_config.json that cannot be read is an error, not a missing template. */
    mkdir(path, 0700);
    got = CHAT_LLAMA3;
    ok = chat_detect(tmpdir, &got, &st);
    CHECK_TRUE(!ok && strncmp(st.msg, path, strlen(path)) == 0 && got == CHAT_NONE,
               "a directory as tokenizer_config.json: ok %d, %s", ok, st.msg);
    printf("done %-40s -> %s\n", "unreadable file", st.msg);
    rmdir(path);
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
    test_names();
    test_llama3();
    test_mistral();
    test_llama2();
    test_chatml();
    test_errors();
    test_detect();
    test_template_sources();
    test_template_vars();
    test_label_rule();
    test_format_check();
    remove_tmp("tokenizer_config.json");
    rmdir(tmpdir);
    return check_finish();
}
