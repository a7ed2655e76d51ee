/* Training examples from JSONL, one JSON object per line, the format detected per line:
 *   {"text": S}                               every token counted
 *   {"prompt": S, "completion": S}            prompt tokens masked (unless train_on_prompt)
 *   {"messages": [{"role": R, "content": S}, ...]}   rendered with a chat template
 *                                             (io/chat.h); only assistant replies counted
 *   {"input_ids": [...], "labels"?: [...], "position_ids"?: [...]}   pre-tokenised
 * Text is tokenised with the model's tokenizer.json (io/tokenizer.h). Masks follow TRL:
 * the ids are those of the whole text, and a boundary between a masked and a counted part
 * is placed at the token count of the text before it (encode(prefix)), so the ids equal
 * what Hugging Face gives for the full string. Labels are -100 where not counted.
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
    ChatFormat chat;     /* template for "messages" lines; CHAT_NONE: such a line is an
                            error that asks for --chat-format */
    int train_on_prompt; /* 1: prompts and non-assistant turns are counted too */
    int32_t eos_id;      /* appended to text and prompt/completion examples unless their
                            ids already end with it; -1: nothing appended */
    int64_t vocab;       /* every id (pre-tokenised, from the tokenizer, the EOS) must be
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
    int64_t counted; /* labels != -100, excluding the first token (it is never a target) */
    size_t cap;      /* of labels and pos */
    TokIds scratch;
    char *text; /* scratch: the whole text of a prompt/completion or messages line */
    size_t text_cap;
    ChatMsg *msgs; /* scratch: the messages of a line */
    size_t msgs_cap;
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
