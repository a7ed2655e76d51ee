/* io/dataset: every line format against hand-computed ids and labels, the TRL prompt
 * masks, chat templates, eos handling, and every error with its reason text. The
 * byte-level tokenizer makes ids predictable ("Hi" -> 72 105; 256 <s>, 257 </s>); a second
 * one adds a BOS template and two merges to test where the mask boundaries fall. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../io/dataset.h"
#include "../../launch/tools/bytetok.h"
#include "check.h"

#define IGN (-100)

static DsExample ex; /* reused by every line, as a reader does */
/* the hand-written formats as templates of a run (chat_template_init_format) */
static ChatTemplate t_chatml, t_mistral;

static int encode(Tokenizer *tk, const DsOptions *o, const char *line, ErrStatus *st) {
    return ds_encode_line(tk, o, line, strlen(line), &ex, st);
}

static void expect_ok(const char *what, Tokenizer *tk, const DsOptions *o, const char *line,
                      DsFormat format, const int32_t *ids, const int32_t *labels, size_t n,
                      int64_t counted) {
    ErrStatus st;
    int ok = encode(tk, o, line, &st);
    CHECK_TRUE(ok, "%s: %s", what, st.msg);
    if (!ok) return;
    CHECK_TRUE(ex.format == format, "%s: format %s, want %s", what, ds_format_name(ex.format),
               ds_format_name(format));
    int same_n = ex.ids.n == n;
    CHECK_TRUE(same_n, "%s: %zu ids, want %zu", what, ex.ids.n, n);
    if (!same_n) {
        for (size_t i = 0; i < ex.ids.n; i++)
            printf(" %d/%d", ex.ids.ids[i], ex.labels[i]);
        printf("\n");
        return;
    }
    size_t bad_id = n, bad_label = n;
    for (size_t i = n; i-- > 0;) {
        if (ex.ids.ids[i] != ids[i]) bad_id = i;
        if (ex.labels[i] != labels[i]) bad_label = i;
    }
    CHECK_TRUE(bad_id == n, "%s: ids[%zu] = %d, want %d", what, bad_id,
               bad_id < n ? ex.ids.ids[bad_id] : 0, bad_id < n ? ids[bad_id] : 0);
    CHECK_TRUE(bad_label == n, "%s: labels[%zu] = %d, want %d", what, bad_label,
               bad_label < n ? ex.labels[bad_label] : 0, bad_label < n ? labels[bad_label] : 0);
    CHECK_TRUE(ex.counted == counted, "%s: counted %lld, want %lld", what, (long long)ex.counted,
               (long long)counted);
}

static void expect_err(Tokenizer *tk, const DsOptions *o, const char *line, const char *reason) {
    ErrStatus st;
    int ok = encode(tk, o, line, &st);
    CHECK_TRUE(!ok && strstr(st.msg, reason) != NULL, "%s: want '%s', got %s '%s'", line, reason,
               ok ? "success" : "error", st.msg);
}

/* ids and labels of a byte string: labels = ids when counted */
static size_t put_bytes(int32_t *ids, int32_t *labels, size_t at, const char *s, int counted) {
    for (; *s; s++, at++) {
        ids[at] = (unsigned char)*s;
        labels[at] = counted ? ids[at] : IGN;
    }
    return at;
}

static size_t put_id(int32_t *ids, int32_t *labels, size_t at, int32_t id, int counted) {
    ids[at] = id;
    labels[at] = counted ? id : IGN;
    return at + 1;
}

static int64_t count_labels(const int32_t *labels, size_t n) {
    int64_t c = 0;
    for (size_t i = 1; i < n; i++)
        c += labels[i] != IGN;
    return c;
}

/* The byte-level tokenizer with a TemplateProcessing BOS and merges "H i" -> 259 and
 * "] ]" -> 260. */
