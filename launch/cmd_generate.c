/* `shardlora generate`: text generation with a frozen model and an optional PEFT adapter,
 * tensor-parallel and in pipeline stages, under mpirun at any tp x pp (dp = world / (tp x pp)
 * groups share the prompts).
 *
 * Each DP group takes a contiguous block of the prompts and decodes up to --batch-size of
 * them at once (continuous batching: a finished sequence's KV-cache slot takes the next
 * prompt at once). A forward carries the decode rows of every running sequence and, in the
 * rows left (--prefill-rows), the prompt chunks of newly started ones (model/llama.h). Next
 * tokens: greedy by a distributed argmax, sampling on TP rank 0 from gathered logits
 * (model/sample.h). With pipeline stages every stage runs its layers over the same rows and
 * passes the residual rows on (TP rank t sends its part to TP rank t of the next stage, which
 * all-gathers them); the last stage chooses the tokens and broadcasts them over the stages.
 * Every rank of a group sees the same tokens, so all take the same decisions (finish, next
 * prompt) without more messages. Results are kept by the group's first-stage TP rank 0
 * (the keeper: world rank 0 in group 0). Rank 0 prints the results in
 * prompt order: the text as it comes for a single prompt, else JSONL lines
 * {"prompt_index", "text", "ids", "finish_reason", ...} (stdout, or --out FILE). Progress and
 * configuration go to stderr, so stdout holds only the generated text. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../io/afile.h"
#include "../io/chat.h"
#include "../io/chatfmt.h"
#include "../io/safetensors.h"
#include "../io/tokenizer.h"
#include "../model/adapter_io.h"
#include "../model/llama.h"
#include "../model/sample.h"
#include "../parallel/grid.h"
#include "../runtime/log.h"
#include "../runtime/sizes.h"
#include "../runtime/str.h"
#include "../runtime/timer.h"
#include "../train/session.h"
#include "args.h"
#include "cmds.h"
#include "mpicmd.h"

#define GEN_LINE_MAX ((size_t)64 << 20)     /* bytes of one line of --prompts */
enum { GEN_TAG_X = 10, GEN_TAG_DUMP = 11 }; /* pp_comm: stage rows, --dump-logits rows */

static const char GEN_USAGE[] = "[mpirun -np N] shardlora generate --model DIR [--adapter DIR] "
                                "(--prompt TEXT | --prompts FILE) [options]";
static const char GEN_ABOUT[] =
    "Generate text with a frozen Llama/Mistral/Qwen2 model and an optional PEFT adapter, "
    "tensor-parallel with a KV cache sharded by heads, optionally in pipeline stages (--pp: "
    "each stage caches its own layers). One prompt: its text is printed as it "
    "comes; several: JSONL results in prompt order (stdout or --out). Progress goes to stderr.";

typedef struct {
    MpicmdRun run;
    const char *adapter, *prompt, *prompts, *out, *chat_format, *chat_template, *chat_kwargs;
    const char *dump_logits, *stream;
    ArgStrs stop;
    int64_t max_new, top_k, batch, prefill_rows, max_seq_len;
    double temperature, top_p, rep_penalty;
    uint64_t seed;
    int chat, ignore_eos, merge, no_kv_cache;
} GenOpts;

/* The ids of one prompt. */
typedef struct {
    int32_t *ids;
    int64_t n;
} GenPrompt;

/* A finished prompt, kept until rank 0 prints it in prompt order. */
typedef struct {
    char *json;    /* the JSONL line, without the newline */
    float *logits; /* [ngen, V] the raw logits of each step (--dump-logits) */
    int32_t *ids;  /* [ngen] for the dump */
    int64_t ngen;
    int done;
} GenResult;

/* A KV-cache slot: the sequence it decodes. */
typedef struct {
    int64_t prompt; /* global prompt index; -1: free */
    int32_t *ids;   /* [Tmax + 1] prompt, then generated ids */
    int64_t nprompt, nids;
    float *logits;  /* [max_new, V] on TP rank 0 with --dump-logits */
    size_t printed; /* streaming: bytes of text printed so far */
} GenSlot;

/* Rank 0's output: the JSONL lines (stdout unless streaming, or --out) and the dump.
 * --out goes to FILE.tmp, renamed over FILE only when the whole run succeeded, so a failed
 * run leaves FILE as it was. */
typedef struct {
    AFile *out; /* --out, or NULL */
    int out_ok; /* 0: a write to --out failed (out_st says why; the .tmp is gone) */
    ErrStatus out_st;
    int to_stdout;
    StWriter dump;
    const GenPrompt *prompts;
    char (*names)[3][48];
    int64_t next; /* the next prompt index to print */
} GenOutput;

/* Everything the generation loop of a DP group uses (made by gen_loop_init). */
typedef struct {
    const GenOpts *o;
    Grid *g;
    LlamaModel *m;
    LlamaInfer in;
    Tokenizer *tk;
    const KernOps *kops;
    KernCtx *kc;
    SampleCfg scfg;
    SampleCtx sctx;
    AdapterEnv env;
    GenPrompt *prompts;
    GenResult *results;       /* [nprompts] */
    int64_t nprompts, b0, b1; /* this group's block [b0, b1) */
    int64_t Tmax;
    int32_t *eos;
    int neos;
    size_t max_stop;  /* longest --stop string */
    int stream;       /* rank 0 prints the single prompt's text as it comes */
    GenSlot *slots;   /* [S] */
    LlamaSeg *segs;   /* [S] */
    int *seg_sel;     /* [S] 1: the segment's last row yields the next token */
    int32_t *row_ids; /* [R] */
    int32_t *tokens;  /* [S] */
    void *argmax_tmp;
    float *full, *recv; /* [S, V] where has_full: TP rank 0 of the last stage, and the keeper
                         * with --dump-logits */
    int has_full;
    GenOutput *w; /* world rank 0: where results go */
    int64_t rows_done, generated;
} GenLoop;

/* The rank of a DP group that keeps its results and sends them to rank 0: TP rank 0 of the
 * first stage (at pp = 1, TP rank 0). */
static int gen_keeper(const Grid *g) {
    return g->tp_rank == 0 && g->pp_rank == 0;
}

/* ---------------------------------------------------------------- prompts */

static void gen_ids_push(TokIds *t, int32_t id) {
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->ids = realloc(t->ids, t->cap * sizeof *t->ids);
        SL_CHECK(t->ids, "out of memory");
    }
    t->ids[t->n++] = id;
}

/* messages (+ tools, documents) rendered with the chat template and the generation prompt
 * (add_generation_prompt=True), tokenised as the template's text (its special tokens
 * written out, no post-processor BOS). */
static int gen_encode_chat(Tokenizer *tk, const ChatTemplate *ct, json_t *msgs, json_t *tools,
                           json_t *docs, TokIds *out, ErrStatus *st) {
    char *text;
    size_t len;
    if (!chat_render_prompt(ct, msgs, tools, docs, &text, &len, st)) return 0;
    int ok = tok_encode(tk, text, len, 0, out, st);
    free(text);
    return ok;
}

/* A text prompt: the model's tokenizer with special tokens (BOS) on, or with --chat as one
 * user message in the chat template. */
static int gen_encode_text(Tokenizer *tk, const ChatTemplate *ct, int chat, const char *text,
                           size_t len, TokIds *out, ErrStatus *st) {
    if (!tk) return err_status_set(st, "a text prompt needs the model's tokenizer.json");
    if (!chat) return tok_encode(tk, text, len, 1, out, st);
    json_t *msgs = json_pack("[{s:s, s:s#}]", "role", "user", "content", text, (int)len);
    SL_CHECK(msgs, "out of memory");
    int ok = gen_encode_chat(tk, ct, msgs, NULL, NULL, out, st);
    json_decref(msgs);
    return ok;
}

