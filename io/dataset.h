/* Training examples from JSONL, one JSON object per line, the format detected per line:
 *   {"text": S}                               every token counted
 *   {"prompt": S, "completion": S}            prompt tokens masked (unless train_on_prompt)
 *   {"messages": [{"role": R, "content": S, ...}, ...], "tools"?: [...], "documents"?: [...]}
 *                                             rendered with the chat template (io/chat.h)
 *                                             by its label rule; only assistant replies
 *                                             counted; several segments (a template that
 *                                             renders earlier turns differently later) are
 *                                             one example whose positions restart at 0 at
 *                                             each segment
 *   {"input_ids": [...], "labels"?: [...], "position_ids"?: [...]}   pre-tokenised
 * Text is tokenised with the model's tokenizer.json (io/tokenizer.h). Masks follow TRL:
 * the ids are those of the whole text (of each segment, for messages, with no special
 * tokens added: the template writes them), so the ids equal what Hugging Face gives for the
 * full string. A prompt/completion boundary is placed at the token count of the prompt
 * (encode(prefix)). A chat token is counted when its characters overlap a counted range of
 * the rendered text (transformers' return_assistant_tokens_mask: char_to_token of the
 * range's first and last byte). Each token's place in the text comes from decoding it
 * alone: exact for byte-level BPE (Llama 3, Qwen), and up to the spaces a SentencePiece
 * normaliser adds or its decoder drops (Llama 2, Mistral: a "▁" belongs to its token). When
 * the tokens do not line up so (a character split into byte-fallback tokens, another
 * normaliser), each range's ends are placed at the token counts of the text before them,
 * which differs only for a token that straddles a range's start (HF counts it, this masks
 * it). Labels are -100 where not counted.
 * A line with several of these keys is read by the first of "input_ids", "messages",
 * "prompt"/"completion", "text"; a key whose value is null counts as absent (tables
 * exported from HF `datasets` or pandas carry every column on every line). */
#ifndef SHARDLORA_IO_DATASET_H
#define SHARDLORA_IO_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/err.h"
#include "chat.h"
#include "tokenizer.h"

typedef enum { DS_TEXT = 0, DS_PROMPT_COMPLETION, DS_MESSAGES, DS_TOKENS, DS_NFORMATS } DsFormat;

typedef struct {
    const ChatTemplate *chat; /* how "messages" lines are rendered; NULL (or one without a
                                 template or format): such a line is an error that asks
                                 for --chat-template or --chat-format */
    int train_on_prompt;      /* 1: prompts and non-assistant turns are counted too */
    int32_t eos_id;           /* appended to text and prompt/completion examples unless their
                                 ids already end with it; -1: nothing appended */
    int64_t vocab;            /* every id (pre-tokenised, from the tokenizer, the EOS) must be
                                 in [0, vocab); <= 0: pre-tokenised ids in [0, 2^31), others
                                 unchecked */
} DsOptions;

/* One tokenised example; reuse it across lines (buffers grow, never shrink). */
typedef struct {
    DsFormat format;
    TokIds ids;
    int32_t *labels; /* [ids.n] the label of each token, -100 = not counted */
    int32_t *pos;    /* [ids.n] from "position_ids" when has_pos, else unused */
    int has_pos;
    int64_t counted;  /* labels != -100, excluding the first token (it is never a target) */
    size_t cap;       /* of labels and pos */
    size_t *seg_ntok; /* [nseg] tokens of each segment (messages lines; else nseg = 1) */
    size_t nseg, seg_cap;
    TokIds scratch;
    char *text; /* the text the ids encode (segments concatenated; not for "tokens" lines) */
    size_t text_len, text_cap;
    ChatRender render; /* scratch: a messages line rendered */
    size_t *offs;      /* scratch: byte offsets of a segment's tokens */
    size_t offs_cap;
} DsExample;

/* Parses line[0..len) (no newline) and tokenises it into ex. tk may be NULL when every line
 * is pre-tokenised (a text line then asks for a tokenizer.json). Returns 1, or 0 with st
 * giving the reason only (the caller prefixes "file:line: "): not JSON, not an object, no
 * known format, wrong types, an id outside the vocabulary (pre-tokenised or from the
 * tokenizer), labels / position_ids of
 * another length, an empty text, or nothing to train on (every label masked; allowed for
 * pre-tokenised lines whose labels say so explicitly). */
int ds_encode_line(Tokenizer *tk, const DsOptions *o, const char *line, size_t len, DsExample *ex,
                   ErrStatus *st);
void ds_example_free(DsExample *ex);

/* "text", "prompt/completion", "messages", "tokens". */
const char *ds_format_name(DsFormat f);

#endif