static Tokenizer *load_bos_merge(const char *dir, const char *base) {
    json_error_t je;
    json_t *root = json_load_file(base, 0, &je);
    CHECK_TRUE(root != NULL, "%s", je.text);
    json_t *post = json_pack("{s:s, s:[{s:{s:s,s:i}},{s:{s:s,s:i}}], s:{s:{s:s,s:[i],s:[s]}}}",
                             "type", "TemplateProcessing", "single", "SpecialToken", "id", "<s>",
                             "type_id", 0, "Sequence", "id", "A", "type_id", 0, "special_tokens",
                             "<s>", "id", "<s>", "ids", 256, "tokens", "<s>");
    CHECK_TRUE(post != NULL, "json_pack");
    json_object_set_new(root, "post_processor", post);
    json_t *model = json_object_get(root, "model");
    json_object_set_new(json_object_get(model, "vocab"), "Hi", json_integer(259));
    json_object_set_new(json_object_get(model, "vocab"), "]]", json_integer(260));
    json_array_append_new(json_object_get(model, "merges"), json_string("H i"));
    json_array_append_new(json_object_get(model, "merges"), json_string("] ]"));
    char path[512];
    snprintf(path, sizeof path, "%s/bos_merge.json", dir);
    CHECK_TRUE(json_dump_file(root, path, 0) == 0, "cannot write %s", path);
    json_decref(root);
    ErrStatus st;
    Tokenizer *tk = tok_load(path, &st);
    CHECK_TRUE(tk != NULL, "%s", st.msg);
    return tk;
}

static void test_text(Tokenizer *tk, Tokenizer *tb) {
    DsOptions o = {NULL, 0, 257, BYTETOK_VOCAB_SIZE};
    expect_ok("text + eos", tk, &o, "{\"text\": \"Hi\"}", DS_TEXT, (int32_t[]){72, 105, 257},
              (int32_t[]){72, 105, 257}, 3, 2);
    expect_ok("text, eos written", tk, &o, "{\"text\": \"Hi</s>\"}", DS_TEXT,
              (int32_t[]){72, 105, 257}, (int32_t[]){72, 105, 257}, 3, 2);
    DsOptions noeos = o;
    noeos.eos_id = -1;
    expect_ok("text, no eos", tk, &noeos, "{\"text\": \"Hi\"}", DS_TEXT, (int32_t[]){72, 105},
              (int32_t[]){72, 105}, 2, 1);
    /* BOS from the post-processor, then the merge (259: tb's vocabulary has 261 ids) */
    DsOptions ob = o;
    ob.vocab = 261;
    expect_ok("text bos+merge", tb, &ob, "{\"text\": \"aHi\"}", DS_TEXT,
              (int32_t[]){256, 97, 259, 257}, (int32_t[]){256, 97, 259, 257}, 4, 3);
    /* ids from the tokenizer are checked against the model's vocabulary like pre-tokenised
     * ones: 259 does not fit a model of 259 */
    expect_err(tb, &o, "{\"text\": \"aHi\"}",
               "token 2 has id 259, outside the model's vocabulary [0, 259) (vocab_size in "
               "config.json): tokenizer.json does not match the model");
    DsOptions chat = o;
    chat.chat = &t_chatml;
    expect_err(tb, &chat,
               "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
               "{\"role\": \"assistant\", \"content\": \"x\"}]}",
               "has id 259, outside the model's vocabulary [0, 259)");
    DsOptions big_eos = o;
    big_eos.eos_id = 300;
    expect_err(tk, &big_eos, "{\"text\": \"Hi\"}",
               "token 2 has id 300, outside the model's vocabulary [0, 259) (vocab_size in "
               "config.json): the EOS id (eos_token_id) is too big");
    /* a null key counts as absent (a table exported with every column) */
    expect_ok("null keys", tk, &noeos,
              "{\"input_ids\": null, \"messages\": null, \"text\": \"Hi\"}", DS_TEXT,
              (int32_t[]){72, 105}, (int32_t[]){72, 105}, 2, 1);
    /* \u0000 is valid JSON and is kept */
    expect_ok("NUL in text", tk, &noeos, "{\"text\": \"a\\u0000b\"}", DS_TEXT,
              (int32_t[]){97, 0, 98}, (int32_t[]){97, 0, 98}, 3, 2);
}