/* One JSONL line: {"input_ids": [...]}, {"messages": [...]} (+ "tools", "documents") or
 * {"prompt": "..."} (the first of these keys that is present and not null). */
static int gen_parse_line(Tokenizer *tk, const ChatTemplate *ct, int chat, int64_t V,
                          const char *line, size_t len, TokIds *out, int *used_chat,
                          ErrStatus *st) {
    json_error_t je;
    json_t *root = json_loadb(line, len, JSON_ALLOW_NUL, &je);
    if (!root) return err_status_set(st, "not valid JSON (column %d): %s", je.column, je.text);
    int ok = 1;
    json_t *ids = json_object_get(root, "input_ids"), *msgs = json_object_get(root, "messages"),
           *prompt = json_object_get(root, "prompt");
    if (!json_is_object(root)) {
        ok = err_status_set(st, "expected a JSON object");
    } else if (ids && !json_is_null(ids)) {
        if (!json_is_array(ids) || json_array_size(ids) == 0)
            ok = err_status_set(st, "\"input_ids\" must be a non-empty list of token ids");
        for (size_t i = 0; ok && i < json_array_size(ids); i++) {
            json_t *e = json_array_get(ids, i);
            json_int_t v = json_is_integer(e) ? json_integer_value(e) : -1;
            if (v < 0 || v >= V)
                ok = err_status_set(st, "\"input_ids\"[%zu] is not a token id in [0, %lld)", i,
                                    (long long)V);
            else
                gen_ids_push(out, (int32_t)v);
        }
    } else if (msgs && !json_is_null(msgs)) {
        if (!tk) ok = err_status_set(st, "\"messages\" need the model's tokenizer.json");
        if (ok)
            ok = gen_encode_chat(tk, ct, msgs, json_object_get(root, "tools"),
                                 json_object_get(root, "documents"), out, st);
        *used_chat = 1;
    } else if (json_is_string(prompt)) {
        ok = gen_encode_text(tk, ct, chat, json_string_value(prompt), json_string_length(prompt),
                             out, st);
        *used_chat |= chat;
    } else {
        ok = err_status_set(st, "expected \"prompt\" (a string), \"messages\" or \"input_ids\"");
    }
    json_decref(root);
    if (ok && out->n == 0) ok = err_status_set(st, "the prompt has no tokens");
    return ok;
}

/* Reads --prompt or every non-empty line of --prompts. Errors name FILE:LINE. */
static int gen_read_prompts(const GenOpts *o, Tokenizer *tk, const ChatTemplate *f, int64_t V,
                            GenPrompt **out, int64_t *nout, int *used_chat, ErrStatus *st) {
    int64_t n = 0, cap = 0;
    GenPrompt *p = NULL;
    TokIds ids = {0};
    int ok = 1;
    if (o->prompt) {
        ok = gen_encode_text(tk, f, o->chat, o->prompt, strlen(o->prompt), &ids, st);
        if (ok && ids.n == 0) ok = err_status_set(st, "--prompt: the prompt has no tokens");
        *used_chat = o->chat;
        if (ok) {
            p = malloc(sizeof *p);
            SL_CHECK(p, "out of memory");
            p[0] = (GenPrompt){ids.ids, (int64_t)ids.n};
            n = 1;
            memset(&ids, 0, sizeof ids);
        }
    } else {
        FILE *fp = afile_fopen_input(o->prompts, st);
        if (!fp) return 0;
        char *line = NULL;
        size_t lcap = 0;
        ssize_t len;
        long lineno = 0;
        int cut;
        while (ok && (len = str_getline(&line, &lcap, fp, GEN_LINE_MAX, &cut)) >= 0) {
            lineno++;
            if (cut) {
                ok = err_status_set(st,
                                    "%s:%ld: a line of %lld bytes, longer than the %zu MiB a "
                                    "prompt may have",
                                    o->prompts, lineno, (long long)len, GEN_LINE_MAX >> 20);
                break;
            }
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                line[--len] = 0;
            size_t k = 0;
            while (k < (size_t)len && (line[k] == ' ' || line[k] == '\t'))
                k++;
            if (k == (size_t)len) continue;
            ids.n = 0;
            ErrStatus e;
            if (!gen_parse_line(tk, f, o->chat, V, line, (size_t)len, &ids, used_chat, &e)) {
                ok = err_status_set(st, "%s:%ld: %s", o->prompts, lineno, e.msg);
                break;
            }
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                p = realloc(p, (size_t)cap * sizeof *p);
                SL_CHECK(p, "out of memory");
            }
            p[n].ids = malloc(ids.n * sizeof(int32_t));
            SL_CHECK(p[n].ids, "out of memory");
            memcpy(p[n].ids, ids.ids, ids.n * sizeof(int32_t));
            p[n].n = (int64_t)ids.n;
            n++;
        }
        free(line);
        fclose(fp);
        if (ok && n == 0)
            ok = err_status_set(st, "%s: no prompts (every line is empty)", o->prompts);
    }
    tok_ids_free(&ids);
    *out = p;
    *nout = n;
    return ok;
}

/* ---------------------------------------------------------------- end of sequence */

static void gen_eos_add(int32_t **eos, int *n, int64_t id) {
    if (id < 0) return;
    for (int i = 0; i < *n; i++)
        if ((*eos)[i] == id) return;
    *eos = realloc(*eos, (size_t)(*n + 1) * sizeof **eos);
    SL_CHECK(*eos, "out of memory");
    (*eos)[(*n)++] = (int32_t)id;
}

/* config.json and friends are kB; tokenizer_config.json may embed a large chat template */
#define GEN_MAX_JSON ((size_t)64 << 20)

/* "eos_token_id" of DIR/NAME: an id or a list of ids (config.json, generation_config.json). */
static void gen_eos_from_json(const char *dir, const char *name, int32_t **eos, int *n) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ErrStatus ignore; /* an optional file: absent or unreadable adds no ids */
    json_t *root = afile_read_json(path, GEN_MAX_JSON, JSON_DECODE_INT_AS_REAL, &ignore);
    if (!root) return;
    json_t *e = json_object_get(root, "eos_token_id");
    size_t k = json_is_array(e) ? json_array_size(e) : 1;
    for (size_t i = 0; i < k; i++) {
        json_t *x = json_is_array(e) ? json_array_get(e, i) : e;
        if (json_is_number(x)) gen_eos_add(eos, n, (int64_t)json_number_value(x));
    }
    json_decref(root);
}

/* The ids that end a sequence: config.json's and generation_config.json's eos_token_id
 * (one or a list, as HF generate reads them), tokenizer_config.json's eos_token, and the
 * end-of-turn token of the chat template when prompts were chat-formatted. */
static void gen_eos_ids(const char *dir, const LlamaModel *m, Tokenizer *tk, const ChatTemplate *ct,
                        int used_chat, int32_t **eos, int *n) {
    ChatFormat f = ct->tpl ? CHAT_NONE : ct->format; /* a template's end is its eos_token */
    gen_eos_add(eos, n, m->cfg.eos_token_id);
    gen_eos_from_json(dir, "config.json", eos, n);
    gen_eos_from_json(dir, "generation_config.json", eos, n);
    if (!tk) return;
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    ErrStatus ignore;
    json_t *root = afile_read_json(path, GEN_MAX_JSON, JSON_DECODE_INT_AS_REAL, &ignore);
    json_t *e = root ? json_object_get(root, "eos_token") : NULL;
    if (json_is_object(e)) e = json_object_get(e, "content");
    if (json_is_string(e)) gen_eos_add(eos, n, tok_token_id(tk, json_string_value(e)));
    json_decref(root);
    if (used_chat && f == CHAT_LLAMA3) gen_eos_add(eos, n, tok_token_id(tk, "<|eot_id|>"));
    if (used_chat && (f == CHAT_CHATML || f == CHAT_QWEN2))
        gen_eos_add(eos, n, tok_token_id(tk, "<|im_end|>"));
}

