/* Training examples from JSONL lines (see dataset.h): format detection, tokenisation and
 * the label masks of TRL's SFTTrainer (prompt tokens and non-assistant turns are -100). */
#include "dataset.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/str.h"

#define DS_IGNORE (-100) /* Hugging Face's ignore_index */

const char *ds_format_name(DsFormat f) {
    static const char *names[DS_NFORMATS] = {"text", "prompt/completion", "messages", "tokens"};
    return f >= 0 && f < DS_NFORMATS ? names[f] : "?";
}

void ds_example_free(DsExample *ex) {
    tok_ids_free(&ex->ids);
    tok_ids_free(&ex->scratch);
    free(ex->labels);
    free(ex->pos);
    free(ex->text);
    free(ex->seg_ntok);
    free(ex->offs);
    chat_render_free(&ex->render);
    memset(ex, 0, sizeof *ex);
}

/* ---- buffers (grow by doubling, never shrink) ---- */

/* The capacity for n elements: doubled from cap (first when 0) until it holds them. */
static size_t ds_grow_cap(size_t cap, size_t n, size_t first) {
    if (cap == 0) cap = first;
    while (cap < n)
        cap *= 2;
    return cap;
}

static void ds_reserve_labels(DsExample *ex, size_t n) {
    if (n <= ex->cap) return;
    ex->cap = ds_grow_cap(ex->cap, n, 256);
    ex->labels = str_xrealloc(ex->labels, ex->cap * sizeof *ex->labels);
    ex->pos = str_xrealloc(ex->pos, ex->cap * sizeof *ex->pos);
}

static void ds_reserve_text(DsExample *ex, size_t n) {
    if (n <= ex->text_cap) return;
    ex->text_cap = ds_grow_cap(ex->text_cap, n, 4096);
    ex->text = str_xrealloc(ex->text, ex->text_cap);
}

static void ds_set_text(DsExample *ex, const char *s, size_t n) {
    ds_reserve_text(ex, n + 1);
    memcpy(ex->text, s, n);
    ex->text[n] = '\0';
    ex->text_len = n;
}

static void ds_reserve_ids(TokIds *ids, size_t n) {
    if (n <= ids->cap) return;
    ids->cap = ds_grow_cap(ids->cap, n, 256);
    ids->ids = str_xrealloc(ids->ids, ids->cap * sizeof *ids->ids);
}

static void ds_push_id(TokIds *ids, int32_t id) {
    ds_reserve_ids(ids, ids->n + 1);
    ids->ids[ids->n++] = id;
}

/* A key with a JSON null value counts as absent: datasets exported from a table (HF
 * `datasets`, pandas) carry every column on every line, null where a line has none. */
