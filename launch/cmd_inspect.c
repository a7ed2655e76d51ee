/* `shardlora inspect CKPT`: print a checkpoint's manifest and verify every checksum. */
#include <stdio.h>
#include <string.h>

#include "../io/checkpoint.h"
#include "cmds.h"

int cmd_inspect(int argc, char **argv) {
    if (argc != 3 || strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0) {
        FILE *f = argc == 3 ? stdout : stderr;
        fprintf(f,
                "usage: shardlora inspect CHECKPOINT_DIR\n\n"
                "Print the manifest of a checkpoint (OUT/checkpoints/step-N or .../latest) and "
                "verify the checksum of every chunk. Exit status 0 if it is intact, 3 if not.\n");
        return argc == 3 ? 0 : EXIT_USAGE;
    }
    CkptReader r;
    ErrStatus st;
    if (!ckpt_open(&r, argv[2], &st)) {
        fprintf(stderr, "shardlora inspect: %s\n", st.msg);
        return EXIT_BAD_INPUT;
    }
    ckpt_print(&r, stdout);
    int ok = ckpt_verify(&r, &st);
    if (ok)
        printf("verify: every chunk's CRC-32C matches\n");
    else
        fprintf(stderr, "shardlora inspect: %s\n", st.msg);
    ckpt_close(&r);
    return ok ? 0 : EXIT_BAD_INPUT;
}