/* ---------------------------------------------------------------- results */

/* The text of a slot's generated ids (special tokens skipped; without a final EOS).
 * malloc'd. */
static char *gen_text(GenLoop *r, const GenSlot *s, int drop_last, size_t *len) {
    if (!r->tk) {
        *len = 0;
        return calloc(1, 1);
    }
    const int64_t ngen = s->nids - s->nprompt - (drop_last ? 1 : 0);
    return tok_decode(r->tk, s->ids + s->nprompt, (size_t)(ngen > 0 ? ngen : 0), 1, len);
}

/* Earliest end of text at a --stop string (its start), or -1. */
static int64_t gen_find_stop(const GenOpts *o, const char *text, size_t len) {
    int64_t best = -1;
    for (int i = 0; i < o->stop.n; i++) {
        const char *hit = memmem(text, len, o->stop.v[i], strlen(o->stop.v[i]));
        if (hit && (best < 0 || hit - text < best)) best = hit - text;
    }
    return best;
}

/* Streaming: prints the part of text that can no longer change: not the last max_stop - 1
 * bytes (they may start a stop string) nor a trailing U+FFFD (a character whose bytes are
 * still coming), unless final. */
static void gen_stream(GenLoop *r, GenSlot *s, const char *text, size_t len, int final) {
    size_t safe = len;
    if (!final) {
        safe = r->max_stop > 1 ? (len > r->max_stop - 1 ? len - (r->max_stop - 1) : 0) : len;
        if (safe >= 3 && safe == len && memcmp(text + safe - 3, "\xEF\xBF\xBD", 3) == 0) safe -= 3;
    }
    if (safe > s->printed) {
        fwrite(text + s->printed, 1, safe - s->printed, stdout);
        s->printed = safe;
    }
    if (final) fputc('\n', stdout);
    fflush(stdout);
}

/* The JSONL line of a finished slot. */
static char *gen_result_json(const GenSlot *s, const char *text, size_t len, const char *reason) {
    json_t *j = json_object(), *ids = json_array();
    for (int64_t i = s->nprompt; i < s->nids; i++)
        json_array_append_new(ids, json_integer(s->ids[i]));
    json_object_set_new(j, "prompt_index", json_integer((json_int_t)s->prompt));
    json_object_set_new(j, "text", json_stringn(text, len));
    json_object_set_new(j, "ids", ids);
    json_object_set_new(j, "finish_reason", json_string(reason));
    json_object_set_new(j, "prompt_tokens", json_integer((json_int_t)s->nprompt));
    json_object_set_new(j, "generated_tokens", json_integer((json_int_t)(s->nids - s->nprompt)));
    char *out = json_dumps(j, JSON_PRESERVE_ORDER);
    json_decref(j);
    return out;
}

static void gen_emit(GenOutput *w, GenResult *res, int64_t i, int64_t V);

/* Decides whether slot s ends after its newest token; on the end, records its result (TP
 * rank 0) and frees the slot. Every TP rank reaches the same verdict from the same ids. */
static int gen_after_token(GenLoop *r, GenSlot *s) {
    const GenOpts *o = r->o;
    const int32_t tok = s->ids[s->nids - 1];
    const int64_t ngen = s->nids - s->nprompt;
    const char *reason = NULL;
    int is_eos = 0;
    for (int i = 0; !o->ignore_eos && i < r->neos; i++)
        is_eos |= tok == r->eos[i];
    if (is_eos) reason = "eos";
    size_t len = 0;
    char *text = NULL;
    if (!reason && o->stop.n > 0) {
        text = gen_text(r, s, 0, &len);
        int64_t at = gen_find_stop(o, text, len);
        if (at >= 0) {
            reason = "stop";
            len = (size_t)at;
        }
    }
    /* the next token would need position nids - 1 in the cache */
    if (!reason && (ngen >= o->max_new || s->nids > r->Tmax)) reason = "length";
    const int keep = gen_keeper(r->g);
    if (!reason) {
        if (r->stream) {
            if (!text) text = gen_text(r, s, 0, &len);
            gen_stream(r, s, text, len, 0);
        }
        free(text);
        return 0;
    }
    if (keep) {
        if (!text || is_eos) {
            free(text);
            text = gen_text(r, s, is_eos, &len);
        }
        if (r->stream) gen_stream(r, s, text, len, 1);
        GenResult *res = &r->results[s->prompt];
        res->json = gen_result_json(s, text, len, reason);
        SL_CHECK(res->json, "cannot encode the result of prompt %lld as JSON",
                 (long long)s->prompt);
        res->ngen = ngen;
        if (o->dump_logits) {
            res->logits = s->logits;
            s->logits = NULL;
            res->ids = malloc((size_t)ngen * sizeof(int32_t));
            SL_CHECK(res->ids, "out of memory");
            memcpy(res->ids, s->ids + s->nprompt, (size_t)ngen * sizeof(int32_t));
        }
        res->done = 1;
        /* rank 0 prints its own results as soon as those before them are done */
        while (r->w && r->w->next < r->b1 && r->results[r->w->next].done) {
            gen_emit(r->w, &r->results[r->w->next], r->w->next, r->m->V);
            r->w->next++;
        }
    }
    free(text);
    s->prompt = -1;
    return 1;
}

/* ---------------------------------------------------------------- the loop */

/* --dump-logits: the raw rows [nsel, V] gathered on the last stage's TP rank 0 are copied
 * into the keeper's slots (at pp > 1 sent over pp_comm first; the keeper receives them
 * before the tokens' broadcast, so the two never wait on each other). */
static void gen_dump_rows(GenLoop *r, const int *sel_slot, int nsel) {
    Grid *g = r->g;
    const int64_t V = r->m->V;
    const size_t bytes = (size_t)(nsel * V) * sizeof(float);
    if (g->pp > 1 && r->m->last)
        grid_send(g, g->pp_comm, r->full, bytes, 0, GEN_TAG_DUMP, GRID_BYTES_OTHER);
    if (!gen_keeper(g)) return;
    if (g->pp > 1) grid_recv(g, g->pp_comm, r->full, bytes, g->pp - 1, GEN_TAG_DUMP);
    for (int i = 0; i < nsel; i++) {
        GenSlot *s = &r->slots[sel_slot[i]];
        memcpy(s->logits + (s->nids - s->nprompt) * V, r->full + i * V, (size_t)V * sizeof(float));
    }
}

/* On the last stage: chooses the next token of each selected segment (logits rows
 * [nsel, Vl] in r->in.logits): greedy by a distributed argmax after the repetition penalty
 * on each rank's columns; sampling on TP rank 0 from the gathered rows, then broadcast. Raw
 * logits are gathered for --dump-logits (kept by the keeper; at pp > 1 gen_choose sends
 * them there). Every TP rank of the stage ends with the same r->tokens. */
