/* io/tokenizer: hand-written tokenizer.json files (byte-level BPE with a template, a
 * SentencePiece-style BPE with byte fallback) and the errors for malformed files. The full
 * comparison with the Hugging Face oracle on real files is the tokenizer-labelled test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../io/tokenizer.h"
#include "check.h"

static const char *write_tmp(const char *json) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/test_tokenizer_%d.json", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs(json, f);
    fclose(f);
    return path;
}

static void check_ids(Tokenizer *tk, const char *text, int special, const int32_t *want,
                      size_t nwant) {
    TokIds ids = {0};
    ErrStatus st;
    CHECK_TRUE(tok_encode(tk, text, strlen(text), special, &ids, &st), "%s", st.msg);
    int same = ids.n == nwant && memcmp(ids.ids, want, nwant * sizeof *want) == 0;
    CHECK_TRUE(same, "'%s': got %zu ids (first %d), want %zu", text, ids.n,
               ids.n ? ids.ids[0] : -1, nwant);
    size_t len;
    char *back = tok_decode(tk, ids.ids, ids.n, 1, &len);
    (void)back;
    free(back);
    tok_ids_free(&ids);
}

static void check_error(const char *json, const char *needle) {
    ErrStatus st;
    Tokenizer *tk = tok_load(write_tmp(json), &st);
    CHECK_TRUE(tk == NULL && strstr(st.msg, needle) != NULL, "want error '%s', got '%s'",
               needle, tk ? "(loaded)" : st.msg);
    tok_free(tk);
}

/* a b c d as GPT-2 characters, merges "a b" then "ab c", BOS <s> = 7 */
static const char *bytelevel_json =
    "{\"added_tokens\":[{\"id\":7,\"content\":\"<s>\",\"special\":true,\"lstrip\":false,"
    "\"rstrip\":false,\"normalized\":false,\"single_word\":false}],"
    "\"normalizer\":null,"
    "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
    "{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
    "\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[7],\"tokens\":[\"<s>\"]}}},"
    "\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"\\u0120\":3,\"ab\":4,"
    "\"abc\":5,\"\\u0120a\":6,\"<s>\":7},\"merges\":[\"a b\",[\"ab\",\"c\"],\"\\u0120 a\"]}}";

int main(void) {
    ErrStatus st;
    Tokenizer *tk = tok_load(write_tmp(bytelevel_json), &st);
    CHECK_TRUE(tk != NULL, "%s", st.msg);
    if (tk) {
        const int32_t w1[] = {7, 5, 3, 4};
        check_ids(tk, "abc ab", 1, w1, 4);          /* " ab": "a b" (rank 0) wins over "Ġ a" */
        const int32_t w2[] = {5, 7, 4};
        check_ids(tk, "abc<s>ab", 0, w2, 3);        /* special token inside the text */
        const int32_t w3[] = {0};
        check_ids(tk, "", 0, w3, 0);
        int32_t ids[] = {7, 5, 6, 1};
        size_t len;
        char *t = tok_decode(tk, ids, 4, 0, &len);
        CHECK_TRUE(strcmp(t, "<s>abc ab") == 0, "decode: '%s'", t);
        free(t);
        t = tok_decode(tk, ids, 4, 1, &len);
        CHECK_TRUE(strcmp(t, "abc ab") == 0, "decode skip special: '%s'", t);
        free(t);
        tok_free(tk);
    }
    check_error("{\"added_tokens\":[]}", "model: missing");
    check_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a z\"]}}",
                "model.merges[0]");
    check_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
                "\"pre_tokenizer\":{\"type\":\"Whitespace\"}}",
                "unsupported pre_tokenizer type 'Whitespace' (pre_tokenizer)");
    check_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "unsupported model type");
    check_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
                "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFKC\"}]}}",
                "unsupported normalizer type 'NFKC' (normalizer.normalizers[0])");
    unlink(write_tmp(""));
    return check_finish();
}