static json_t *ds_get(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/* The first of the keys that carry text, or NULL. */
static const char *ds_text_key(json_t *obj) {
    static const char *const keys[] = {"messages", "prompt", "completion", "text"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (ds_get(obj, keys[i])) return keys[i];
    return NULL;
}

static const char *ds_json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* Labels of tokens [from, to) = their ids when counted, else -100. */
static void ds_label_range(DsExample *ex, size_t from, size_t to, int counted) {
    for (size_t i = from; i < to; i++)
        ex->labels[i] = counted ? ex->ids.ids[i] : DS_IGNORE;
}

/* Appends eos unless it is off or the ids already end with it (a post-processor or the
 * text itself put it there). Counted: predicting the end is what makes generation stop. */
static void ds_append_eos(DsExample *ex, const DsOptions *o) {
    if (o->eos_id < 0) return;
    if (ex->ids.n > 0 && ex->ids.ids[ex->ids.n - 1] == o->eos_id) return;
    ds_push_id(&ex->ids, o->eos_id);
    ds_reserve_labels(ex, ex->ids.n);
    ex->labels[ex->ids.n - 1] = o->eos_id;
}

static int ds_need_tokenizer(const Tokenizer *tk, const char *what, ErrStatus *st) {
    if (tk) return 1;
    return err_status_set(st, "a %s line needs the model's tokenizer.json, and none was loaded",
                          what);
}

/* ---- the four formats ---- */

static int ds_text(Tokenizer *tk, const DsOptions *o, json_t *text, DsExample *ex, ErrStatus *st) {
    if (!json_is_string(text)) return err_status_set(st, "\"text\" must be a string");
    if (json_string_length(text) == 0) return err_status_set(st, "\"text\" is empty");
    if (!ds_need_tokenizer(tk, "\"text\"", st)) return 0;
    if (!tok_encode(tk, json_string_value(text), json_string_length(text), 1, &ex->ids, st))
        return 0;
    ds_set_text(ex, json_string_value(text), json_string_length(text));
    ds_reserve_labels(ex, ex->ids.n);
    ds_label_range(ex, 0, ex->ids.n, 1);
    ds_append_eos(ex, o);
    return 1;
}

/* TRL: the ids are those of prompt + completion (so they equal what the model sees at
 * inference on the joined string), and the prompt mask covers the post-processor's
 * leading tokens plus as many tokens as the prompt alone encodes to. */
static int ds_prompt_completion(Tokenizer *tk, const DsOptions *o, json_t *prompt,
                                json_t *completion, DsExample *ex, ErrStatus *st) {
    if (!prompt) return err_status_set(st, "\"completion\" without \"prompt\"");
    if (!completion) return err_status_set(st, "\"prompt\" without \"completion\"");
    if (!json_is_string(prompt)) return err_status_set(st, "\"prompt\" must be a string");
    if (!json_is_string(completion)) return err_status_set(st, "\"completion\" must be a string");
    size_t np = json_string_length(prompt), nc = json_string_length(completion);
    if (nc == 0 && !o->train_on_prompt)
        return err_status_set(st, "\"completion\" is empty: nothing to train on but the prompt "
                                  "(--train-on-prompt counts prompts too)");
    if (np + nc == 0) return err_status_set(st, "\"prompt\" and \"completion\" are empty");
    if (!ds_need_tokenizer(tk, "\"prompt\"/\"completion\"", st)) return 0;
    ds_reserve_text(ex, np + nc + 1);
    memcpy(ex->text, json_string_value(prompt), np);
    memcpy(ex->text + np, json_string_value(completion), nc);
    ex->text[np + nc] = '\0';
    ex->text_len = np + nc;
    if (!tok_encode(tk, ex->text, np + nc, 1, &ex->ids, st)) return 0;
    ex->scratch.n = 0;
    if (!tok_encode(tk, ex->text, np, 0, &ex->scratch, st)) return 0;
    size_t before, after;
    tok_post_counts(tk, &before, &after);
    size_t n = ex->ids.n, nprompt = before + ex->scratch.n;
    if (nprompt > n) nprompt = n;
    ds_reserve_labels(ex, n);
    ds_label_range(ex, 0, nprompt, o->train_on_prompt);
    ds_label_range(ex, nprompt, n, 1);
    ds_append_eos(ex, o);
    return 1;
}

static void ds_push_segment(DsExample *ex, size_t ntok) {
    if (ex->nseg == ex->seg_cap) {
        ex->seg_cap = ex->seg_cap ? 2 * ex->seg_cap : 4;
        ex->seg_ntok = str_xrealloc(ex->seg_ntok, ex->seg_cap * sizeof *ex->seg_ntok);
    }
    ex->seg_ntok[ex->nseg++] = ntok;
}

/* The byte ranges of tokens ids[0..n) in text[0..len): offs[j] .. offs[j + 1]. 1 when each
 * token's bytes (decoded alone, special tokens kept) line up with the text: exactly, as for
 * byte-level BPE, or up to spaces, as for SentencePiece-style tokenizers whose normaliser
 * adds a "▁" at the start of each piece of text (a space in the token the text does not
 * have) and whose decoder drops a token's leading space when it is decoded alone (a space
 * in the text the token does not show: it belongs to that token, as its "▁" does in
 * Hugging Face's offsets). 0 otherwise (byte-fallback pieces of a character, other
 * normalisers): the caller falls back to token counts of prefixes. */
static int ds_token_offsets(Tokenizer *tk, const char *text, size_t len, const int32_t *ids,
                            size_t n, DsExample *ex) {
    if (n + 1 > ex->offs_cap) {
        ex->offs_cap = ds_grow_cap(ex->offs_cap, n + 1, 256);
        ex->offs = str_xrealloc(ex->offs, ex->offs_cap * sizeof *ex->offs);
    }
    size_t at = 0;
    ex->offs[0] = 0;
    for (size_t j = 0; j < n; j++) {
        size_t l;
        char *piece = tok_decode(tk, &ids[j], 1, 0, &l);
        size_t i = 0;
        while (i < l) {
            if (at < len && text[at] == piece[i]) {
                at++;
                i++;
            } else if (piece[i] == ' ') {
                i++; /* a space the normaliser added */
            } else if (at < len && text[at] == ' ') {
                at++; /* a space the decoder dropped */
            } else {
                break;
            }
        }
        free(piece);
        if (i < l) return 0;
        if (l == 0 && at < len && text[at] == ' ') at++; /* a lone "▁", decoded as nothing */
        ex->offs[j + 1] = at;
    }
    return at == len;
}

/* Tokens of encode(text[0..end)) (no special tokens), or -1 with st set. */
static int64_t ds_prefix_tokens(Tokenizer *tk, const char *text, size_t end, DsExample *ex,
                                ErrStatus *st) {
    ex->scratch.n = 0;
    if (!tok_encode(tk, text, end, 0, &ex->scratch, st)) return -1;
    return (int64_t)ex->scratch.n;
}

/* Labels of the segment text[a..b) whose tokens are ex->ids [t0, t0 + nt): counted where a
 * token overlaps a counted span of r (see dataset.h for the exact and the fallback rule). */
static int ds_count_spans(Tokenizer *tk, const ChatRender *r, size_t a, size_t b, size_t t0,
                          size_t nt, DsExample *ex, ErrStatus *st) {
    const char *seg = r->text + a;
    int exact = ds_token_offsets(tk, seg, b - a, ex->ids.ids + t0, nt, ex);
    for (size_t k = 0; k < r->nspan; k++) {
        size_t s = r->span[k].start, e = r->span[k].end;
        if (e <= a || s >= b) continue;
        s = (s < a ? a : s) - a;
        e = (e > b ? b : e) - a;
        size_t from, to; /* tokens [from, to) of the segment */
        if (exact) {
            from = 0;
            while (from < nt && ex->offs[from + 1] <= s)
                from++;
            to = from;
            while (to < nt && ex->offs[to] < e)
                to++;
        } else {
            int64_t x = ds_prefix_tokens(tk, seg, s, ex, st);
            int64_t y = x < 0 ? -1 : ds_prefix_tokens(tk, seg, e, ex, st);
            if (y < 0) return 0;
            from = (size_t)x < nt ? (size_t)x : nt;
            to = (size_t)y < nt ? (size_t)y : nt;
        }
        for (size_t j = from; j < to; j++)
            ex->labels[t0 + j] = ex->ids.ids[t0 + j];
    }
    return 1;
}

/* Renders the conversation by the label rule (io/chat.h) and tokenises each segment whole
 * (no special tokens added: the template writes its own BOS); positions restart at 0 at
 * each segment, whose first label is -100 (nothing predicts it across the restart). */
static int ds_messages(Tokenizer *tk, const DsOptions *o, json_t *root, DsExample *ex,
                       ErrStatus *st) {
    ChatTemplate none;
    const ChatTemplate *ct = o->chat;
    if (!ct) {
        chat_template_init_format(&none, CHAT_NONE);
        ct = &none;
    }
    int ok = chat_render_line(ct, root, o->train_on_prompt, &ex->render, st);
    if (ct == &none) chat_template_free(&none);
    if (!ok || !ds_need_tokenizer(tk, "\"messages\"", st)) return 0;
    const ChatRender *r = &ex->render;
    ex->nseg = 0;
    for (size_t k = 0; k < r->nseg; k++) {
        size_t a = k ? r->seg_end[k - 1] : 0, b = r->seg_end[k], t0 = ex->ids.n;
        if (!tok_encode(tk, r->text + a, b - a, 0, &ex->ids, st)) return 0;
        size_t nt = ex->ids.n - t0;
        if (nt == 0) continue;
        ds_reserve_labels(ex, ex->ids.n);
        for (size_t j = 0; j < nt; j++)
            ex->pos[t0 + j] = (int32_t)j;
        ds_label_range(ex, t0, t0 + nt, o->train_on_prompt);
        if (!o->train_on_prompt && !ds_count_spans(tk, r, a, b, t0, nt, ex, st)) return 0;
        if (ex->nseg > 0) ex->labels[t0] = DS_IGNORE;
        ds_push_segment(ex, nt);
    }
    ex->has_pos = ex->nseg > 1;
    ds_set_text(ex, r->text, r->len);
    return 1;
}

/* Reads the integer array `key` of a pre-tokenised line, which must have n entries, into
 * dst[0..n). Each value must be in [lo, hi) or equal `extra`; `range` says so in errors. */
static int ds_int_array(json_t *arr, const char *key, int32_t *dst, size_t n, int64_t lo,
                        int64_t hi, int64_t extra, const char *range, ErrStatus *st) {
    if (!json_is_array(arr)) return err_status_set(st, "\"%s\" must be an array of integers", key);
    if (json_array_size(arr) != n)
        return err_status_set(st, "\"%s\" has %zu entries but \"input_ids\" has %zu", key,
                              json_array_size(arr), n);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v))
            return err_status_set(st, "\"%s\"[%zu] must be an integer, not %s", key, i,
                                  ds_json_kind(v));
        json_int_t x = json_integer_value(v);
        if (x != extra && (x < lo || x >= hi))
            return err_status_set(st, "\"%s\"[%zu] = %lld %s", key, i, (long long)x, range);
        dst[i] = (int32_t)x;
    }
    return 1;
}