static void gen_choose_last(GenLoop *r, const int *sel_slot, int nsel) {
    LlamaModel *m = r->m;
    Grid *g = r->g;
    const GenOpts *o = r->o;
    float *lg = r->in.logits; /* [nsel, Vl] */
    const int greedy = o->temperature == 0;
    const int tp0 = g->tp_rank == 0;
    if (o->dump_logits || !greedy) {
        sample_gather_rows(&r->sctx, g, lg, nsel, r->full, r->recv);
        if (tp0 && o->dump_logits) gen_dump_rows(r, sel_slot, nsel); /* before any penalty */
    }
    if (greedy) {
        for (int i = 0; o->rep_penalty != 1.0 && i < nsel; i++) {
            const GenSlot *s = &r->slots[sel_slot[i]];
            sample_repetition_penalty(lg + i * m->Vl, m->V0, m->Vl, s->ids, s->nids,
                                      (float)o->rep_penalty, r->sctx.mark);
        }
        sample_argmax_tp(g, lg, nsel, m->Vl, m->V0, r->tokens, r->argmax_tmp);
        return;
    }
    if (tp0)
        for (int i = 0; i < nsel; i++) {
            const GenSlot *s = &r->slots[sel_slot[i]];
            float *row = r->full + i * m->V;
            if (o->rep_penalty != 1.0)
                sample_repetition_penalty(row, 0, m->V, s->ids, s->nids, (float)o->rep_penalty,
                                          r->sctx.mark);
            r->tokens[i] = sample_token(&r->sctx, &r->scfg, row, (uint64_t)s->prompt,
                                        (uint64_t)(s->nids - s->nprompt));
        }
    grid_bcast(g, g->tp_comm, r->tokens, (size_t)nsel * sizeof(int32_t), 0, GRID_BYTES_OTHER);
}

/* The next tokens of the selected segments on every rank of the group: chosen on the last
 * stage, broadcast over the stages (TP rank t of the last stage to TP rank t of the others). */
static void gen_choose(GenLoop *r, const int *sel_slot, int nsel) {
    Grid *g = r->g;
    if (r->m->last) gen_choose_last(r, sel_slot, nsel);
    if (g->pp == 1) return;
    if (r->o->dump_logits && gen_keeper(g)) gen_dump_rows(r, sel_slot, nsel);
    grid_bcast(g, g->pp_comm, r->tokens, (size_t)nsel * sizeof(int32_t), g->pp - 1,
               GRID_BYTES_OTHER);
}

/* One forward of the rows [rows] of nseg segments through this rank's stage: a stage after
 * the first receives the residual rows [rows, C] entering its layers (its TP part from the
 * same TP rank of the previous stage, all-gathered over TP); a stage before the last sends
 * its output rows on the same way (train/pipe.c's split). At pp = 1: llama_infer_forward. */
static void gen_forward(GenLoop *r, int nseg, int64_t rows) {
    LlamaModel *m = r->m;
    Grid *g = r->g;
    const size_t n = (size_t)(rows * m->C);
    size_t off, len;
    grid_part(n, g->tp, g->tp_rank, &off, &len);
    if (!m->first) {
        grid_recv(g, g->pp_comm, r->in.x + off, len * sizeof(float), g->pp_rank - 1, GEN_TAG_X);
        grid_allgather_f32(g, g->tp_comm, r->in.x, n, GRID_BYTES_TP);
    }
    llama_infer_forward(m, &r->in, r->segs, nseg, r->row_ids, &r->env, r->kops, r->kc, g);
    if (!m->last)
        grid_send(g, g->pp_comm, r->in.x + off, len * sizeof(float), g->pp_rank + 1, GEN_TAG_X,
                  GRID_BYTES_PP);
}

/* Decodes the group's prompts [b0, b1). Returns 0 and sets st when the logits of a step
 * have no finite value (every TP rank of the group agrees). */
static int gen_loop(GenLoop *r, ErrStatus *st) {
    const GenOpts *o = r->o;
    LlamaModel *m = r->m;
    const int64_t S = r->in.S, R = r->in.R;
    int64_t next = r->b0, active = 0;
    int *sel_slot = malloc((size_t)S * sizeof(int));
    SL_CHECK(sel_slot, "out of memory");
    int ok = 1;
    while (ok && (next < r->b1 || active > 0)) {
        for (int64_t s = 0; s < S && next < r->b1; s++) {
            GenSlot *sl = &r->slots[s];
            if (sl->prompt >= 0) continue;
            const GenPrompt *p = &r->prompts[next];
            sl->prompt = next++;
            memcpy(sl->ids, p->ids, (size_t)p->n * sizeof(int32_t));
            sl->nprompt = sl->nids = p->n;
            sl->printed = 0;
            if (o->dump_logits && gen_keeper(r->g)) {
                sl->logits = malloc((size_t)(o->max_new * m->V) * sizeof(float));
                SL_CHECK(sl->logits, "out of memory");
            }
            r->in.cache.len[s] = 0;
            active++;
        }
        /* decode rows first (one per running sequence), then prompt chunks in the rows left;
         * --no-kv-cache recomputes every sequence from position 0 */
        int nseg = 0;
        int64_t rows = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int64_t s = 0; s < S; s++) {
                GenSlot *sl = &r->slots[s];
                if (sl->prompt < 0) continue;
                if (o->no_kv_cache) r->in.cache.len[s] = 0;
                const int64_t len = r->in.cache.len[s], want = sl->nids - len;
                if ((pass == 0) != (want == 1)) continue;
                const int64_t take = want < R - rows ? want : R - rows;
                if (take <= 0) continue;
                memcpy(r->row_ids + rows, sl->ids + len, (size_t)take * sizeof(int32_t));
                r->segs[nseg] = (LlamaSeg){(int32_t)s, len, take};
                r->seg_sel[nseg] = len + take == sl->nids;
                nseg++;
                rows += take;
            }
        SL_CHECK(nseg > 0, "no work for %lld running sequences", (long long)active);
        gen_forward(r, nseg, rows);
        r->rows_done += rows;
        /* the rows whose next token is due, packed to the front of the logits (last stage) */
        int nsel = 0;
        for (int i = 0; i < nseg; i++) {
            if (!r->seg_sel[i]) continue;
            if (nsel != i && m->last)
                memmove(r->in.logits + nsel * m->Vl, r->in.logits + i * m->Vl,
                        (size_t)m->Vl * sizeof(float));
            sel_slot[nsel++] = r->segs[i].slot;
        }
        if (nsel == 0) continue;
        gen_choose(r, sel_slot, nsel);
        for (int i = 0; i < nsel; i++) {
            GenSlot *sl = &r->slots[sel_slot[i]];
            if (r->tokens[i] < 0) {
                ok = err_status_set(
                    st, "prompt %lld, step %lld: no finite logit (the model produced NaN or inf)",
                    (long long)sl->prompt, (long long)(sl->nids - sl->nprompt));
                break;
            }
            sl->ids[sl->nids++] = r->tokens[i];
            r->generated++;
            if (gen_after_token(r, sl)) active--;
        }
    }
    free(sel_slot);
    return ok;
}

/* ---------------------------------------------------------------- output */

static void gen_emit(GenOutput *w, GenResult *res, int64_t i, int64_t V) {
    if (w->out && w->out_ok) {
        const size_t len = strlen(res->json);
        res->json[len] = '\n'; /* the line with its newline in one write */
        w->out_ok = afile_write(w->out, res->json, len + 1, &w->out_st);
        res->json[len] = 0;
    }
    if (w->to_stdout) printf("%s\n", res->json);
    if (w->to_stdout) fflush(stdout);
    if (res->logits) {
        int64_t shape[2] = {res->ngen, V};
        snprintf(w->names[i][0], sizeof w->names[i][0], "logits.%lld", (long long)i);
        snprintf(w->names[i][1], sizeof w->names[i][1], "ids.%lld", (long long)i);
        snprintf(w->names[i][2], sizeof w->names[i][2], "prompt.%lld", (long long)i);
        st_writer_add(&w->dump, w->names[i][0], ST_F32, 2, shape, res->logits);
        st_writer_add(&w->dump, w->names[i][1], ST_I32, 1, &res->ngen, res->ids);
        st_writer_add(&w->dump, w->names[i][2], ST_I32, 1, &w->prompts[i].n, w->prompts[i].ids);
    }
    free(res->json);
    res->json = NULL;
}

