/* libFuzzer harness: a checkpoint manifest.pb through ckpt_open, ckpt_verify, ckpt_print and
 * ckpt_read_slice. The first byte picks the framing:
 *   even: the rest is the Manifest message; the harness puts the header in front (magic,
 *         length, CRC-32C), so mutations reach the message checks behind the CRC;
 *   odd:  the rest is the whole file, header included.
 * The shard files the message names are created as zero-filled (sparse) files long enough
 * for their chunks, up to 64 KiB, so ckpt_open gets past "missing shard file"; chunk reads
 * then fail their CRC check, which is a refusal, not a crash. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "io/checkpoint.h"
#include "io/checkpoint.pb-c.h"
#include "io/crc32c.h"

#define FZ_MAX_SHARD ((uint64_t)64 << 10)
#define FZ_MAX_FILES 16
#define FZ_MAX_READ ((int64_t)1 << 16) /* elements read back per tensor */

typedef struct {
    char names[FZ_MAX_FILES][128];
    uint64_t sizes[FZ_MAX_FILES];
    int n;
} FzShards;

static int fz_plain_name(const char *s) {
    return s[0] && strlen(s) < 128 && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..") &&
           strcmp(s, CKPT_MANIFEST_NAME);
}

static void fz_note_shard(FzShards *sh, const Slckpt__ChunkRef *c) {
    if (!c->file || !fz_plain_name(c->file)) return;
    uint64_t end = c->offset + c->length;
    if (end < c->offset || end > FZ_MAX_SHARD) end = FZ_MAX_SHARD;
    for (int i = 0; i < sh->n; i++)
        if (strcmp(sh->names[i], c->file) == 0) {
            if (end > sh->sizes[i]) sh->sizes[i] = end;
            return;
        }
    if (sh->n == FZ_MAX_FILES) return;
    snprintf(sh->names[sh->n], sizeof sh->names[0], "%s", c->file);
    sh->sizes[sh->n++] = end;
}

/* Creates the shard files of the message in msg[0..n) (if it parses). */
static void fz_make_shards(FzShards *sh, const uint8_t *msg, size_t n) {
    sh->n = 0;
    Slckpt__Manifest *m = slckpt__manifest__unpack(NULL, n, msg);
    if (!m) return;
    for (size_t i = 0; i < m->n_tensors; i++)
        for (size_t j = 0; j < m->tensors[i]->n_chunks; j++)
            fz_note_shard(sh, m->tensors[i]->chunks[j]);
    slckpt__manifest__free_unpacked(m, NULL);
    for (int i = 0; i < sh->n; i++) {
        int fd = open(fz_path(sh->names[i]), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || ftruncate(fd, (off_t)sh->sizes[i]) != 0 || close(fd) != 0) abort();
    }
}

static void fz_write_framed(const uint8_t *msg, size_t n) {
    uint8_t *buf = malloc(20 + n);
    memcpy(buf, "SLCKPT01", 8);
    uint32_t crc = crc32c(msg, n);
    for (int i = 0; i < 8; i++)
        buf[8 + i] = (uint8_t)((uint64_t)n >> (8 * i));
    for (int i = 0; i < 4; i++)
        buf[16 + i] = (uint8_t)(crc >> (8 * i));
    if (n) memcpy(buf + 20, msg, n);
    fz_write(CKPT_MANIFEST_NAME, buf, 20 + n);
    free(buf);
}

static void fz_use_reader(CkptReader *r) {
    static FILE *devnull; /* opened once */
    if (!devnull && !(devnull = fopen("/dev/null", "w"))) abort();
    ErrStatus st;
    ckpt_verify(r, &st);
    ckpt_print(r, devnull);
    float *dst = malloc((size_t)FZ_MAX_READ * sizeof *dst);
    for (size_t i = 0; i < r->ntensors; i++) {
        const CkptTensor *t = &r->tensors[i];
        if (ckpt_find(r, t->name) != t) abort();
        if (t->rows > 0 && t->cols > 0 && t->rows <= FZ_MAX_READ / t->cols)
            ckpt_read_slice(r, t->name, 0, t->rows, 0, t->cols, dst, &st);
    }
    free(dst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    FzShards sh;
    if ((data[0] & 1) == 0) {
        fz_write_framed(data + 1, size - 1);
        fz_make_shards(&sh, data + 1, size - 1);
    } else {
        fz_write(CKPT_MANIFEST_NAME, data + 1, size - 1);
        fz_make_shards(&sh, data + 1 + (size > 21 ? 20 : size - 1), size > 21 ? size - 21 : 0);
    }
    CkptReader r;
    ErrStatus st;
    if (ckpt_open(&r, fz_dir(), &st)) {
        fz_use_reader(&r);
        ckpt_close(&r);
    }
    for (int i = 0; i < sh.n; i++)
        unlink(fz_path(sh.names[i]));
    return 0;
}