static void test_prompt_completion(Tokenizer *tk, Tokenizer *tb) {
    DsOptions o = {NULL, 0, 257, BYTETOK_VOCAB_SIZE};
    expect_ok("prompt masked", tk, &o, "{\"prompt\": \"Q:\", \"completion\": \"A\"}",
              DS_PROMPT_COMPLETION, (int32_t[]){81, 58, 65, 257}, (int32_t[]){IGN, IGN, 65, 257}, 4,
              2);
    DsOptions all = o;
    all.train_on_prompt = 1;
    expect_ok("train_on_prompt", tk, &all, "{\"prompt\": \"Q:\", \"completion\": \"A\"}",
              DS_PROMPT_COMPLETION, (int32_t[]){81, 58, 65, 257}, (int32_t[]){81, 58, 65, 257}, 4,
              3);
    expect_ok("eos not doubled", tk, &o, "{\"completion\": \"A</s>\", \"prompt\": \"Q\"}",
              DS_PROMPT_COMPLETION, (int32_t[]){81, 65, 257}, (int32_t[]){IGN, 65, 257}, 3, 2);
    /* an empty completion would train on the appended EOS alone: refused as prompt-only */
    expect_err(tk, &o, "{\"prompt\": \"Q\", \"completion\": \"\"}", "\"completion\" is empty");
    /* TRL's boundary: BOS + len(encode("aH")) = 3 tokens masked, although the full text
     * merges "H" with the completion's "i" */
    DsOptions ob = o;
    ob.vocab = 261; /* tb's merges are 259 and 260 */
    expect_ok("prompt boundary in a merge", tb, &ob, "{\"prompt\": \"aH\", \"completion\": \"ix\"}",
              DS_PROMPT_COMPLETION, (int32_t[]){256, 97, 259, 120, 257},
              (int32_t[]){IGN, IGN, IGN, 120, 257}, 5, 2);
    expect_err(tb, &o, "{\"prompt\": \"aH\", \"completion\": \"ix\"}",
               "token 2 has id 259, outside the model's vocabulary [0, 259)");
    expect_ok("prompt with bos", tb, &o, "{\"prompt\": \"a\", \"completion\": \"b\"}",
              DS_PROMPT_COMPLETION, (int32_t[]){256, 97, 98, 257}, (int32_t[]){IGN, IGN, 98, 257},
              4, 2);
}

