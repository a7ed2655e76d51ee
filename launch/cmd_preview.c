/* `shardlora preview --model DIR --data FILE`: the first examples of a JSONL file as
 * training sees them (before packing): the rendered text with the counted parts marked, or
 * with --jsonl one {"text", "input_ids", "labels"[, "segments"]} object per example. One
 * process, no MPI: a check of the data and the chat template before a run. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../io/afile.h"
#include "../io/dataset.h"
#include "../io/hfconfig.h"
#include "../runtime/str.h"
#include "args.h"
#include "cmds.h"

#define PREVIEW_IGNORE (-100)

typedef struct {
    const char *model, *data, *chat_template, *chat_kwargs, *chat_format, *color;
    int64_t rows;
    int jsonl, train_on_prompt, add_eos;
} PreviewOpts;

/* The EOS id as train finds it: config.json's eos_token_id, else tokenizer_config.json's
 * eos_token (a string or {"content": ...}); -1 when neither names one. *vocab: config.json's
 * vocab_size, else the tokenizer's. */
static int32_t preview_eos(const char *dir, const Tokenizer *tk, int64_t *vocab) {
    char *path = str_join_path(dir, "config.json");
    HfcConfig c;
    ErrStatus ignore; /* optional files: no EOS when they are absent or unreadable */
    int have = hfc_load(&c, path, &ignore);
    int64_t id = have ? c.eos_token_id : -1;
    *vocab = have && c.vocab_size > 0 ? c.vocab_size : tk ? tok_vocab_size(tk) : 0;
    free(path);
    if (id >= 0 || !tk) return (int32_t)id;
    path = str_join_path(dir, "tokenizer_config.json");
    json_t *root = afile_read_json(path, (size_t)64 << 20, JSON_DECODE_INT_AS_REAL, &ignore);
    free(path);
    json_t *e = root ? json_object_get(root, "eos_token") : NULL;
    if (json_is_object(e)) e = json_object_get(e, "content");
    id = json_is_string(e) ? tok_token_id(tk, json_string_value(e)) : -1;
    json_decref(root);
    return (int32_t)id;
}

static void preview_json_ids(json_t *o, const char *key, const int32_t *v, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(v[i]));
    json_object_set_new(o, key, a);
}

/* One example as {"text", "input_ids", "labels"[, "segments"]} on one line. */
static void preview_print_jsonl(Tokenizer *tk, const DsExample *ex) {
    json_t *o = json_object();
    if (ex->format != DS_TOKENS) {
        json_object_set_new(o, "text", json_stringn_nocheck(ex->text, ex->text_len));
    } else {
        size_t len = 0;
        char *t = tk ? tok_decode(tk, ex->ids.ids, ex->ids.n, 0, &len) : NULL;
        json_object_set_new(o, "text", t ? json_stringn_nocheck(t, len) : json_null());
        free(t);
    }
    preview_json_ids(o, "input_ids", ex->ids.ids, ex->ids.n);
    preview_json_ids(o, "labels", ex->labels, ex->ids.n);
    if (ex->nseg > 1) {
        json_t *s = json_array();
        for (size_t k = 0; k < ex->nseg; k++)
            json_array_append_new(s, json_integer((json_int_t)ex->seg_ntok[k]));
        json_object_set_new(o, "segments", s);
    }
    char *d = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    puts(d);
    free(d);
    json_decref(o);
}

/* Tokens [a, b) as text: decoded in runs of the same counted flag, the counted runs
 * between "[[" and "]]" (or in green with colour). Without a tokenizer, the ids. */
static void preview_print_tokens(Tokenizer *tk, const DsExample *ex, size_t a, size_t b,
                                 int color) {
    size_t i = a;
    while (i < b) {
        int counted = ex->labels[i] != PREVIEW_IGNORE;
        size_t j = i;
        while (j < b && (ex->labels[j] != PREVIEW_IGNORE) == counted)
            j++;
        fputs(!counted ? "" : color ? "\033[1;32m" : "[[", stdout);
        if (tk) {
            size_t len;
            char *t = tok_decode(tk, ex->ids.ids + i, j - i, 0, &len);
            fwrite(t, 1, len, stdout);
            free(t);
        } else {
            for (size_t k = i; k < j; k++)
                printf("%s%d", k > i ? " " : "", ex->ids.ids[k]);
        }
        fputs(!counted ? "" : color ? "\033[0m" : "]]", stdout);
        i = j;
    }
}