/* Results of the other DP groups come to rank 0 in prompt order, each from its group's
 * keeper: a header {json bytes, logits floats}, the JSON, the logits. */
static void gen_collect(GenLoop *r, GenOutput *w) {
    Grid *g = r->g;
    const int64_t n = r->nprompts, per = (n + g->dp - 1) / g->dp;
    if (g->world_rank == 0) {
        for (; w->next < n; w->next++) {
            GenResult *res = &r->results[w->next];
            if (!res->done) {
                const int src = (int)(w->next / per) * g->tp * g->pp; /* its keeper */
                int64_t hdr[3];
                grid_recv(g, g->world, hdr, sizeof hdr, src, 1);
                res->json = malloc((size_t)hdr[0] + 1);
                SL_CHECK(res->json, "out of memory");
                grid_recv(g, g->world, res->json, (size_t)hdr[0], src, 2);
                res->json[hdr[0]] = 0;
                res->ngen = hdr[2];
                if (hdr[1] > 0) {
                    res->logits = malloc((size_t)hdr[1] * sizeof(float));
                    res->ids = malloc((size_t)hdr[2] * sizeof(int32_t));
                    SL_CHECK(res->logits && res->ids, "out of memory");
                    grid_recv(g, g->world, res->logits, (size_t)hdr[1] * sizeof(float), src, 3);
                    grid_recv(g, g->world, res->ids, (size_t)hdr[2] * sizeof(int32_t), src, 4);
                }
                res->done = 1;
            }
            gen_emit(w, res, w->next, r->m->V);
        }
    } else if (gen_keeper(g)) {
        for (int64_t i = r->b0; i < r->b1; i++) {
            GenResult *res = &r->results[i];
            const int64_t nl = res->logits ? res->ngen * r->m->V : 0;
            int64_t hdr[3] = {(int64_t)strlen(res->json), nl, res->ngen};
            /* grid_send's messages are bounded in bytes (MPI's int count) */
            SL_CHECK(hdr[0] < INT32_MAX && nl < INT32_MAX / (int64_t)sizeof(float),
                     "result %lld too large to send", (long long)i);
            grid_send(g, g->world, hdr, sizeof hdr, 0, 1, GRID_BYTES_OTHER);
            grid_send(g, g->world, res->json, (size_t)hdr[0], 0, 2, GRID_BYTES_OTHER);
            if (nl > 0) {
                grid_send(g, g->world, res->logits, (size_t)nl * sizeof(float), 0, 3,
                          GRID_BYTES_OTHER);
                grid_send(g, g->world, res->ids, (size_t)res->ngen * sizeof(int32_t), 0, 4,
                          GRID_BYTES_OTHER);
            }
        }
    }
}

/* ---------------------------------------------------------------- the command */

/* Everything one run of the command holds, released by gen_free on every path. */
typedef struct {
    GenOpts o;
    ArgSpec specs[64];
    int nspecs;
    Grid g;
    Session s; /* memory, model (+ adapter slots), GEMM and kernel contexts */
    MpicmdEnv env;
    Tokenizer *tk; /* NULL without tokenizer.json (pre-tokenised prompts only) */
    ChatTemplate chat;
    GenPrompt *prompts; /* [nprompts] */
    int64_t nprompts;
    int used_chat; /* some prompt went through the chat template */
    int32_t *eos;  /* [neos] */
    int neos;
    AdioCfg acfg;
    int merged;           /* > 0: the adapter was merged into the shards */
    int64_t per, b0, b1;  /* prompts per DP group; this group's block [b0, b1) */
    int64_t maxlen, Tmax; /* longest prompt; positions per sequence */
    int64_t S, R;         /* sequences decoded at once; rows per forward */
    AFile outfile;
    AFile *outf; /* world rank 0 with --out until committed or aborted */
    GenLoop l;
    GenOutput w;
    double secs; /* this rank's time in the loop */
    int have_session, have_acfg, have_loop, have_output;
} GenRun;

static const char gen_err[] = "shardlora generate: error";

static void gen_options(GenRun *r) {
    memset(r, 0, sizeof *r);
    GenOpts *o = &r->o;
    *o = (GenOpts){.chat_format = "auto",
                   .stream = "auto",
                   .max_new = 128,
                   .top_p = 1.0,
                   .rep_penalty = 1.0,
                   .batch = 8,
                   .prefill_rows = 512,
                   .seed = 42};
    mpicmd_run_defaults(&o->run);
    /* one option per line: name, type, destination, metavar, help, required, seen */
    // clang-format off
    const ArgSpec specs[] = {
        {.type = ARG_GROUP, .group = ARGG_MODEL},
        {"adapter", ARG_STR, &o->adapter, "DIR", "PEFT adapter directory (LoRA, DoRA or VeRA: adapter_config.json, adapter_model.safetensors), applied unmerged", 0, 0},
        {"merge-in-memory", ARG_BOOL, &o->merge, NULL, "merge the adapter into this rank's shards once (W += its delta, e.g. s B A for LoRA), then run without adapter cost", 0, 0},
        {"out", ARG_STR, &o->out, "FILE", "write the results as JSONL {\"prompt_index\", \"text\", \"ids\", \"finish_reason\", ...} in prompt order", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_DATA},
        {"prompt", ARG_STR, &o->prompt, "TEXT", "one prompt, tokenised with the model's tokenizer (BOS per its post-processor)", 0, 0},
        {"prompts", ARG_STR, &o->prompts, "FILE", "JSONL prompts, per line {\"prompt\": S}, {\"messages\": [{\"role\",\"content\"}]} (chat template + generation prompt) or {\"input_ids\": [...]}", 0, 0},
        {"chat", ARG_BOOL, &o->chat, NULL, "format text prompts as one user message with the chat template", 0, 0},
        {"chat-template", ARG_STR, &o->chat_template, "FILE", "a Jinja chat template for \"messages\" and --chat (default: the model's own: MODEL/chat_template.jinja, else tokenizer_config.json's \"chat_template\")", 0, 0},
        {"chat-template-kwargs", ARG_STR, &o->chat_kwargs, "JSON", "a JSON object of extra template variables, e.g. '{\"enable_thinking\": false}'", 0, 0},
        {"chat-format", ARG_STR, &o->chat_format, "NAME", "fallback layout for a model without a chat template: auto (the model's template) | llama3 | mistral | llama2 | chatml | qwen2", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_GENERATION},
        {"max-new-tokens", ARG_INT, &o->max_new, "N", "tokens to generate at most per prompt", 0, 0},
        {"temperature", ARG_FLOAT, &o->temperature, "X", "0: greedy (argmax); > 0: sample from softmax(logits / X)", 0, 0},
        {"top-k", ARG_INT, &o->top_k, "K", "sample among the K most likely tokens (0: off)", 0, 0},
        {"top-p", ARG_FLOAT, &o->top_p, "P", "nucleus sampling: the smallest set of most likely tokens with probability >= P (1: off)", 0, 0},
        {"repetition-penalty", ARG_FLOAT, &o->rep_penalty, "X", "divide positive / multiply negative logits of tokens already in the prompt or output by X (1: off; HF's)", 0, 0},
        {"seed", ARG_U64, &o->seed, "N", "seed of the draws (Philox keyed by seed, prompt index, step: the same at any layout)", 0, 0},
        {"stop", ARG_STRS, &o->stop, "STRING", "end a sequence when its text contains STRING (repeatable; the text is cut before it)", 0, 0},
        {"ignore-eos", ARG_BOOL, &o->ignore_eos, NULL, "do not stop at the EOS / end-of-turn tokens", 0, 0},
        {"stream", ARG_STR, &o->stream, "WHEN", "auto (print the text as it comes when there is one prompt) | off", 0, 0},
        {"batch-size", ARG_INT, &o->batch, "N", "sequences decoded together per data-parallel group (KV-cache slots)", 0, 0},
        {"prefill-rows", ARG_INT, &o->prefill_rows, "N", "tokens per forward at most (prompt chunks plus one decode row per sequence)", 0, 0},
        {"max-seq-len", ARG_INT, &o->max_seq_len, "N", "positions of the KV cache per sequence (0: the longest prompt + --max-new-tokens)", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_EXPERT},
        {"no-kv-cache", ARG_BOOL, &o->no_kv_cache, NULL, "recompute the whole sequence at every step (tests: must give the cached logits)", 0, 0},
        {"dump-logits", ARG_STR, &o->dump_logits, "FILE", "write every step's raw logits (safetensors: logits.I [steps, V], ids.I, prompt.I) (tests)", 0, 0},
    };
    // clang-format on
    const MpicmdHelp help = {
        NULL, NULL,
        "tensor-parallel size (world = dp x pp x tp; the prompts are divided among the dp "
        "groups)"};
    r->nspecs = mpicmd_table(r->specs, (int)(sizeof r->specs / sizeof r->specs[0]), &o->run, NULL,
                             &help, specs, (int)(sizeof specs / sizeof specs[0]));
}