/* Messages, rendered by io/chat.c; expected ids spelled out from the templates' text. */
static void test_messages(Tokenizer *tk, Tokenizer *tb) {
    int32_t ids[256], labels[256];
    size_t n = 0;
    const char *conv = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
                       "{\"role\": \"assistant\", \"content\": \"Yo\"}]}";
    DsOptions o = {&t_chatml, 0, 257, BYTETOK_VOCAB_SIZE};
    n = put_bytes(ids, labels, 0, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", 0);
    n = put_bytes(ids, labels, n, "Yo<|im_end|>", 1);
    n = put_bytes(ids, labels, n, "\n", 0);
    expect_ok("chatml", tk, &o, conv, DS_MESSAGES, ids, labels, n, count_labels(labels, n));
    DsOptions all = o;
    all.train_on_prompt = 1;
    for (size_t i = 0; i < n; i++)
        labels[i] = ids[i];
    expect_ok("chatml train_on_prompt", tk, &all, conv, DS_MESSAGES, ids, labels, n,
              (int64_t)n - 1);

    /* mistral: "<s>" and "</s>" in the template text are matched as special tokens; no
     * eos is appended to messages (the template ends the reply) */
    o.chat = &t_mistral;
    n = put_id(ids, labels, 0, 256, 0);
    n = put_bytes(ids, labels, n, "[INST] Hi [/INST]", 0);
    n = put_bytes(ids, labels, n, "Yo", 1);
    n = put_id(ids, labels, n, 257, 1);
    expect_ok("mistral", tk, &o, conv, DS_MESSAGES, ids, labels, n, count_labels(labels, n));

    /* two turns: every assistant reply counted, the user turn between masked */
    o.chat = &t_chatml;
    n = put_bytes(ids, labels, 0, "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n", 0);
    n = put_bytes(ids, labels, n, "b<|im_end|>", 1);
    n = put_bytes(ids, labels, n, "\n<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n", 0);
    n = put_bytes(ids, labels, n, "d<|im_end|>", 1);
    n = put_bytes(ids, labels, n, "\n", 0);
    expect_ok("chatml two turns", tk, &o,
              "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": "
              "\"assistant\", \"content\": \"b\"}, {\"role\": \"user\", \"content\": \"c\"}, "
              "{\"role\": \"assistant\", \"content\": \"d\"}]}",
              DS_MESSAGES, ids, labels, n, count_labels(labels, n));

    /* a merge across a boundary: "...[/INST" + "]" | "]x</s>" has "]]" as one token; it
     * overlaps the counted "]x</s>", so it is counted (transformers' char_to_token rule) */
    o.chat = &t_mistral;
    o.vocab = 261;
    const int32_t mids[] = {256, '[', 'I', 'N', 'S', 'T', ']', ' ', 259, ' ',
                            '[', '/', 'I', 'N', 'S', 'T', 260, 'x', 257};
    n = sizeof mids / sizeof *mids;
    for (size_t i = 0; i < n; i++) {
        ids[i] = mids[i];
        labels[i] = i >= 16 ? mids[i] : IGN;
    }
    expect_ok("boundary in a merge", tb, &o,
              "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
              "{\"role\": \"assistant\", \"content\": \"]x\"}]}",
              DS_MESSAGES, ids, labels, n, 3);

    o.chat = &t_chatml;
    expect_err(tk, &o, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}",
               "nothing to train on: every token is masked (prompt only?)");
}

static void test_tokens(void) {
    DsOptions o = {NULL, 0, 257, BYTETOK_VOCAB_SIZE};
    ErrStatus st;
    /* no tokenizer needed, no eos appended */
    expect_ok("input_ids", NULL, &o, "{\"input_ids\": [5, 6, 7]}", DS_TOKENS, (int32_t[]){5, 6, 7},
              (int32_t[]){5, 6, 7}, 3, 2);
    CHECK_TRUE(!ex.has_pos, "has_pos without position_ids");
    expect_ok("labels", NULL, &o, "{\"input_ids\": [5, 6, 7], \"labels\": [-100, -100, 7]}",
              DS_TOKENS, (int32_t[]){5, 6, 7}, (int32_t[]){IGN, IGN, 7}, 3, 1);
    CHECK_TRUE(encode(NULL, &o, "{\"input_ids\": [5, 6, 7], \"position_ids\": [3, 0, 1]}", &st),
               "%s", st.msg);
    CHECK_TRUE(ex.has_pos && ex.pos[0] == 3 && ex.pos[1] == 0 && ex.pos[2] == 1,
               "position_ids not kept");
    /* explicit labels may mask everything */
    expect_ok("all masked, explicit", NULL, &o, "{\"input_ids\": [5, 6], \"labels\": [-100, -100]}",
              DS_TOKENS, (int32_t[]){5, 6}, (int32_t[]){IGN, IGN}, 2, 0);
    /* a long line after short ones: buffers grow */
    char line[65536];
    int32_t ids[8000];
    size_t at = (size_t)snprintf(line, sizeof line, "{\"input_ids\": [");
    for (int i = 0; i < 8000; i++) {
        ids[i] = i % 259;
        at += (size_t)snprintf(line + at, sizeof line - at, "%s%d", i ? "," : "", ids[i]);
    }
    snprintf(line + at, sizeof line - at, "]}");
    expect_ok("8000 ids", NULL, &o, line, DS_TOKENS, ids, ids, 8000, 7999);
}

