/* libFuzzer harness: the input is a chat template (io/jinja.h): jinja_compile, then
 * jinja_render of a fixed conversation with tools, under small bounds so that every input
 * ends quickly. A success must give a NUL-terminated text and generation spans inside it; a
 * failure a known kind, a message and no output. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/jinja.h"

static const char *const vars_json =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \" Hi \\u00e9\\n\"},"
    " {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"type\": \"function\","
    " \"function\": {\"name\": \"get_w\", \"arguments\": {\"city\": \"Paris\", \"n\": 1.5}}}]},"
    " {\"role\": \"tool\", \"content\": \"sunny\"},"
    " {\"role\": \"assistant\", \"content\": \"<think>\\nx\\n</think>\\n\\nSunny.\"}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_w\", \"parameters\":"
    " {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}}}],"
    " \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\","
    " \"enable_thinking\": false}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static json_t *vars;
    if (!vars && !(vars = json_loads(vars_json, 0, NULL))) abort();
    JinjaErr kind = JINJA_OK;
    ErrStatus st;
    JinjaTemplate *t = jinja_compile((const char *)data, size, &kind, &st);
    if (!t) {
        if (kind == JINJA_OK || kind > JINJA_ERR_LIMIT || !st.msg[0]) abort();
        return 0;
    }
    JinjaLimits lim = {1 << 20, 1000000, 0};
    JinjaOutput out;
    if (jinja_render(t, vars, &lim, &out, &kind, &st)) {
        if (!out.text || out.text[out.len] != 0 || out.len > lim.max_output) abort();
        if (!jinja_has_generation(t) && out.ngen) abort();
        for (size_t i = 0; i < out.ngen; i++)
            if (out.gen[i].start > out.gen[i].end || out.gen[i].end > out.len) abort();
        jinja_output_free(&out);
    } else if (kind == JINJA_OK || kind > JINJA_ERR_LIMIT || out.text || out.ngen ||
               (kind != JINJA_ERR_RAISED && !st.msg[0])) {
        fprintf(stderr, "fuzz_jinja: a failed render with kind %d, message [%s]\n", (int)kind,
                st.msg);
        abort();
    }
    jinja_free(t);
    return 0;
}