static int gen_check_opts(void *ctx, ErrStatus *st) {
    GenRun *r = ctx;
    const GenOpts *o = &r->o;
    int ok = 1;
    if (!o->prompt == !o->prompts)
        ok = err_status_set(st, "give exactly one of --prompt TEXT and --prompts FILE");
    if (ok && strcmp(o->chat_format, "auto") && chatfmt_parse(o->chat_format) < 0)
        ok = err_status_set(
            st, "--chat-format '%s': expected auto, llama3, mistral, llama2, chatml or qwen2",
            o->chat_format);
    json_t *kw = ok && o->chat_kwargs ? chat_parse_kwargs(o->chat_kwargs, st) : NULL;
    if (ok && o->chat_kwargs && !kw) ok = 0;
    json_decref(kw);
    if (ok && strcmp(o->stream, "auto") && strcmp(o->stream, "off"))
        ok = err_status_set(st, "--stream '%s': expected auto or off", o->stream);
    if (ok && o->merge && !o->adapter) ok = err_status_set(st, "--merge-in-memory needs --adapter");
    if (ok && !(o->temperature >= 0 && isfinite(o->temperature)))
        ok = err_status_set(st, "--temperature must be >= 0");
    if (ok && !(o->top_p > 0 && o->top_p <= 1))
        ok = err_status_set(st, "--top-p must be in (0, 1]");
    if (ok && !(o->rep_penalty > 0 && isfinite(o->rep_penalty)))
        ok = err_status_set(st, "--repetition-penalty must be > 0");
    if (ok && (o->top_k < 0 || o->max_seq_len < 0))
        ok = err_status_set(st, "--top-k and --max-seq-len must be >= 0");
    if (ok && (o->max_new < 1 || o->batch < 1 || o->prefill_rows < 1))
        ok = err_status_set(st, "--max-new-tokens, --batch-size and --prefill-rows must be >= 1");
    ok = ok && mpicmd_bound("max-new-tokens", o->max_new, 1, MPICMD_MAX_SEQ_LEN, st) &&
         mpicmd_bound("max-seq-len", o->max_seq_len, 0, MPICMD_MAX_SEQ_LEN, st) &&
         mpicmd_bound("batch-size", o->batch, 1, MPICMD_MAX_BATCH, st) &&
         mpicmd_bound("prefill-rows", o->prefill_rows, 1, MPICMD_MAX_SEQ_LEN, st) &&
         mpicmd_bound("top-k", o->top_k, 0, INT32_MAX, st);
    for (int i = 0; ok && i < o->stop.n; i++)
        if (!o->stop.v[i][0]) ok = err_status_set(st, "--stop: an empty string would stop at once");
    return ok;
}

/* The model, the tokenizer (optional with pre-tokenised prompts), the chat template, the
 * prompts, the EOS ids and the adapter (this rank's slices through the adapter slots).
 * Returns 0 or an exit status. */
static int gen_open(GenRun *r) {
    const GenOpts *o = &r->o;
    Grid *g = &r->g;
    ErrStatus st;
    const int frc = mpicmd_frozen_check(g, "generate", &o->run, &r->env);
    if (frc) return frc;
    int ok = session_open(&r->s, g, o->run.model, (MemPinMode)r->env.pin, r->env.base,
                          r->env.has_stages ? r->env.stages : NULL, &st);
    r->have_session = 1;
    if (!grid_agree(g, ok, gen_err, &st)) return EXIT_BAD_INPUT;
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", o->run.model);
    if (access(path, F_OK) == 0) {
        r->tk = tok_load(path, &st);
        ok = r->tk != NULL;
    }
    int status = EXIT_BAD_INPUT;
    if (ok) {
        ChatSetup cs = {o->run.model, o->chat_template, o->chat_kwargs, o->chat_format, r->tk};
        ok = chat_template_load(&r->chat, &cs, &status, &st);
    }
    if (!grid_agree(g, ok, gen_err, &st)) return status;
    if (ok && !r->tk && o->stop.n > 0)
        ok = err_status_set(&st, "--stop needs the model's tokenizer.json to decode the text");
    if (ok)
        ok = gen_read_prompts(o, r->tk, &r->chat, r->s.m.V, &r->prompts, &r->nprompts,
                              &r->used_chat, &st);
    if (!grid_agree(g, ok, gen_err, &st)) return EXIT_BAD_INPUT;
    gen_eos_ids(o->run.model, &r->s.m, r->tk, &r->chat, r->used_chat, &r->eos, &r->neos);
    if (o->adapter) {
        ok = adio_attach(&r->s.m, o->adapter, &r->acfg, g, &r->s.mem, &st);
        r->have_acfg = 1;
        if (!grid_agree(g, ok, gen_err, &st)) return EXIT_BAD_INPUT;
    }
    return 0;
}

/* The layout of the work: DP group d takes prompts [d * per, (d + 1) * per); Tmax positions
 * per sequence, S sequences at once, R rows per forward. 0 with st when a prompt is longer
 * than Tmax (nothing collective: the caller agrees on it). */
static int gen_layout(GenRun *r, ErrStatus *st) {
    const GenOpts *o = &r->o;
    const Grid *g = &r->g;
    const int64_t n = r->nprompts;
    r->per = (n + g->dp - 1) / g->dp;
    r->b0 = (int64_t)g->dp_rank * r->per < n ? (int64_t)g->dp_rank * r->per : n;
    r->b1 = r->b0 + r->per < n ? r->b0 + r->per : n;
    for (int64_t i = 0; i < n; i++)
        r->maxlen = r->prompts[i].n > r->maxlen ? r->prompts[i].n : r->maxlen;
    r->Tmax = o->max_seq_len > 0 ? o->max_seq_len : r->maxlen + o->max_new;
    int ok = 1;
    for (int64_t i = 0; ok && i < n; i++)
        if (r->prompts[i].n > r->Tmax)
            ok = err_status_set(st, "prompt %lld has %lld tokens, more than --max-seq-len %lld",
                                (long long)i, (long long)r->prompts[i].n, (long long)r->Tmax);
    const int64_t mine = r->b1 - r->b0;
    r->S = o->no_kv_cache ? 1 : (o->batch < mine ? o->batch : mine);
    if (r->S < 1) r->S = 1;
    r->R = o->no_kv_cache ? r->Tmax : (o->prefill_rows > r->S ? o->prefill_rows : r->S);
    return ok;
}

