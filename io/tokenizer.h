/* Hugging Face tokenizer.json. For now: writing the byte-level tokenizer that make-model
 * puts next to a made model (256 byte tokens with GPT-2's byte-to-unicode mapping, no
 * merges, then special tokens). Reading and encoding come with the tokenizer issue. */
#ifndef SHARDLORA_IO_TOKENIZER_H
#define SHARDLORA_IO_TOKENIZER_H

#include <stdint.h>

#include "../runtime/err.h"

/* Number of ids the byte-level tokenizer uses: 256 bytes + <s>, </s>, <pad>. */
#define TOK_BYTELEVEL_SIZE 259

/* Writes PATH (tmp + rename): ids 0..255 bytes, 256 "<s>", 257 "</s>", 258 "<pad>". */
int tok_write_bytelevel(const char *path, ErrStatus *st);

#endif