static void test_errors(Tokenizer *tk) {
    DsOptions o = {NULL, 0, 257, BYTETOK_VOCAB_SIZE};
    expect_err(tk, &o, "{\"text\": \"Hi\"} x", "invalid JSON at column 16: ");
    expect_err(tk, &o, "{\"text\": \"Hi\",}", "invalid JSON at column 15: ");
    expect_err(tk, &o, "", "invalid JSON at column");
    expect_err(tk, &o, "[1, 2]", "a line must be a JSON object, not an array");
    expect_err(tk, &o, "\"text\"", "a line must be a JSON object, not a string");
    expect_err(tk, &o, "{\"txt\": \"a\"}",
               "no \"text\", \"prompt\"/\"completion\", \"messages\" or \"input_ids\" key");
    expect_err(tk, &o, "{\"text\": 5}", "\"text\" must be a string");
    /* ids beside a text, and a key given twice: refused, not read one way silently */
    expect_err(tk, &o, "{\"text\": \"ab\", \"input_ids\": [1, 2]}",
               "both \"input_ids\" and \"text\"");
    expect_err(tk, &o,
               "{\"input_ids\": [1], \"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}",
               "both \"input_ids\" and \"messages\"");
    expect_err(tk, &o, "{\"text\": \"a\", \"text\": \"b\"}", "duplicate object key");
    expect_err(tk, &o, "{\"text\": \"\"}", "\"text\" is empty");
    expect_err(NULL, &o, "{\"text\": \"a\"}", "needs the model's tokenizer.json");
    expect_err(tk, &o, "{\"prompt\": \"a\", \"completion\": 3}", "\"completion\" must be a string");
    expect_err(tk, &o, "{\"prompt\": [], \"completion\": \"b\"}", "\"prompt\" must be a string");
    expect_err(tk, &o, "{\"prompt\": \"a\"}", "\"prompt\" without \"completion\"");
    expect_err(tk, &o, "{\"completion\": \"a\"}", "\"completion\" without \"prompt\"");
    expect_err(tk, &o, "{\"prompt\": \"\", \"completion\": \"\"}", "\"completion\" is empty");
    DsOptions noeos = o;
    noeos.eos_id = -1;
    expect_err(tk, &noeos, "{\"text\": \"H\"}",
               "nothing to train on: every token is masked (prompt only?)");
    expect_err(tk, &noeos, "{\"prompt\": \"Hi\", \"completion\": \"\"}", "nothing to train on");
    expect_err(tk, &o, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}",
               "--chat-format");
    expect_err(tk, &o, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}",
               "tokenizer_config.json");
    expect_err(tk, &o, "{\"messages\": \"hi\"}", "\"messages\" must be an array");
    expect_err(tk, &o, "{\"messages\": []}", "\"messages\" is empty");
    expect_err(tk, &o, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, 3]}",
               "\"messages\"[1] must be an object, not a number");
    DsOptions chatml = o;
    chatml.chat = &t_chatml; /* the hand-written formats take string contents only */
    expect_err(tk, &chatml,
               "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
               "{\"role\": \"assistant\", \"content\": null}]}",
               "\"messages\"[1].\"content\" must be a string for --chat-format chatml");
    expect_err(tk, &o, "{\"messages\": [{\"content\": \"a\"}]}",
               "\"messages\"[0].\"role\" must be a string");
    expect_err(tk, &chatml, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\\u0000\"}]}",
               "\"messages\"[0] contains a \\u0000 character");
    DsOptions mistral = o;
    mistral.chat = &t_mistral; /* chat.c's own reasons come through */
    ErrStatus st;
    CHECK_TRUE(!encode(tk, &mistral,
                       "{\"messages\": [{\"role\": \"assistant\", \"content\": "
                       "\"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}",
                       &st) &&
                   st.msg[0],
               "non-alternating mistral roles accepted");
    expect_err(NULL, &o, "{\"input_ids\": []}", "\"input_ids\" is empty");
    expect_err(NULL, &o, "{\"input_ids\": 5}", "\"input_ids\" must be an array of integers");
    expect_err(NULL, &o, "{\"input_ids\": [1, 259]}",
               "\"input_ids\"[1] = 259 is outside the vocabulary [0, 259)");
    expect_err(NULL, &o, "{\"input_ids\": [-1]}",
               "\"input_ids\"[0] = -1 is outside the vocabulary");
    expect_err(NULL, &o, "{\"input_ids\": [1, \"a\"]}",
               "\"input_ids\"[1] must be an integer, not a string");
    expect_err(NULL, &o, "{\"input_ids\": [1, 2.0]}",
               "\"input_ids\"[1] must be an integer, not a number");
    expect_err(NULL, &o, "{\"input_ids\": [1, 2], \"labels\": [1]}",
               "\"labels\" has 1 entries but \"input_ids\" has 2");
    expect_err(NULL, &o, "{\"input_ids\": [1, 2], \"labels\": [1, -5]}",
               "\"labels\"[1] = -5 is neither -100 nor in the vocabulary [0, 259)");
    expect_err(NULL, &o, "{\"input_ids\": [1, 2], \"labels\": \"x\"}",
               "\"labels\" must be an array of integers");
    expect_err(NULL, &o, "{\"input_ids\": [1, 2], \"position_ids\": [0, -1]}",
               "\"position_ids\"[1] = -1 is outside [0, 2^31)");
    expect_err(NULL, &o, "{\"input_ids\": [1, 2], \"position_ids\": [0, 1, 2]}",
               "\"position_ids\" has 3 entries but \"input_ids\" has 2");
    expect_err(NULL, &o, "{\"input_ids\": [1]}",
               "nothing to train on: every token is masked (prompt only?)");
}