/* The memory estimate (KV cache of S sequences x Tmax positions, buffers of R rows, the
 * sampler; --dump-logits keeps max-new-tokens x V floats per sequence) against what the
 * node allows, before the buffers are allocated (launch/mpicmd.h). 0 or EXIT_USAGE. */
static int gen_memcheck(GenRun *r) {
    const GenOpts *o = &r->o;
    /* a DP group's results travel to rank 0 in one message each (an int count of bytes) */
    if (o->dump_logits && r->g.dp > 1 &&
        sizes_mul_sat(o->max_new, r->s.m.V) >= INT32_MAX / (int64_t)sizeof(float)) {
        if (r->g.world_rank == 0)
            fprintf(stderr,
                    "shardlora generate: --dump-logits at dp %d: --max-new-tokens %lld x vocab "
                    "%lld floats per prompt is more than one message holds (2^29 floats): lower "
                    "--max-new-tokens\n",
                    r->g.dp, (long long)o->max_new, (long long)r->s.m.V);
        return EXIT_USAGE;
    }
    MemplanIn in = {.r = o->adapter && !o->merge ? r->acfg.acfg.r : 0,
                    .kind = r->acfg.acfg.kind[0] ? r->acfg.acfg.kind : NULL,
                    .targets = o->adapter && !o->merge ? r->acfg.acfg.targets : 0,
                    .dropout = o->adapter && r->acfg.dropout > 0,
                    .threads = (int)o->run.threads,
                    .S = r->S,
                    .Tmax = r->Tmax,
                    .R = r->R};
    MemPlan p;
    memplan_estimate(&p, &r->s.m, &in);
    if (o->dump_logits && gen_keeper(&r->g)) {
        const int64_t b = sizes_mul_sat(sizes_mul_sat(r->S, o->max_new), r->s.m.V * 4);
        p.bytes[MEM_OTHER] = sizes_add_sat(p.bytes[MEM_OTHER], b);
        p.total = sizes_add_sat(p.total, b);
    }
    char why[160];
    snprintf(why, sizeof why,
             "a KV cache of --batch-size %lld x %lld positions (longest prompt + "
             "--max-new-tokens, or --max-seq-len) and --prefill-rows %lld",
             (long long)r->S, (long long)r->Tmax, (long long)r->R);
    return mpicmd_memcheck(
        &r->g, "generate", &o->run, &p, why,
        "lower --batch-size, --max-new-tokens or --prefill-rows, or raise --tp or --pp");
}

/* GEMM threads and kernel scratch for R rows, the merge on request, the layout's verdict and
 * the output file, all checked before any work (--out is committed only after a good run).
 * Returns 0 or an exit status. */
static int gen_setup(GenRun *r) {
    const GenOpts *o = &r->o;
    Grid *g = &r->g;
    const LlamaModel *m = &r->s.m;
    ErrStatus st, lst;
    const int len_ok = gen_layout(r, &lst);
    const int mrc = gen_memcheck(r);
    if (mrc) return mrc;
    int64_t maxcols = session_max_cols(&r->s);
    if (m->H * m->D > maxcols) maxcols = m->H * m->D;
    session_compute_init(&r->s, (int)o->run.threads, maxcols, r->R, r->env.kops);
    session_set_compute(&r->s, r->env.compute);
    if (g->world_rank == 0) log_info("frozen GEMMs compute in %s", r->s.compute_why);
    if (o->adapter && o->merge && (m->wdtype == GEMM_INT8 || m->wdtype == GEMM_NF4)) {
        err_status_set(&st,
                       "--merge-in-memory with --base-dtype %s: a quantised base cannot hold the "
                       "merged weights (drop it: the adapter is applied beside the base)",
                       mpicmd_base_name(m->wdtype));
        grid_agree(g, 0, gen_err, &st);
        return EXIT_USAGE;
    }
    if (o->adapter && o->merge) {
        r->merged = llama_merge_adapters(&r->s.m, &r->s.gc, &st);
        if (!grid_agree(g, r->merged >= 0, gen_err, &st)) return EXIT_BAD_INPUT;
    }
    if (!grid_agree(g, len_ok, gen_err, &lst)) return EXIT_USAGE;
    if (r->Tmax > m->cfg.max_position_embeddings && m->cfg.max_position_embeddings > 0 &&
        g->world_rank == 0)
        log_warn(
            "sequences of up to %lld positions, beyond the model's max_position_embeddings %lld",
            (long long)r->Tmax, (long long)m->cfg.max_position_embeddings);
    int ok = 1;
    if (g->world_rank == 0 && o->out) {
        ErrStatus e;
        if (afile_open(&r->outfile, o->out, &e))
            r->outf = &r->outfile;
        else
            ok = err_status_set(&st, "%s: cannot write: %s", o->out, e.msg);
    }
    if (!grid_agree(g, ok || g->world_rank != 0, gen_err, &st)) return EXIT_IO;
    return 0;
}

/* The decode state of this rank's DP group (gen_loop's), and where rank 0's results go. */
static void gen_loop_init(GenRun *r) {
    const GenOpts *o = &r->o;
    Grid *g = &r->g;
    LlamaModel *m = &r->s.m;
    MemCtx *mem = &r->s.mem;
    GenLoop *l = &r->l;
    const int64_t S = r->S, R = r->R;
    l->o = o;
    l->g = g;
    l->m = m;
    l->tk = r->tk;
    l->kops = r->env.kops;
    l->kc = &r->s.kc;
    l->scfg = (SampleCfg){o->temperature, o->top_k, o->top_p, o->rep_penalty, o->seed};
    l->env = (AdapterEnv){&r->s.gc, o->seed, 0, 0, 0};
    llama_adapters_step_begin(m, &l->env); /* e.g. DoRA's norms, before the first forward */
    l->prompts = r->prompts;
    l->nprompts = r->nprompts;
    l->results = calloc((size_t)r->nprompts, sizeof *l->results);
    l->b0 = r->b0;
    l->b1 = r->b1;
    l->Tmax = r->Tmax;
    l->eos = r->eos;
    l->neos = r->neos;
    for (int i = 0; i < o->stop.n; i++)
        if (strlen(o->stop.v[i]) > l->max_stop) l->max_stop = strlen(o->stop.v[i]);
    l->stream = g->world_rank == 0 && r->nprompts == 1 && strcmp(o->stream, "auto") == 0;
    SL_CHECK(l->results, "out of memory");
    sample_init(&l->sctx, m->V, g->tp, mem);
    r->have_loop = 1;
    if (r->b1 > r->b0) {
        llama_infer_init(&l->in, m, S, r->Tmax, R, mem);
        l->slots = calloc((size_t)S, sizeof *l->slots);
        l->segs = calloc((size_t)S, sizeof *l->segs);
        l->seg_sel = calloc((size_t)S, sizeof *l->seg_sel);
        l->row_ids = calloc((size_t)R, sizeof *l->row_ids);
        l->tokens = calloc((size_t)S, sizeof *l->tokens);
        l->argmax_tmp = malloc(sample_argmax_tmp_bytes(S));
        SL_CHECK(l->slots && l->segs && l->seg_sel && l->row_ids && l->tokens && l->argmax_tmp,
                 "out of memory");
        for (int64_t s = 0; s < S; s++) {
            l->slots[s].prompt = -1;
            l->slots[s].ids = calloc((size_t)r->Tmax + 1, sizeof(int32_t));
            SL_CHECK(l->slots[s].ids, "out of memory");
        }
        l->has_full = g->tp_rank == 0 && (m->last || (o->dump_logits && m->first));
        if (l->has_full) {
            l->full = mem_alloc(mem, MEM_OTHER, (size_t)(S * m->V) * sizeof(float));
            l->recv = mem_alloc(mem, MEM_OTHER, (size_t)(S * m->V) * sizeof(float));
        }
    }
    GenOutput *w = &r->w;
    w->out = r->outf;
    w->out_ok = 1;
    w->to_stdout = !l->stream && !r->outf;
    w->prompts = r->prompts;
    st_writer_init(&w->dump);
    w->names = calloc((size_t)r->nprompts, sizeof *w->names);
    SL_CHECK(w->names, "out of memory");
    r->have_output = 1;
    if (g->world_rank == 0) l->w = w;
}

