/* libFuzzer harness: a tokenizer_config.json through chat_detect, then a fixed conversation
 * rendered in the detected format (the pieces must concatenate to a non-empty text). */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_common.h"
#include "io/chat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const ChatMsg conv[] = {
        {"system", "  Be brief. "}, {"user", "Hi\n"},   {"assistant", " Hello! "},
        {"user", "2+2?"},           {"assistant", "4"},
    };
    fz_write("tokenizer_config.json", data, size);
    ChatFormat f;
    ErrStatus st;
    if (!chat_detect(fz_dir(), &f, &st) || f == CHAT_NONE) return 0;
    if (f <= CHAT_NONE || f >= CHAT_NFORMATS) abort();
    ChatPieces ps = {0};
    if (!chat_render(f, conv, sizeof conv / sizeof conv[0], &ps, &st) || ps.n == 0) {
        fprintf(stderr, "fuzz_chat: %s does not render a plain conversation: %s\n",
                chat_format_name(f), st.msg);
        abort();
    }
    chat_pieces_free(&ps);
    return 0;
}
