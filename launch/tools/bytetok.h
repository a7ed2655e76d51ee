/* The byte-level tokenizer.json that make-model writes next to a made model (and that unit
 * tests use as a small real tokenizer): a BPE model over GPT-2's byte alphabet with no
 * merges, so every byte is one token. */
#ifndef SHARDLORA_LAUNCH_TOOLS_BYTETOK_H
#define SHARDLORA_LAUNCH_TOOLS_BYTETOK_H

#include "../../runtime/err.h"

/* Number of ids it uses: 256 bytes + <s>, </s>, <pad>. */
#define BYTETOK_VOCAB_SIZE 259

/* Writes PATH (tmp + rename): ids 0..255 bytes, 256 "<s>", 257 "</s>", 258 "<pad>". */
int bytetok_write(const char *path, ErrStatus *st);

#endif