/* The model's own template through a line: an inconsistent template (the last reply gets a
 * "*" the earlier ones lose) gives two segments in one example, positions restarting at 0,
 * the second segment's first label -100; --chat-format markers must be single tokens. */
static void test_template(Tokenizer *tk, const char *dir) {
    ChatTemplate ct;
    ErrStatus st;
    int status;
    ChatSetup s = {dir, NULL, NULL, "chatml", tk};
    CHECK_TRUE(!chat_template_load(&ct, &s, &status, &st) && status == EXIT_USAGE &&
                   strstr(st.msg, "--chat-format chatml writes the special token <|im_start|>, "
                                  "which is not a single token"),
               "chatml markers on a byte vocabulary: %s", st.msg);
    chat_template_free(&ct);
    s.format = "mistral"; /* <s> and </s> are this vocabulary's specials */
    CHECK_TRUE(chat_template_load(&ct, &s, &status, &st) && ct.format == CHAT_MISTRAL && !ct.tpl,
               "mistral markers: %s", st.msg);
    chat_template_free(&ct);

    char path[512];
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    FILE *fp = fopen(path, "w");
    CHECK_TRUE(fp != NULL, "cannot write %s", path);
    if (!fp) return;
    fputs("{% for m in messages %}{{ m.role[0] }}:{% if m.role == 'assistant' and loop.last %}*"
          "{% endif %}{{ m.content }}</s>{% endfor %}{% if add_generation_prompt %}a:{% endif %}",
          fp);
    fclose(fp);
    s.format = NULL;
    CHECK_TRUE(chat_template_load(&ct, &s, &status, &st) && ct.tpl, "template: %s", st.msg);
    DsOptions o = {&ct, 0, 257, BYTETOK_VOCAB_SIZE};
    int32_t ids[64], labels[64];
    size_t n = put_bytes(ids, labels, 0, "u:x", 0);
    n = put_id(ids, labels, n, 257, 0);
    n = put_bytes(ids, labels, n, "a:", 0);
    n = put_bytes(ids, labels, n, "*y", 1);
    n = put_id(ids, labels, n, 257, 1);
    size_t seg1 = n;
    n = put_bytes(ids, labels, n, "u:x", 0);
    n = put_id(ids, labels, n, 257, 0);
    n = put_bytes(ids, labels, n, "a:y", 0);
    n = put_id(ids, labels, n, 257, 0);
    n = put_bytes(ids, labels, n, "u:z", 0);
    n = put_id(ids, labels, n, 257, 0);
    n = put_bytes(ids, labels, n, "a:", 0);
    n = put_bytes(ids, labels, n, "*w", 1);
    n = put_id(ids, labels, n, 257, 1);
    expect_ok("template, two segments", tk, &o,
              "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": "
              "\"assistant\", \"content\": \"y\"}, {\"role\": \"user\", \"content\": \"z\"}, "
              "{\"role\": \"assistant\", \"content\": \"w\"}]}",
              DS_MESSAGES, ids, labels, n, 6);
    CHECK_TRUE(ex.nseg == 2 && ex.seg_ntok[0] == seg1 && ex.seg_ntok[1] == n - seg1 && ex.has_pos,
               "segments: %zu", ex.nseg);
    int pos_ok = ex.ids.n == n;
    for (size_t i = 0; pos_ok && i < n; i++)
        pos_ok = ex.pos[i] == (int32_t)(i < seg1 ? i : i - seg1);
    CHECK_TRUE(pos_ok, "positions do not restart at the second segment");
    CHECK_TRUE(ex.text_len == strlen("u:x</s>a:*y</s>u:x</s>a:y</s>u:z</s>a:*w</s>") &&
                   memcmp(ex.text, "u:x</s>a:*y</s>u:x</s>a:y</s>u:z</s>a:*w</s>", ex.text_len) ==
                       0,
               "text of the segments: %.*s", (int)ex.text_len, ex.text);
    /* train_on_prompt: every token, but the second segment's first (nothing predicts it) */
    o.train_on_prompt = 1;
    for (size_t i = 0; i < n; i++)
        labels[i] = i == seg1 ? IGN : ids[i];
    expect_ok("template, two segments, train_on_prompt", tk, &o,
              "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": "
              "\"assistant\", \"content\": \"y\"}, {\"role\": \"user\", \"content\": \"z\"}, "
              "{\"role\": \"assistant\", \"content\": \"w\"}]}",
              DS_MESSAGES, ids, labels, n, (int64_t)n - 2);
    chat_template_free(&ct);
    unlink(path);
}