/* One example, readable: its line, format, token counts and text with the counted parts
 * marked, segment by segment. */
static void preview_print_text(Tokenizer *tk, const DsExample *ex, const char *file, long lineno,
                               int color) {
    size_t counted = 0;
    for (size_t i = 0; i < ex->ids.n; i++)
        counted += ex->labels[i] != PREVIEW_IGNORE;
    printf("==> %s:%ld (%s): %zu tokens, %zu counted", file, lineno, ds_format_name(ex->format),
           ex->ids.n, counted);
    if (ex->nseg > 1) {
        printf(", %zu segments (positions restart at 0 at each):", ex->nseg);
        for (size_t k = 0; k < ex->nseg; k++)
            printf(" %zu", ex->seg_ntok[k]);
    }
    fputs("\n", stdout);
    size_t at = 0;
    for (size_t k = 0; k < ex->nseg; k++) {
        if (ex->nseg > 1) printf("%s-- segment %zu --\n", k ? "\n" : "", k + 1);
        preview_print_tokens(tk, ex, at, at + ex->seg_ntok[k], color);
        at += ex->seg_ntok[k];
    }
    fputs("\n\n", stdout);
}

/* The first o->rows non-blank lines of o->data (all with 0). 0 or EXIT_BAD_INPUT. */
static int preview_lines(const PreviewOpts *o, Tokenizer *tk, const DsOptions *ds, int color) {
    ErrStatus st;
    FILE *fp = afile_fopen_input(o->data, &st);
    if (!fp) {
        fprintf(stderr, "shardlora preview: %s\n", st.msg);
        return EXIT_BAD_INPUT;
    }
    DsExample ex;
    memset(&ex, 0, sizeof ex);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int64_t shown = 0;
    int rc = 0;
    while (rc == 0 && (o->rows == 0 || shown < o->rows) && (len = getline(&line, &cap, fp)) >= 0) {
        lineno++;
        char *s = line;
        if (lineno == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) { /* a UTF-8 BOM */
            s += 3;
            len -= 3;
        }
        while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
            len--;
        size_t k = 0;
        while (k < (size_t)len && (s[k] == ' ' || s[k] == '\t'))
            k++;
        if (k == (size_t)len) continue;
        if (!ds_encode_line(tk, ds, s, (size_t)len, &ex, &st)) {
            fflush(stdout);
            fprintf(stderr, "shardlora preview: %s:%ld: %s\n", o->data, lineno, st.msg);
            rc = EXIT_BAD_INPUT;
            break;
        }
        if (o->jsonl)
            preview_print_jsonl(tk, &ex);
        else
            preview_print_text(tk, &ex, o->data, lineno, color);
        shown++;
    }
    free(line);
    fclose(fp);
    ds_example_free(&ex);
    return rc;
}

