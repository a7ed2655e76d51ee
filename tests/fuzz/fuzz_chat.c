/* libFuzzer harness: the input is a model's tokenizer_config.json, written into the scratch
 * directory, which is the model directory. chat_template_load finds its chat template (a
 * string, or a list with "default" and "tool_use") and special tokens; when it loads, a fixed
 * JSONL line with tools goes through chat_render_line (the label rule), twice into the same
 * ChatRender, and its messages through chat_render_prompt, under small bounds so that every
 * input ends quickly. A success must keep chat.h's promises (segments ascending and ending at
 * the text's length, counted spans ascending, disjoint, non-empty and inside the text, the
 * same result when the ChatRender is reused); a failure must leave a message. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "io/chat.h"

/* system, user, assistant (with a reasoning block, as Qwen3's template splits them), user,
 * assistant with a tool call; and the tool. */
static const char line_json[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \" Hi \\u00e9\\n\"},"
    " {\"role\": \"assistant\", \"content\": \"<think>\\nGreet.\\n</think>\\n\\nHello!\"},"
    " {\"role\": \"user\", \"content\": \"Weather in Paris?\"},"
    " {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"type\": \"function\","
    " \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}]}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\","
    " \"description\": \"Current weather\", \"parameters\": {\"type\": \"object\","
    " \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}]}";
static const char kwargs_json[] = "{\"enable_thinking\": true, \"date_string\": \"26 Jul 2024\"}";

static void fz_check(int ok, const char *what, const char *detail) {
    if (!ok) {
        fprintf(stderr, "fuzz_chat: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
        abort();
    }
}

/* A failure: st says so and has a message. */
static void fz_check_failure(const ErrStatus *st, const char *what) {
    fz_check(!st->ok && st->msg[0], what, "a failure without a message");
}

static void fz_check_render(const ChatRender *r) {
    fz_check(r->len == 0 || (r->text && r->text[r->len] == '\0'), "render",
             "text not NUL-terminated at len");
    fz_check(r->nseg >= 1 && r->seg_end[r->nseg - 1] == r->len, "render",
             "segments do not end at len");
    for (size_t k = 1; k < r->nseg; k++)
        fz_check(r->seg_end[k - 1] <= r->seg_end[k], "render", "segments out of order");
    for (size_t k = 0; k < r->nspan; k++) {
        fz_check(r->span[k].start < r->span[k].end, "render", "an empty span");
        fz_check(r->span[k].end <= r->len, "render", "a span outside the text");
        fz_check(k == 0 || r->span[k - 1].end <= r->span[k].start, "render",
                 "spans overlap or are out of order");
    }
}

static int fz_same_render(const ChatRender *a, const ChatRender *b) {
    return a->len == b->len && a->nseg == b->nseg && a->nspan == b->nspan &&
           (a->len == 0 || memcmp(a->text, b->text, a->len) == 0) &&
           memcmp(a->seg_end, b->seg_end, a->nseg * sizeof *a->seg_end) == 0 &&
           (a->nspan == 0 || memcmp(a->span, b->span, a->nspan * sizeof *a->span) == 0);
}

/* A copy of r's text, segments and spans (r checked: nseg >= 1). */
static ChatRender fz_copy_render(const ChatRender *r) {
    ChatRender c = *r;
    c.text = malloc(r->len + 1);
    c.seg_end = malloc(r->nseg * sizeof *r->seg_end);
    c.span = malloc((r->nspan + 1) * sizeof *r->span);
    if (!c.text || !c.seg_end || !c.span) abort();
    if (r->len) memcpy(c.text, r->text, r->len);
    memcpy(c.seg_end, r->seg_end, r->nseg * sizeof *r->seg_end);
    if (r->nspan) memcpy(c.span, r->span, r->nspan * sizeof *r->span);
    return c;
}

/* The line by the label rule into r, twice (the second reuses r); the prompt. */
static void fz_render(const ChatTemplate *ct, json_t *line) {
    ChatRender r = {0};
    ErrStatus st;
    if (chat_render_line(ct, line, 0, &r, &st)) {
        fz_check_render(&r);
        ChatRender first = fz_copy_render(&r);
        fz_check(chat_render_line(ct, line, 0, &r, &st) && fz_same_render(&first, &r), "render",
                 "a reused ChatRender gives another result");
        chat_render_free(&first);
    } else {
        fz_check_failure(&st, "chat_render_line");
    }
    chat_render_free(&r);

    char *text;
    size_t len;
    if (chat_render_prompt(ct, json_object_get(line, "messages"), json_object_get(line, "tools"),
                           NULL, &text, &len, &st)) {
        fz_check(text && text[len] == '\0' && len <= ct->max_output, "chat_render_prompt",
                 "text not NUL-terminated or over max_output");
        free(text);
    } else {
        fz_check(text == NULL, "chat_render_prompt", "text set on failure");
        fz_check_failure(&st, "chat_render_prompt");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static json_t *line;
    if (!line && !(line = json_loads(line_json, 0, NULL))) abort();
    fz_write("tokenizer_config.json", data, size);
    /* The tokenizer (ChatSetup.tk) only checks a --chat-format's markers: none here. */
    ChatSetup s = {.model_dir = fz_dir(), .kwargs = kwargs_json};
    ChatTemplate ct;
    int status = 0;
    ErrStatus st;
    if (!chat_template_load(&ct, &s, &status, &st)) {
        fz_check_failure(&st, "chat_template_load");
        fz_check(status == EXIT_BAD_INPUT && !ct.tpl, "chat_template_load",
                 "a failure with another status or a template left");
        chat_template_free(&ct);
        return 0;
    }
    ct.max_output = (size_t)1 << 20; /* far below libFuzzer's 10 s per input */
    ct.max_steps = 200000;
    ct.now = 1735689600; /* strftime_now: 2025-01-01, so a run repeats */
    fz_render(&ct, line);
    chat_template_free(&ct);
    return 0;
}
