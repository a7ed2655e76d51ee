/* libFuzzer harness: one JSONL example line through ds_encode_line with the fixed tokenizer
 * (fuzz_common.c). The first byte picks the options (chat format, train_on_prompt, EOS,
 * vocabulary check), so "messages" lines also drive every hand-written layout of io/chatfmt.c. An
 * accepted example must be consistent: labels -100 or their token, ids in the vocabulary,
 * `counted` equal to the labels that count. */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_common.h"
#include "io/dataset.h"

static void fz_check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_jsonl: accepted example with %s\n", what);
        abort();
    }
}

static void fz_check_example(const DsExample *ex, const DsOptions *o) {
    int64_t counted = 0;
    for (size_t i = 0; i < ex->ids.n; i++) {
        int32_t id = ex->ids.ids[i], lab = ex->labels[i];
        fz_check(o->vocab <= 0 || (id >= 0 && id < o->vocab), "an id outside the vocabulary");
        fz_check(lab == -100 || ex->format == DS_TOKENS || lab == id, "a label not its token");
        if (i > 0 && lab != -100) counted++;
    }
    fz_check(counted == ex->counted, "a wrong count of trained tokens");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Loaded once and reused across lines, as the data pipeline does. */
    static Tokenizer *tk;
    static DsExample ex;
    static ChatTemplate chat[CHAT_NFORMATS]; /* the hand-written formats (no model template) */
    ErrStatus st;
    if (size == 0) return 0;
    if (!tk && !(tk = tok_load(fz_fixed_tokenizer(), &st))) {
        fprintf(stderr, "fuzz_jsonl: the fixed tokenizer does not load: %s\n", st.msg);
        abort();
    }
    if (!chat[1].vars)
        for (int f = 0; f < CHAT_NFORMATS; f++)
            chat_template_init_format(&chat[f], (ChatFormat)f);
    uint8_t opt = data[0];
    DsOptions o = {
        .chat = &chat[opt % CHAT_NFORMATS],
        .train_on_prompt = (opt >> 3) & 1,
        .eos_id = (opt >> 4) & 1 ? tok_token_id(tk, "</s>") : -1,
        .vocab = (opt >> 5) & 1 ? tok_vocab_size(tk) : 0,
    };
    if (ds_encode_line(tk, &o, (const char *)data + 1, size - 1, &ex, &st))
        fz_check_example(&ex, &o);
    return 0;
}