static int ds_tokens(const DsOptions *o, json_t *obj, json_t *ids, DsExample *ex,
                     int *explicit_labels, ErrStatus *st) {
    if (!json_is_array(ids))
        return err_status_set(st, "\"input_ids\" must be an array of integers");
    size_t n = json_array_size(ids);
    if (n == 0) return err_status_set(st, "\"input_ids\" is empty");
    int64_t vocab = o->vocab > 0 && o->vocab < INT32_MAX ? o->vocab : INT32_MAX; /* int32 ids */
    char range[96];
    snprintf(range, sizeof range, "is outside the vocabulary [0, %lld)", (long long)vocab);
    ds_reserve_ids(&ex->ids, n);
    ex->ids.n = n;
    if (!ds_int_array(ids, "input_ids", ex->ids.ids, n, 0, vocab, 0, range, st)) return 0;
    ds_reserve_labels(ex, n);
    json_t *labels = ds_get(obj, "labels"), *pos = ds_get(obj, "position_ids");
    *explicit_labels = labels != NULL;
    if (labels) {
        snprintf(range, sizeof range, "is neither -100 nor in the vocabulary [0, %lld)",
                 (long long)vocab);
        if (!ds_int_array(labels, "labels", ex->labels, n, 0, vocab, DS_IGNORE, range, st))
            return 0;
    } else {
        ds_label_range(ex, 0, n, 1);
    }
    if (pos) {
        if (!ds_int_array(pos, "position_ids", ex->pos, n, 0, INT32_MAX, 0, "is outside [0, 2^31)",
                          st))
            return 0;
        ex->has_pos = 1;
    }
    return 1;
}