int cmd_preview(int argc, char **argv) {
    PreviewOpts o = {.chat_format = "auto", .color = "auto", .rows = 3, .add_eos = 1};
    /* one option per line: name, type, destination, metavar, help, required, seen */
    // clang-format off
    ArgSpec specs[] = {
        {.type = ARG_GROUP, .group = ARGG_MODEL},
        {"model", ARG_STR, &o.model, "DIR", "model directory (tokenizer.json, tokenizer_config.json, config.json; no weights are read)", 1, 0},
        {.type = ARG_GROUP, .group = ARGG_DATA},
        {"data", ARG_STR, &o.data, "FILE", "JSONL data as train reads it: text, prompt/completion, messages or input_ids lines", 1, 0},
        {"rows", ARG_INT, &o.rows, "N", "examples to show (0: every line)", 0, 0},
        {"jsonl", ARG_BOOL, &o.jsonl, NULL, "one JSON object per example: {\"text\", \"input_ids\", \"labels\"} (labels -100 where masked, + \"segments\": [tokens, ...] when the chat template gave several)", 0, 0},
        {"color", ARG_STR, &o.color, "WHEN", "auto (when stdout is a terminal) | always | never: counted text in green instead of between [[ and ]]", 0, 0},
        {"chat-template", ARG_STR, &o.chat_template, "FILE", "a Jinja chat template (default: the model's own)", 0, 0},
        {"chat-template-kwargs", ARG_STR, &o.chat_kwargs, "JSON", "a JSON object of extra template variables, e.g. '{\"enable_thinking\": false}'", 0, 0},
        {"chat-format", ARG_STR, &o.chat_format, "NAME", "fallback layout for a model without a chat template: auto | llama3 | mistral | llama2 | chatml | qwen2", 0, 0},
        {"train-on-prompt", ARG_BOOL, &o.train_on_prompt, NULL, "count prompt tokens and non-assistant turns too", 0, 0},
        {"add-eos", ARG_BOOL, &o.add_eos, NULL, "append the EOS token to text and prompt/completion examples", 0, 0},
    };
    // clang-format on
    int ns = (int)(sizeof specs / sizeof specs[0]);
    const char *usage =
        "shardlora preview --model DIR --data FILE [--rows N] [--jsonl] [--chat-template F] "
        "[--chat-template-kwargs J] [--chat-format NAME] [--train-on-prompt]";
    const char *about =
        "Show the first examples of a JSONL file as train tokenises them, before packing: per "
        "example its line, format, token counts (total / counted in the loss) and the text, "
        "the counted parts between [[ and ]] (green on a terminal). Chat templates that render "
        "earlier turns differently later (Qwen3, Mistral v0.3) give several segments: one "
        "example whose positions restart at 0 at each.";
    int rc;
    if (!args_command(specs, ns, argc, argv, 2, "preview", usage, about, &rc)) return rc;
    ErrStatus st;
    err_status_ok(&st);
    int color = strcmp(o.color, "always") == 0 || (strcmp(o.color, "auto") == 0 && isatty(1));
    if (strcmp(o.color, "auto") && strcmp(o.color, "always") && strcmp(o.color, "never"))
        err_status_set(&st, "--color '%s': expected auto, always or never", o.color);
    if (st.ok && o.rows < 0) err_status_set(&st, "--rows must be >= 0");
    if (!st.ok) {
        fprintf(stderr, "shardlora preview: %s\n", st.msg);
        args_free(specs, ns);
        return EXIT_USAGE;
    }
    char *tkpath = str_join_path(o.model, "tokenizer.json");
    Tokenizer *tk = NULL;
    int status = EXIT_BAD_INPUT, ok = 1;
    if (access(tkpath, F_OK) == 0) ok = (tk = tok_load(tkpath, &st)) != NULL;
    free(tkpath);
    ChatTemplate chat;
    memset(&chat, 0, sizeof chat);
    if (ok) {
        ChatSetup cs = {o.model, o.chat_template, o.chat_kwargs, o.chat_format, tk};
        ok = chat_template_load(&chat, &cs, &status, &st);
    }
    if (!ok) {
        fprintf(stderr, "shardlora preview: %s\n", st.msg);
        rc = status;
    } else {
        int64_t vocab;
        int32_t eos = preview_eos(o.model, tk, &vocab);
        DsOptions ds = {&chat, o.train_on_prompt, o.add_eos && tk ? eos : -1, vocab};
        if (!o.jsonl) {
            char desc[4400];
            printf("chat template: %s\n\n", chat_template_describe(&chat, desc, sizeof desc));
        }
        rc = preview_lines(&o, tk, &ds, color);
    }
    chat_template_free(&chat);
    if (tk) tok_free(tk);
    args_free(specs, ns);
    return rc;
}
