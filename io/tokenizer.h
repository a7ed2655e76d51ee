/* Hugging Face tokenizer.json: reading, encoding and decoding (BPE models as used by GPT-2,
 * Llama-3, Qwen2/3 byte-level and Llama-2/Mistral SentencePiece-style). The aim is the exact ids
 * of the Hugging Face `tokenizers` library; a component this reader does not implement is
 * refused at load with its JSON path, never approximated. */
#ifndef SHARDLORA_IO_TOKENIZER_H
#define SHARDLORA_IO_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/err.h"

/* The character GPT-2's byte-level alphabet (bytes_to_unicode) maps byte b (0..255) to, as
 * NUL-terminated UTF-8 (1 or 2 bytes): the vocabulary string of that byte in a byte-level
 * BPE model. */
void tok_byte_char(int b, char out[4]);

/* A loaded tokenizer. Not thread-safe (it owns the regex match data and the word cache):
 * use one per thread. */
typedef struct Tokenizer Tokenizer;

/* A growable id list; zero-initialise, append with tok_encode, release with tok_ids_free. */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} TokIds;

void tok_ids_free(TokIds *ids);

/* Reads PATH (a tokenizer.json). NULL with st naming the file and JSON path on error. */
Tokenizer *tok_load(const char *path, ErrStatus *st);
void tok_free(Tokenizer *tk);

/* Appends the ids of text[0..len) to out. add_special: run the post-processor (BOS/EOS),
 * as add_special_tokens in HF; special tokens written in the text are matched either way.
 * Invalid UTF-8 is read as U+FFFD per maximal invalid subpart (as a JS string would be).
 * Returns 1, or 0 with st set. */
int tok_encode(Tokenizer *tk, const char *text, size_t len, int add_special, TokIds *out,
               ErrStatus *st);

/* The text of ids (HF decode with skip_special_tokens = skip_special); ids outside the
 * vocabulary are skipped, as in HF. Returns a malloc'd NUL-terminated string, length in
 * *len_out (the text may contain NUL). */
char *tok_decode(Tokenizer *tk, const int32_t *ids, size_t n, int skip_special, size_t *len_out);

/* The id of a token given by its content (an added token or a vocabulary string, e.g.
 * "</s>" or "<|eot_id|>"), or -1. */
int32_t tok_token_id(const Tokenizer *tk, const char *token);

/* How many ids the post-processor puts before and after the text when add_special is on
 * (e.g. 1 and 0 for a BOS-only template). */
void tok_post_counts(const Tokenizer *tk, size_t *before, size_t *after);

/* 1 + the largest id of the vocabulary and the added tokens. */
int32_t tok_vocab_size(const Tokenizer *tk);

#endif