int ds_encode_line(Tokenizer *tk, const DsOptions *o, const char *line, size_t len, DsExample *ex,
                   ErrStatus *st) {
    err_status_ok(st);
    ex->ids.n = 0;
    ex->has_pos = 0;
    ex->counted = 0;
    ex->nseg = 0;
    ex->text_len = 0;
    json_error_t je;
    /* DECODE_ANY: a line that is a bare value gets "must be a JSON object" below;
     * ALLOW_NUL: "\u0000" is valid JSON (Python writes it) and lengths are kept;
     * REJECT_DUPLICATES: {"text": "a", "text": "b"} has no one meaning (Python keeps the last,
     * other readers the first). */
    json_t *root =
        json_loadb(line, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &je);
    if (!root) return err_status_set(st, "invalid JSON at column %d: %s", je.column, je.text);
    int ok = 0, explicit_labels = 0;
    if (!json_is_object(root)) {
        err_status_set(st, "a line must be a JSON object, not %s", ds_json_kind(root));
        goto done;
    }
    /* A line that has several of these keys is read by the first in this order, except that
     * ids beside a text are refused: either may be stale, and nothing says which is meant. */
    json_t *v;
    const char *text_key = ds_text_key(root);
    if (ds_get(root, "input_ids") && text_key) {
        err_status_set(st, "both \"input_ids\" and \"%s\": give the ids or the text, not both",
                       text_key);
        goto done;
    }
    if ((v = ds_get(root, "input_ids"))) {
        ex->format = DS_TOKENS;
        ok = ds_tokens(o, root, v, ex, &explicit_labels, st);
    } else if ((v = ds_get(root, "messages"))) {
        ex->format = DS_MESSAGES;
        ok = ds_messages(tk, o, root, ex, st);
    } else if (ds_get(root, "prompt") || ds_get(root, "completion")) {
        ex->format = DS_PROMPT_COMPLETION;
        ok =
            ds_prompt_completion(tk, o, ds_get(root, "prompt"), ds_get(root, "completion"), ex, st);
    } else if ((v = ds_get(root, "text"))) {
        ex->format = DS_TEXT;
        ok = ds_text(tk, o, v, ex, st);
    } else {
        err_status_set(st, "no \"text\", \"prompt\"/\"completion\", \"messages\" or "
                           "\"input_ids\" key");
    }
    if (!ok) goto done;
    /* Ids from the tokenizer (and the EOS appended) must fit the model as pre-tokenised ones
     * do: an id past the embedding would stop the run in the model with no line to blame. */
    if (ex->format != DS_TOKENS && o->vocab > 0) {
        for (size_t i = 0; i < ex->ids.n; i++) {
            if (ex->ids.ids[i] < o->vocab) continue;
            ok = err_status_set(st,
                                "token %zu has id %d, outside the model's vocabulary [0, %lld) "
                                "(vocab_size in config.json): %s",
                                i, ex->ids.ids[i], (long long)o->vocab,
                                ex->ids.ids[i] == o->eos_id
                                    ? "the EOS id (eos_token_id) is too big"
                                    : "tokenizer.json does not match the model");
            goto done;
        }
    }
    if (ex->format != DS_MESSAGES) {
        ex->nseg = 0;
        ds_push_segment(ex, ex->ids.n);
    }
    /* Under the Hugging Face shift, token 0 is never predicted. */
    for (size_t i = 1; i < ex->ids.n; i++)
        ex->counted += ex->labels[i] != DS_IGNORE;
    if (ex->counted == 0 && !explicit_labels)
        ok = err_status_set(st, "nothing to train on: every token is masked (prompt only?)");
done:
    json_decref(root);
    return ok;
}