static void gen_loop_free(GenRun *r) {
    GenLoop *l = &r->l;
    MemCtx *mem = &r->s.mem;
    const size_t full_bytes = (size_t)(r->S * r->s.m.V) * sizeof(float);
    for (int64_t i = 0; i < r->nprompts; i++) {
        free(l->results[i].json);
        free(l->results[i].logits);
        free(l->results[i].ids);
    }
    free(l->results);
    if (r->b1 > r->b0) {
        for (int64_t s = 0; s < r->S; s++) {
            free(l->slots[s].ids);
            free(l->slots[s].logits);
        }
        if (l->has_full) {
            mem_free(mem, MEM_OTHER, l->full, full_bytes);
            mem_free(mem, MEM_OTHER, l->recv, full_bytes);
        }
        free(l->slots);
        free(l->segs);
        free(l->seg_sel);
        free(l->row_ids);
        free(l->tokens);
        free(l->argmax_tmp);
        llama_infer_free(&l->in, &r->s.m, mem);
    }
    sample_free(&l->sctx, mem);
}

static int gen_free(GenRun *r, int rc) {
    if (r->outf) afile_abort(r->outf); /* a failed run: FILE keeps its old contents */
    if (r->have_output) {
        st_writer_free(&r->w.dump);
        free(r->w.names);
    }
    if (r->have_loop) gen_loop_free(r);
    for (int64_t i = 0; i < r->nprompts; i++)
        free(r->prompts[i].ids);
    free(r->prompts);
    if (r->have_session) session_free(&r->s);
    if (r->have_acfg) adio_cfg_free(&r->acfg);
    free(r->eos);
    if (r->tk) tok_free(r->tk);
    chat_template_free(&r->chat);
    return mpicmd_end(&r->g, r->specs, r->nspecs, rc);
}

/* The model, the grid and the plan of the run (stderr, rank 0). */
static void gen_log_start(const GenRun *r) {
    const GenOpts *o = &r->o;
    const Grid *g = &r->g;
    const LlamaModel *m = &r->s.m;
    log_info(
        "shardlora generate: %s (%s, %lld layers, hidden %lld, heads %lld/%lld, vocab %lld, %s "
        "weights)%s%s%s",
        o->run.model, m->cfg.architecture, (long long)m->L, (long long)m->C, (long long)m->H,
        (long long)m->KV, (long long)m->V, m->wdtype == GEMM_BF16 ? "BF16" : "F32",
        o->adapter ? "; adapter " : "", o->adapter ? o->adapter : "",
        r->merged > 0 ? " (merged in memory)" : "");
    char pp[32] = "";
    if (g->pp > 1) snprintf(pp, sizeof pp, " x pp %d", g->pp);
    log_info("grid: world=%d = dp %d%s x tp %d; per TP rank: %lld heads, %lld kv heads%s, vocab "
             "rows %lld",
             g->world_size, g->dp, pp, g->tp, (long long)m->Hl, (long long)m->KVl,
             m->KV < g->tp && g->tp > 1 ? " (replicated)" : "", (long long)m->Vl);
    char chat[4400];
    log_info("%lld prompts (longest %lld tokens), %lld per DP group; %lld sequences at once, %lld "
             "rows per "
             "forward; KV cache %.2f MiB per rank (%lld positions per sequence); %s; chat template "
             "%s; EOS ids %d",
             (long long)r->nprompts, (long long)r->maxlen, (long long)r->per, (long long)r->S,
             (long long)r->R, (double)r->l.in.cache.bytes * 2 / 1048576.0, (long long)r->Tmax,
             o->temperature == 0 ? "greedy" : "sampling",
             chat_template_describe(&r->chat, chat, sizeof chat), r->neos);
}

/* The generation of this DP group's prompts. Returns 0 or EXIT_NONFINITE (all ranks). */
static int gen_run(GenRun *r) {
    ErrStatus st;
    const double t0 = timer_now();
    const int ok = r->b1 > r->b0 ? gen_loop(&r->l, &st) : 1;
    r->secs = timer_now() - t0;
    return grid_agree(&r->g, ok, gen_err, &st) ? 0 : EXIT_NONFINITE;
}

/* The other groups' results printed by rank 0, --dump-logits, --out committed, the summary
 * line. Returns 0 or EXIT_IO. */
static int gen_outputs(GenRun *r) {
    const GenOpts *o = &r->o;
    Grid *g = &r->g;
    GenOutput *w = &r->w;
    ErrStatus st;
    int rc = 0;
    gen_collect(&r->l, w);
    int wok = 1;
    if (g->world_rank == 0 && o->dump_logits) {
        char buf[64];
        snprintf(buf, sizeof buf, "%lld", (long long)g->tp);
        st_writer_meta(&w->dump, "tp", buf);
        snprintf(buf, sizeof buf, "%lld", (long long)r->nprompts);
        st_writer_meta(&w->dump, "prompts", buf);
        wok = st_writer_write(&w->dump, o->dump_logits, &st);
    }
    AFile *outf = r->outf;
    if (outf && wok && !w->out_ok)
        wok = err_status_set(&st, "%s", w->out_st.msg);
    else if (outf && wok && !afile_commit(outf, &st))
        wok = 0;
    else if (outf && !wok)
        afile_abort(outf);
    r->outf = NULL;
    if (!grid_agree(g, wok || g->world_rank != 0, gen_err, &st)) rc = EXIT_IO;
    int64_t tot[2] = {r->l.generated, r->l.rows_done};
    if (!gen_keeper(g)) tot[0] = tot[1] = 0;
    grid_allreduce_sum_i64(g, g->world, tot, 2, GRID_BYTES_OTHER);
    double tmax = r->secs;
    grid_allreduce_max_f64(g, g->world, &tmax, 1, GRID_BYTES_OTHER);
    log_info(
        "generated %lld tokens for %lld prompts in %.2fs (%lld tokens through the model): %.1f "
        "tokens/s "
        "generated, %.1f tokens/s through the model",
        (long long)tot[0], (long long)r->nprompts, tmax, (long long)tot[1],
        tmax > 0 ? (double)tot[0] / tmax : 0, tmax > 0 ? (double)tot[1] / tmax : 0);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    GenRun run;
    GenRun *r = &run;
    gen_options(r);
    int rc = mpicmd_begin(&r->g, &argc, &argv, r->specs, r->nspecs, "generate", GEN_USAGE,
                          GEN_ABOUT, &r->o.run, gen_check_opts, r, &r->env);
    if (rc >= 0) return gen_free(r, rc);
    if (r->g.world_rank == 0 && r->env.log_level >= LOG_INFO) {
        fprintf(stderr, "configuration (%s):\n",
                r->o.run.config.path ? r->o.run.config.path : "flags and defaults");
        args_print_resolved(stderr, r->specs, r->nspecs);
    }
    rc = gen_open(r);
    if (!rc) rc = gen_setup(r);
    if (rc) return gen_free(r, rc);
    gen_loop_init(r);
    gen_log_start(r);
    rc = gen_run(r);
    if (rc == 0) rc = gen_outputs(r);
    return gen_free(r, rc);
}
