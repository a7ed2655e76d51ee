/* Pre-tokenised JSONL datasets: one JSON object per line with "input_ids" (array of
 * integers), optional "labels" (same length; -100 = ignored; default = input_ids) and
 * optional "position_ids" (same length; a reset to 0 starts a new packed document;
 * default 0..n-1). Errors name the file and the line: `data.jsonl:17: ...`.
 * (The text / prompt-completion / chat formats and the token cache come with the data
 * pipeline.) */
#ifndef SHARDLORA_IO_JSONL_H
#define SHARDLORA_IO_JSONL_H

#include <stdint.h>

#include "../runtime/err.h"

typedef struct {
    int64_t nseq;
    int64_t *off;     /* [nseq + 1] token offsets of each sequence */
    int32_t *ids;     /* [ntok] */
    int64_t *labels;  /* [ntok] */
    int64_t *pos;     /* [ntok] */
    int64_t ntok;
} JsonlTokens;

/* Reads every line; ids must be in [0, vocab). Blank lines are skipped. An empty dataset
 * is an error. */
int jsonl_tokens_load(JsonlTokens *d, const char *path, int64_t vocab, ErrStatus *st);
void jsonl_tokens_free(JsonlTokens *d);

/* Copies sequence i into row buffers of length T: truncated, or padded with id 0,
 * label -100 and positions continuing from the last one. */
void jsonl_tokens_row(const JsonlTokens *d, int64_t i, int64_t T, int32_t *ids, int64_t *labels,
                      int64_t *pos);

#endif
