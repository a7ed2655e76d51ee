/* Unit test of io/chatfmt: every hand-written layout renders conversations to the text the
 * official Hugging Face chat template gives (expected strings written out by hand from the
 * templates, and outputs of transformers published in other projects' tests), the trained
 * pieces are the assistant replies with their end-of-turn token, the names, the generation
 * prompts and markers, and every error. (tests/unit/test_chat.c renders the official
 * templates themselves with the engine and compares.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/chatfmt.h"
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
    int ok = chatfmt_render(f, m, n, &ps, &st);
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
    chatfmt_pieces_free(&ps);
    CHECK_TRUE(ps.n == 0 && ps.p == NULL, "%s: chatfmt_pieces_free leaves it zeroed", name);
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
    CHECK_TRUE(chatfmt_render(CHAT_CHATML, seed, 1, &ps, &st), "%s: seed render", name);
    size_t n0 = ps.n, len0 = ps.p[ps.n - 1].len;
    int ok = chatfmt_render(f, m, n, &ps, &st);
    int match = want_prefix ? strncmp(st.msg, want, strlen(want)) == 0 : strcmp(st.msg, want) == 0;
    CHECK_TRUE(!ok && !st.ok, "%s: accepted", name);
    CHECK_TRUE(match, "%s: message [%s], want %s[%s]", name, st.msg, want_prefix ? "prefix " : "",
               want);
    CHECK_TRUE(strstr(st.msg, ".c:") == NULL, "%s: message has a file:line: %s", name, st.msg);
    CHECK_TRUE(ps.n == n0 && ps.p[ps.n - 1].len == len0, "%s: out changed on error", name);
    printf("done %-40s -> %s\n", name, st.msg);
    chatfmt_pieces_free(&ps);
}

static void test_errors(void) {
    for (int f = CHAT_LLAMA3; f < CHAT_NFORMATS; f++)
        expect_error(chatfmt_name((ChatFormat)f), (ChatFormat)f, NULL, 0,
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
        CHECK_TRUE(chatfmt_parse(chatfmt_name((ChatFormat)f)) == f, "round trip of %d", f);
    CHECK_TRUE(chatfmt_parse("qwen2") == CHAT_QWEN2, "qwen2");
    CHECK_TRUE(chatfmt_parse("llama3") == CHAT_LLAMA3, "llama3");
    CHECK_TRUE(chatfmt_parse("none") == -1, "none is not a format to choose");
    CHECK_TRUE(chatfmt_parse("Llama3") == -1, "case matters");
    CHECK_TRUE(chatfmt_parse("") == -1 && chatfmt_parse(NULL) == -1, "empty / NULL");
    CHECK_TRUE(strcmp(chatfmt_name(CHAT_NONE), "none") == 0, "name of CHAT_NONE");
    CHECK_TRUE(strcmp(chatfmt_name(CHAT_MISTRAL), "mistral") == 0, "name of mistral");
}

/* What follows the conversation so the model answers, and the special tokens written. */
static void test_prompt_and_markers(void) {
    static const struct {
        ChatFormat f;
        const char *prompt, *first_marker;
        size_t nmarkers;
    } want[] = {
        {CHAT_NONE, "", NULL, 0},
        {CHAT_LLAMA3, "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|begin_of_text|>", 4},
        {CHAT_MISTRAL, "", "<s>", 2},
        {CHAT_LLAMA2, "", "<s>", 2},
        {CHAT_CHATML, "<|im_start|>assistant\n", "<|im_start|>", 2},
        {CHAT_QWEN2, "<|im_start|>assistant\n", "<|im_start|>", 2},
    };
    for (size_t i = 0; i < NMSG(want); i++) {
        const char *name = chatfmt_name(want[i].f);
        CHECK_TRUE(strcmp(chatfmt_generation_prompt(want[i].f), want[i].prompt) == 0,
                   "%s: generation prompt [%s]", name, chatfmt_generation_prompt(want[i].f));
        const char *const *m = chatfmt_markers(want[i].f);
        size_t n = 0;
        while (m[n])
            n++;
        CHECK_TRUE(n == want[i].nmarkers && (n == 0 || strcmp(m[0], want[i].first_marker) == 0),
                   "%s: %zu markers, the first [%s]", name, n, n ? m[0] : "");
    }
    printf("done generation prompts and markers\n");
}

int main(void) {
    test_names();
    test_llama3();
    test_mistral();
    test_llama2();
    test_chatml();
    test_errors();
    test_prompt_and_markers();
    return check_finish();
}