int main(void) {
    char dir[] = "/tmp/test_dataset_XXXXXX";
    CHECK_TRUE(mkdtemp(dir) != NULL, "mkdtemp");
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    ErrStatus st;
    CHECK_TRUE(bytetok_write(path, &st), "%s", st.msg);
    Tokenizer *tk = tok_load(path, &st);
    CHECK_TRUE(tk != NULL, "%s", st.msg);
    Tokenizer *tb = load_bos_merge(dir, path);
    if (!tk || !tb) return check_finish();
    size_t before, after;
    tok_post_counts(tk, &before, &after);
    CHECK_TRUE(before == 0 && after == 0, "byte-level adds %zu/%zu specials", before, after);
    tok_post_counts(tb, &before, &after);
    CHECK_TRUE(before == 1 && after == 0, "bos template adds %zu/%zu specials", before, after);
    CHECK_TRUE(strcmp(ds_format_name(DS_PROMPT_COMPLETION), "prompt/completion") == 0, "name");

    chat_template_init_format(&t_chatml, CHAT_CHATML);
    chat_template_init_format(&t_mistral, CHAT_MISTRAL);
    test_text(tk, tb);
    test_prompt_completion(tk, tb);
    test_messages(tk, tb);
    test_tokens();
    test_errors(tk);
    test_template(tk, dir);

    ds_example_free(&ex);
    chat_template_free(&t_chatml);
    chat_template_free(&t_mistral);
    tok_free(tk);
    tok_free(tb);
    unlink(path);
    snprintf(path, sizeof path, "%s/bos_merge.json", dir);
    unlink(path);
    rmdir(dir);
    return check_finish();
}
