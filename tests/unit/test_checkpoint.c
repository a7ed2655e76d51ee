/* Unit test of io/checkpoint: every manifest field round trips; tensors written as row
 * slices by 2 shards (tp=2) and column slices by 4 read back exactly at other splits, with a
 * tiny chunk limit (many chunks, rows split by columns) and a large one; replicated slices;
 * shard indexes through their byte form; corruption (flipped byte, truncated manifest,
 * missing or short shard, gaps) is caught with messages naming file, tensor and offset; the
 * directory protocol (begin/commit/latest/list/prune, stale .tmp) and falling back to an
 * older checkpoint when the newest is bad. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/checkpoint.h"
#include "io/checkpoint.pb-c.h"
#include "io/crc32c.h"
#include "tests/unit/check.h"

/* Global shapes of the test tensors. A: rows split over 2 shards; B: columns over 4;
 * C: one shard, rows of 200 bytes (over a 64-byte limit, so rows split by columns);
 * R: replicated, written identically by two shards. */
enum { AR = 13, AC = 10, BR = 7, BC = 22, CR = 3, CC = 50, RR = 5, RC = 4 };

/* Element (r, c) of tensor id: distinct and exact in float. */
static float val(int id, int64_t r, int64_t c) {
    return (float)(id * 100000 + r * 100 + c) * 0.5f;
}

static float *block(int id, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
    float *b = malloc((size_t)(nr * nc) * sizeof *b + 1);
    for (int64_t i = 0; i < nr; i++)
        for (int64_t j = 0; j < nc; j++)
            b[i * nc + j] = val(id, r0 + i, c0 + j);
    return b;
}

static int put(CkptShard *s, const char *name, int id, int64_t gr, int64_t gc, int64_t r0,
               int64_t nr, int64_t c0, int64_t nc) {
    ErrStatus st;
    float *b = block(id, r0, nr, c0, nc);
    int ok = ckpt_shard_put(s, name, gr, gc, r0, nr, c0, nc, b, &st);
    if (!ok) printf("put %s: %s\n", name, st.msg);
    free(b);
    return ok;
}

static void fill_meta(CkptMeta *m, int64_t step) {
    static const uint64_t rng[3] = {7, 0xFFFFFFFFFFFFFFFFull, 42};
    m->run_config = "{\"lr\": 0.0001, \"tp\": 2}";
    m->model_fingerprint = "llama-tiny:abc123";
    m->adapter_config = "{\"r\": 8, \"lora_alpha\": 16}";
    m->step = step;
    m->epoch = 3;
    m->data_cursor = 123456789012345;
    m->seed = 0xDEADBEEFCAFEF00Dull;
    m->rng_counters = rng;
    m->n_rng_counters = 3;
    m->optimizer_kind = "adamw";
    m->optimizer_step = step + 1;
    m->optimizer_hparams = "{\"beta1\": 0.9, \"beta2\": 0.999, \"eps\": 1e-08}";
    m->lr_schedule_position = -5;
    m->tp = 2;
    m->dp = 3;
    m->extra_json = "{\"note\": \"x\"}";
}

/* The standard layout in dir: 4 shard files s0..s3; the manifest built from packed indexes
 * (the bytes the lead sends over MPI) for s0..s2 and straight from the shard for s3. */
static int write_ckpt(const char *dir, size_t limit, int64_t step) {
    ErrStatus st;
    CkptShard sh[4];
    char name[16];
    int ok = 1;
    for (int k = 0; k < 4; k++) {
        snprintf(name, sizeof name, "s%d", k);
        ok &= ckpt_shard_open(&sh[k], dir, name, limit, &st);
        if (!ok) {
            printf("open: %s\n", st.msg);
            return 0;
        }
    }
    ok &= put(&sh[0], "A", 1, AR, AC, 0, 7, 0, AC);
    ok &= put(&sh[1], "A", 1, AR, AC, 7, 6, 0, AC);
    static const int bcut[5] = {0, 6, 11, 17, 22};
    for (int k = 0; k < 4; k++)
        ok &= put(&sh[k], "B", 2, BR, BC, 0, BR, bcut[k], bcut[k + 1] - bcut[k]);
    ok &= put(&sh[2], "C", 3, CR, CC, 0, CR, 0, CC);
    ok &= put(&sh[0], "R", 4, RR, RC, 0, RR, 0, RC);
    ok &= put(&sh[1], "R", 4, RR, RC, 0, RR, 0, RC);
    CkptManifestBuilder m;
    ckpt_manifest_init(&m);
    fill_meta(&m.meta, step);
    for (int k = 0; k < 4 && ok; k++) {
        ok &= ckpt_shard_close(&sh[k], &st);
        if (!ok) printf("close: %s\n", st.msg);
        if (k < 3) {
            uint8_t *buf;
            size_t len;
            ckpt_shard_index_pack(&sh[k], &buf, &len);
            ok &= ckpt_manifest_add_index(&m, buf, len, &st);
            free(buf);
        } else {
            ok &= ckpt_manifest_add_shard(&m, &sh[k], &st);
        }
        if (!ok) printf("add index: %s\n", st.msg);
    }
    for (int k = 0; k < 4; k++)
        ckpt_shard_free(&sh[k]);
    if (ok) ok = ckpt_manifest_write(&m, dir, &st);
    if (!ok) printf("write manifest: %s\n", st.msg);
    ckpt_manifest_free(&m);
    return ok;
}

/* Reads [r0, r0+nr) x [c0, c0+nc) of tensor name (id) and compares exactly. */
static int read_ok(CkptReader *r, const char *name, int id, int64_t r0, int64_t nr, int64_t c0,
                   int64_t nc) {
    ErrStatus st;
    float *got = malloc((size_t)(nr * nc) * sizeof *got + 1);
    float *want = block(id, r0, nr, c0, nc);
    memset(got, 0xFF, (size_t)(nr * nc) * sizeof *got);
    int ok = ckpt_read_slice(r, name, r0, nr, c0, nc, got, &st);
    if (!ok) printf("read %s: %s\n", name, st.msg);
    ok = ok && memcmp(got, want, (size_t)(nr * nc) * sizeof *got) == 0;
    free(got);
    free(want);
    return ok;
}

/* Every read pattern against every tensor; returns the number of failing reads. */
static int check_reads(CkptReader *r) {
    struct {
        const char *name;
        int id;
        int64_t rows, cols;
    } t[4] = {{"A", 1, AR, AC}, {"B", 2, BR, BC}, {"C", 3, CR, CC}, {"R", 4, RR, RC}};
    int bad = 0, n = 0;
    for (int k = 0; k < 4; k++) {
        int64_t R = t[k].rows, C = t[k].cols;
        /* whole */
        bad += !read_ok(r, t[k].name, t[k].id, 0, R, 0, C);
        /* three uneven row ranges (a tp=3 layout) */
        int64_t a = R / 5, b = R - R / 3;
        bad += !read_ok(r, t[k].name, t[k].id, 0, a ? a : 1, 0, C);
        bad += !read_ok(r, t[k].name, t[k].id, a, b - a, 0, C);
        bad += !read_ok(r, t[k].name, t[k].id, b, R - b, 0, C);
        /* column ranges (tp=1 over rows, 2 uneven column slices) */
        int64_t cc = C / 3;
        bad += !read_ok(r, t[k].name, t[k].id, 0, R, 0, cc);
        bad += !read_ok(r, t[k].name, t[k].id, 0, R, cc, C - cc);
        /* an interior rectangle crossing chunk and shard edges */
        bad += !read_ok(r, t[k].name, t[k].id, R / 4, R / 2 + 1, C / 4, C / 2 + 1);
        n += 7;
        /* every single element */
        for (int64_t i = 0; i < R; i++)
            for (int64_t j = 0; j < C; j++, n++)
                bad += !read_ok(r, t[k].name, t[k].id, i, 1, j, 1);
    }
    printf("%s %d reads at other splits, %d wrong\n", bad ? "FAIL" : "PASS", n, bad);
    return bad;
}

static size_t count_chunks(const CkptReader *r, const char *name) {
    const CkptTensor *t = ckpt_find(r, name);
    return t ? t->nchunks : 0;
}

static void test_roundtrip(size_t limit) {
    printf("-- round trip, chunk limit %zu\n", limit);
    char *dir = check_tmp_path("rt");
    check_rm_rf(dir);
    mkdir(dir, 0755);
    CHECK_TRUE(write_ckpt(dir, limit, 120), "write");
    CkptReader r;
    ErrStatus st;
    if (!ckpt_open(&r, dir, &st)) {
        CHECK_TRUE(0, "open: %s", st.msg);
        return;
    }
    CkptMeta want = {0};
    fill_meta(&want, 120);
    const CkptMeta *m = &r.meta;
    CHECK_TRUE(m->format_version == CKPT_FORMAT_VERSION, "format_version %u", m->format_version);
    CHECK_TRUE(strcmp(m->run_config, want.run_config) == 0, "run_config %s", m->run_config);
    CHECK_TRUE(strcmp(m->model_fingerprint, want.model_fingerprint) == 0, "fingerprint");
    CHECK_TRUE(strcmp(m->adapter_config, want.adapter_config) == 0, "adapter_config");
    CHECK_TRUE(m->step == 120 && m->epoch == 3 && m->data_cursor == want.data_cursor,
               "step/epoch/cursor");
    CHECK_TRUE(m->seed == want.seed, "seed");
    CHECK_TRUE(m->n_rng_counters == 3 && m->rng_counters[0] == 7 &&
                   m->rng_counters[1] == 0xFFFFFFFFFFFFFFFFull && m->rng_counters[2] == 42,
               "rng counters");
    CHECK_TRUE(strcmp(m->optimizer_kind, "adamw") == 0 && m->optimizer_step == 121 &&
                   strcmp(m->optimizer_hparams, want.optimizer_hparams) == 0,
               "optimizer");
    CHECK_TRUE(m->lr_schedule_position == -5, "lr position");
    CHECK_TRUE(m->tp == 2 && m->dp == 3, "layout");
    CHECK_TRUE(strcmp(m->extra_json, want.extra_json) == 0, "extra");
    CHECK_TRUE(r.ntensors == 4, "ntensors %zu", r.ntensors);
    const CkptTensor *a = ckpt_find(&r, "A");
    CHECK_TRUE(a && a->rows == AR && a->cols == AC, "A shape");
    CHECK_TRUE(ckpt_find(&r, "nope") == NULL, "missing tensor found");
    if (limit == 64) {
        /* 64 bytes = 16 floats: A (40 B rows) 1 row per chunk; C's 200 B rows in 4 pieces. */
        CHECK_TRUE(count_chunks(&r, "A") == AR, "A chunks %zu", count_chunks(&r, "A"));
        CHECK_TRUE(count_chunks(&r, "C") == CR * 4, "C chunks %zu", count_chunks(&r, "C"));
        for (size_t j = 0; j < a->nchunks; j++)
            CHECK_TRUE(a->chunks[j].nr * a->chunks[j].nc * 4 <= (int64_t)limit, "chunk too big");
    } else if (limit >= ((size_t)1 << 20)) {
        CHECK_TRUE(count_chunks(&r, "A") == 2 && count_chunks(&r, "B") == 4 &&
                       count_chunks(&r, "C") == 1 && count_chunks(&r, "R") == 2,
                   "chunk counts with a large limit");
    }
    printf("PASS manifest fields; chunks A %zu B %zu C %zu R %zu\n", count_chunks(&r, "A"),
           count_chunks(&r, "B"), count_chunks(&r, "C"), count_chunks(&r, "R"));
    CHECK_TRUE(check_reads(&r) == 0, "reads");
    CHECK_TRUE(ckpt_verify(&r, &st), "verify: %s", st.msg);

    /* Errors of the read API itself. */
    float x;
    CHECK_TRUE(!ckpt_read_slice(&r, "Z", 0, 1, 0, 1, &x, &st) && strstr(st.msg, "Z"),
               "unknown tensor: %s", st.msg);
    CHECK_TRUE(!ckpt_read_slice(&r, "A", AR - 1, 2, 0, 1, &x, &st) && strstr(st.msg, "outside"),
               "slice outside: %s", st.msg);

    /* inspect output */
    char *text = NULL;
    size_t tlen = 0;
    FILE *f = open_memstream(&text, &tlen);
    ckpt_print(&r, f);
    fclose(f);
    CHECK_TRUE(strstr(text, "step                  120") && strstr(text, "adamw") &&
                   strstr(text, "\n  B [7, 22]") && strstr(text, "crc32c"),
               "print output:\n%s", text);
    free(text);
    ckpt_close(&r);

    /* The manifest is deterministic: rewriting the same content gives the same bytes. */
    char *man1 = check_tmp_path("rt/manifest.pb");
    FILE *fp = fopen(man1, "rb");
    uint8_t b1[1 << 16], b2[1 << 16];
    size_t n1 = fread(b1, 1, sizeof b1, fp);
    fclose(fp);
    CHECK_TRUE(write_ckpt(dir, limit, 120), "rewrite");
    fp = fopen(man1, "rb");
    size_t n2 = fread(b2, 1, sizeof b2, fp);
    fclose(fp);
    CHECK_TRUE(n1 == n2 && memcmp(b1, b2, n1) == 0, "manifest bytes differ on rewrite");
    check_rm_rf(dir);
}

/* Bytes of a file. */
static long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static void flip_byte(const char *path, long off) {
    int fd = open(path, O_RDWR);
    uint8_t b;
    if (fd < 0 || pread(fd, &b, 1, off) != 1) {
        printf("FAIL cannot read %s\n", path);
        exit(1);
    }
    b ^= 0x10;
    if (pwrite(fd, &b, 1, off) != 1) exit(1);
    close(fd);
}

/* Chunk of tensor `name` that is in file `file` and contains row `row`. */
static const CkptChunk *chunk_at(const CkptReader *r, const char *name, const char *file,
                                 int64_t row) {
    const CkptTensor *t = ckpt_find(r, name);
    for (size_t j = 0; t && j < t->nchunks; j++)
        if (strcmp(t->chunks[j].file, file) == 0 && t->chunks[j].r0 <= row &&
            row < t->chunks[j].r0 + t->chunks[j].nr)
            return &t->chunks[j];
    return NULL;
}

static void test_corruption(void) {
    printf("-- corruption\n");
    char *dir = check_tmp_path("bad");
    ErrStatus st;
    CkptReader r;
    check_rm_rf(dir);
    mkdir(dir, 0755);
    CHECK_TRUE(write_ckpt(dir, 64, 5), "write");

    /* One flipped byte in the payload of A's chunk holding row 9 (in s1). */
    CHECK_TRUE(ckpt_open(&r, dir, &st), "open: %s", st.msg);
    const CkptChunk *c = chunk_at(&r, "A", "s1", 9);
    CHECK_TRUE(c != NULL, "no chunk of A with row 9 in s1");
    uint64_t off = c->offset;
    flip_byte(check_tmp_path("bad/s1"), (long)(c->offset + c->length - 3));
    ckpt_close(&r);
    CHECK_TRUE(ckpt_open(&r, dir, &st), "open after flip (CRCs are checked on read): %s", st.msg);
    char offs[32];
    snprintf(offs, sizeof offs, "byte offset %" PRIu64, off);
    int v = ckpt_verify(&r, &st);
    CHECK_TRUE(!v && strstr(st.msg, "/s1") && strstr(st.msg, "tensor A") && strstr(st.msg, offs) &&
                   strstr(st.msg, "1 of "),
               "verify should name file, tensor and offset: %s", st.msg);
    printf("PASS verify: %s\n", st.msg);
    float buf[AC * AR];
    CHECK_TRUE(!ckpt_read_slice(&r, "A", 8, 3, 0, AC, buf, &st) && strstr(st.msg, "CRC"),
               "read of the affected rows: %s", st.msg);
    CHECK_TRUE(read_ok(&r, "A", 1, 0, 9, 0, AC), "rows before the bad chunk still read");
    CHECK_TRUE(read_ok(&r, "B", 2, 0, BR, 0, BC), "other tensors still read");
    ckpt_close(&r);

    /* Truncated manifest. */
    CHECK_TRUE(write_ckpt(dir, 64, 5), "rewrite");
    char *man = check_tmp_path("bad/manifest.pb");
    long ms = file_size(man);
    CHECK_TRUE(truncate(man, ms - 7) == 0, "truncate");
    CHECK_TRUE(!ckpt_open(&r, dir, &st) && strstr(st.msg, "manifest.pb") &&
                   strstr(st.msg, "truncated"),
               "truncated manifest: %s", st.msg);
    printf("PASS truncated manifest: %s\n", st.msg);
    CHECK_TRUE(truncate(man, 11) == 0, "truncate");
    CHECK_TRUE(!ckpt_open(&r, dir, &st) && strstr(st.msg, "manifest.pb"), "header cut: %s", st.msg);
    /* A flipped manifest byte: CRC. */
    CHECK_TRUE(write_ckpt(dir, 64, 5), "rewrite");
    flip_byte(man, ms / 2);
    CHECK_TRUE(!ckpt_open(&r, dir, &st) && strstr(st.msg, "CRC"), "manifest CRC: %s", st.msg);
    /* Appended bytes. */
    CHECK_TRUE(write_ckpt(dir, 64, 5), "rewrite");
    FILE *fp = fopen(man, "ab");
    fputc(0, fp);
    fclose(fp);
    CHECK_TRUE(!ckpt_open(&r, dir, &st) && strstr(st.msg, "manifest.pb"), "appended: %s", st.msg);
    /* Wrong magic. */
    CHECK_TRUE(write_ckpt(dir, 64, 5), "rewrite");
    flip_byte(man, 0);
    CHECK_TRUE(!ckpt_open(&r, dir, &st) && strstr(st.msg, "magic"), "magic: %s", st.msg);

    /* Counters a valid CRC cannot vouch for: a negative step is damage. */
    CHECK_TRUE(write_ckpt(dir, 64, -3), "rewrite with step -3");
    CHECK_TRUE(!ckpt_open(&r, dir, &st) && strstr(st.msg, "damaged: step -3 is not in [0, 2^53]"),
               "negative step: %s", st.msg);
    printf("PASS negative step: %s\n", st.msg);
    CHECK_TRUE(write_ckpt(dir, 64, ((int64_t)1 << 53) + 1), "rewrite with step 2^53 + 1");
    CHECK_TRUE(!ckpt_open(&r, dir, &st) && strstr(st.msg, "is not in [0, 2^53]"),
               "step past 2^53: %s", st.msg);

    /* A deleted shard file. */
    CHECK_TRUE(write_ckpt(dir, 64, 5), "rewrite");
    unlink(check_tmp_path("bad/s2"));
    CHECK_TRUE(!ckpt_open(&r, dir, &st) && strstr(st.msg, "/s2") && strstr(st.msg, "missing"),
               "deleted shard: %s", st.msg);
    printf("PASS deleted shard: %s\n", st.msg);
    /* A shard cut short. */
    CHECK_TRUE(write_ckpt(dir, 64, 5), "rewrite");
    CHECK_TRUE(truncate(check_tmp_path("bad/s3"), file_size(check_tmp_path("bad/s3")) - 1) == 0,
               "truncate");
    CHECK_TRUE(!ckpt_open(&r, dir, &st) && strstr(st.msg, "s3") && strstr(st.msg, "too short"),
               "short shard: %s", st.msg);
    check_rm_rf(dir);
}

/* Gaps: the writer refuses a manifest with an uncovered element, and a hand-made manifest
 * with a gap is refused by the reader; both name the tensor and the element. */
static void test_gaps(void) {
    printf("-- coverage gaps\n");
    char *dir = check_tmp_path("gap");
    ErrStatus st;
    check_rm_rf(dir);
    mkdir(dir, 0755);
    CkptShard s;
    CHECK_TRUE(ckpt_shard_open(&s, dir, "s0", 0, &st), "open: %s", st.msg);
    put(&s, "G", 5, 6, 4, 0, 2, 0, 4);
    put(&s, "G", 5, 6, 4, 3, 3, 0, 4); /* row 2 missing */
    CHECK_TRUE(ckpt_shard_close(&s, &st), "close: %s", st.msg);
    CkptManifestBuilder m;
    ckpt_manifest_init(&m);
    CHECK_TRUE(ckpt_manifest_add_shard(&m, &s, &st), "add: %s", st.msg);
    CHECK_TRUE(!ckpt_manifest_write(&m, dir, &st) && strstr(st.msg, "tensor G") &&
                   strstr(st.msg, "(2, 0)"),
               "writer should refuse the gap: %s", st.msg);
    printf("PASS writer refuses: %s\n", st.msg);
    CHECK_TRUE(access(check_tmp_path("gap/manifest.pb"), F_OK) != 0, "no manifest written");
    ckpt_manifest_free(&m);

    /* Hand-made manifest with the same gap. */
    Slckpt__ChunkRef cr[2], *cp[2];
    const CkptTensor *t = &s.tensors[0];
    for (int i = 0; i < 2; i++) {
        slckpt__chunk_ref__init(&cr[i]);
        cr[i].file = (char *)"s0";
        cr[i].offset = t->chunks[i].offset;
        cr[i].length = t->chunks[i].length;
        cr[i].r0 = t->chunks[i].r0;
        cr[i].nr = t->chunks[i].nr;
        cr[i].c0 = 0;
        cr[i].nc = 4;
        cr[i].crc32c = t->chunks[i].crc32c;
        cp[i] = &cr[i];
    }
    Slckpt__TensorEntry te = SLCKPT__TENSOR_ENTRY__INIT, *tp = &te;
    te.name = (char *)"G";
    te.rows = 6;
    te.cols = 4;
    te.n_chunks = 2;
    te.chunks = cp;
    Slckpt__Manifest man = SLCKPT__MANIFEST__INIT;
    man.format_version = 1;
    man.n_tensors = 1;
    man.tensors = &tp;
    uint8_t out[4096];
    size_t len = slckpt__manifest__pack(&man, out + 20);
    memcpy(out, "SLCKPT01", 8);
    for (int i = 0; i < 8; i++)
        out[8 + i] = (uint8_t)((uint64_t)len >> (8 * i));
    uint32_t crc = crc32c(out + 20, len);
    for (int i = 0; i < 4; i++)
        out[16 + i] = (uint8_t)(crc >> (8 * i));
    FILE *fp = fopen(check_tmp_path("gap/manifest.pb"), "wb");
    fwrite(out, 1, 20 + len, fp);
    fclose(fp);
    CkptReader r;
    CHECK_TRUE(!ckpt_open(&r, dir, &st) && strstr(st.msg, "tensor G") && strstr(st.msg, "(2, 0)"),
               "reader should refuse the gap: %s", st.msg);
    printf("PASS reader refuses: %s\n", st.msg);
    /* A newer format version is refused too. */
    man.format_version = 2;
    te.n_chunks = 0;
    len = slckpt__manifest__pack(&man, out + 20);
    for (int i = 0; i < 8; i++)
        out[8 + i] = (uint8_t)((uint64_t)len >> (8 * i));
    crc = crc32c(out + 20, len);
    for (int i = 0; i < 4; i++)
        out[16 + i] = (uint8_t)(crc >> (8 * i));
    fp = fopen(check_tmp_path("gap/manifest.pb"), "wb");
    fwrite(out, 1, 20 + len, fp);
    fclose(fp);
    CHECK_TRUE(!ckpt_open(&r, dir, &st) && strstr(st.msg, "version 2"), "version: %s", st.msg);
    ckpt_shard_free(&s);
    check_rm_rf(dir);
}

/* Bad arguments and inconsistent indexes. */
static void test_writer_errors(void) {
    printf("-- writer errors\n");
    char *dir = check_tmp_path("werr");
    ErrStatus st;
    check_rm_rf(dir);
    mkdir(dir, 0755);
    CkptShard s, s2;
    CHECK_TRUE(!ckpt_shard_open(&s, dir, "../x", 0, &st), "bad name accepted");
    CHECK_TRUE(!ckpt_shard_open(&s, dir, "x", 3, &st), "limit 3 accepted");
    CHECK_TRUE(!ckpt_shard_open(&s, check_tmp_path("no/such"), "x", 0, &st) &&
                   strstr(st.msg, "no/such"),
               "missing dir: %s", st.msg);
    CHECK_TRUE(ckpt_shard_open(&s, dir, "a", 0, &st), "open: %s", st.msg);
    float d[8] = {0};
    CHECK_TRUE(!ckpt_shard_put(&s, "T", 4, 2, 3, 2, 0, 2, d, &st) && strstr(st.msg, "outside"),
               "slice outside: %s", st.msg);
    CHECK_TRUE(ckpt_shard_put(&s, "T", 4, 2, 0, 2, 0, 2, d, &st), "put: %s", st.msg);
    CHECK_TRUE(!ckpt_shard_put(&s, "T", 5, 2, 2, 2, 0, 2, d, &st) && strstr(st.msg, "shape"),
               "shape change: %s", st.msg);
    CHECK_TRUE(ckpt_shard_put(&s, "T", 4, 2, 2, 0, 0, 2, d, &st), "empty put: %s", st.msg);
    CHECK_TRUE(ckpt_shard_close(&s, &st), "close: %s", st.msg);
    CHECK_TRUE(ckpt_shard_open(&s2, dir, "b", 0, &st), "open: %s", st.msg);
    CHECK_TRUE(ckpt_shard_put(&s2, "T", 8, 2, 2, 2, 0, 2, d, &st), "put: %s", st.msg);
    CHECK_TRUE(ckpt_shard_close(&s2, &st), "close: %s", st.msg);
    CkptManifestBuilder m;
    ckpt_manifest_init(&m);
    CHECK_TRUE(ckpt_manifest_add_shard(&m, &s, &st), "add: %s", st.msg);
    CHECK_TRUE(!ckpt_manifest_add_shard(&m, &s2, &st) && strstr(st.msg, "shape") &&
                   strstr(st.msg, "of b"),
               "shape disagreement between shards: %s", st.msg);
    uint8_t junk[16] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    CHECK_TRUE(!ckpt_manifest_add_index(&m, junk, sizeof junk, &st), "junk index accepted");
    ckpt_manifest_free(&m);
    ckpt_shard_free(&s);
    ckpt_shard_free(&s2);
    /* A full disk: the shard file is a link to /dev/full, every write fails with ENOSPC. */
    if (symlink("/dev/full", check_tmp_path("werr/full")) == 0 &&
        ckpt_shard_open(&s, dir, "full", 0, &st)) {
        CHECK_TRUE(!ckpt_shard_put(&s, "T", 4, 2, 0, 4, 0, 2, d, &st) &&
                       strstr(st.msg, "werr/full") && strstr(st.msg, "tensor T") &&
                       strstr(st.msg, strerror(ENOSPC)),
                   "disk full: %s", st.msg);
        printf("PASS disk full: %s\n", st.msg);
        CHECK_TRUE(!ckpt_shard_put(&s, "U", 4, 2, 0, 4, 0, 2, d, &st) && !ckpt_shard_close(&s, &st),
                   "a failed shard must refuse further puts and close");
        ckpt_shard_free(&s);
    } else {
        CHECK_TRUE(0, "cannot set up the /dev/full shard");
    }
    check_rm_rf(dir);
    printf("PASS bad names, limits, slices, shapes and index bytes are refused\n");
}

static int64_t g_steps[16];

static int list_is(const char *root, const int64_t *want, int n) {
    int got = ckpt_list(root, g_steps, 16);
    if (got != n) return 0;
    for (int i = 0; i < n; i++)
        if (g_steps[i] != want[i]) return 0;
    return 1;
}

static int commit_step(const char *root, int64_t step) {
    char tmp[512];
    ErrStatus st;
    if (!ckpt_dir_begin(root, step, tmp, sizeof tmp, &st)) {
        printf("begin: %s\n", st.msg);
        return 0;
    }
    if (!write_ckpt(tmp, 64, step)) return 0;
    if (!ckpt_dir_commit(root, step, &st)) {
        printf("commit: %s\n", st.msg);
        return 0;
    }
    return 1;
}

typedef struct {
    int n;
    char last[4096];
} Warnings;

static void on_warn(void *ctx, const char *msg) {
    Warnings *w = ctx;
    w->n++;
    snprintf(w->last, sizeof w->last, "%s", msg);
    printf("     warning: %s\n", msg);
}

static void test_dirs(void) {
    printf("-- directory protocol\n");
    char *root = check_tmp_path("out/checkpoints");
    ErrStatus st;
    char tmp[512], used[512];
    CkptReader r;
    Warnings w = {0};

    CHECK_TRUE(ckpt_list(root, g_steps, 16) == 0, "missing root lists 0");
    CHECK_TRUE(ckpt_open_latest(root, 1, &r, used, sizeof used, on_warn, &w, &st) == 0 && st.ok,
               "no checkpoints yet: %s", st.msg);
    CHECK_TRUE(commit_step(root, 10), "commit 10");
    CHECK_TRUE(commit_step(root, 20), "commit 20");
    CHECK_TRUE(commit_step(root, 30), "commit 30");
    CHECK_TRUE(list_is(root, (int64_t[]){10, 20, 30}, 3), "list 10 20 30");
    CHECK_TRUE(ckpt_latest_step(root) == 30, "latest %" PRId64, ckpt_latest_step(root));
    char link[64];
    ssize_t ll = readlink(check_tmp_path("out/checkpoints/latest"), link, sizeof link - 1);
    CHECK_TRUE(ll > 0 && (link[ll] = 0, strcmp(link, "step-000000030") == 0), "latest link %s",
               ll > 0 ? link : "?");
    CHECK_TRUE(ckpt_list(root, g_steps, 2) == 3 && g_steps[0] == 20 && g_steps[1] == 30,
               "list with max 2 gives the newest");

    /* A stale .tmp (interrupted write) is ignored, then replaced by begin. */
    CHECK_TRUE(ckpt_dir_begin(root, 40, tmp, sizeof tmp, &st), "begin 40: %s", st.msg);
    FILE *fp = fopen(check_tmp_path("out/checkpoints/step-000000040.tmp/junk"), "w");
    fputs("x", fp);
    fclose(fp);
    CHECK_TRUE(list_is(root, (int64_t[]){10, 20, 30}, 3), "stale .tmp listed");
    CHECK_TRUE(ckpt_latest_step(root) == 30, "latest moved");
    CHECK_TRUE(ckpt_dir_begin(root, 40, tmp, sizeof tmp, &st), "begin 40 again: %s", st.msg);
    CHECK_TRUE(access(check_tmp_path("out/checkpoints/step-000000040.tmp/junk"), F_OK) != 0,
               "stale .tmp not emptied");
    CHECK_TRUE(write_ckpt(tmp, 64, 40) && ckpt_dir_commit(root, 40, &st), "commit 40: %s", st.msg);
    CHECK_TRUE(list_is(root, (int64_t[]){10, 20, 30, 40}, 4), "list 10..40");

    /* Re-committing an existing step replaces it. */
    CHECK_TRUE(commit_step(root, 40), "recommit 40");
    CHECK_TRUE(list_is(root, (int64_t[]){10, 20, 30, 40}, 4) && ckpt_latest_step(root) == 40,
               "after recommit");
    CHECK_TRUE(access(check_tmp_path("out/checkpoints/step-000000040.old"), F_OK) != 0,
               ".old left");

    /* Prune keeps the newest 3. */
    CHECK_TRUE(ckpt_prune(root, 3, &st), "prune: %s", st.msg);
    CHECK_TRUE(list_is(root, (int64_t[]){20, 30, 40}, 3), "after prune keep 3");
    CHECK_TRUE(ckpt_prune(root, 0, &st) && list_is(root, (int64_t[]){20, 30, 40}, 3),
               "keep 0 keeps all");
    printf("PASS begin/commit/latest/list/prune\n");

    /* Fallback: the newest's shard is corrupt -> the previous one, with a message. */
    CHECK_TRUE(ckpt_open_latest(root, 1, &r, used, sizeof used, on_warn, &w, &st) == 1 &&
                   strstr(used, "step-000000040") && w.n == 0,
               "open latest: %s", st.msg);
    ckpt_close(&r);
    flip_byte(check_tmp_path("out/checkpoints/step-000000040/s0"), 30);
    CHECK_TRUE(ckpt_open_latest(root, 1, &r, used, sizeof used, on_warn, &w, &st) == 1,
               "fallback: %s", st.msg);
    CHECK_TRUE(strstr(used, "step-000000030") && r.meta.step == 30 && w.n == 1 &&
                   strstr(w.last, "step-000000040") && strstr(w.last, "CRC"),
               "fell back to %s after %d warnings (%s)", used, w.n, w.last);
    CHECK_TRUE(read_ok(&r, "A", 1, 0, AR, 0, AC), "read after fallback");
    ckpt_close(&r);
    printf("PASS fallback to %s\n", used);
    /* Next one has a missing shard file; the one before a truncated manifest. */
    unlink(check_tmp_path("out/checkpoints/step-000000030/s3"));
    w.n = 0;
    CHECK_TRUE(ckpt_open_latest(root, 1, &r, used, sizeof used, on_warn, &w, &st) == 1 &&
                   strstr(used, "step-000000020") && w.n == 2 && strstr(w.last, "s3"),
               "second fallback: %s, %d warnings", used, w.n);
    ckpt_close(&r);
    CHECK_TRUE(truncate(check_tmp_path("out/checkpoints/step-000000020/manifest.pb"), 30) == 0,
               "trunc");
    w.n = 0;
    CHECK_TRUE(ckpt_open_latest(root, 1, &r, used, sizeof used, on_warn, &w, &st) == -1 &&
                   w.n == 3 && strstr(st.msg, "none of the 3"),
               "all bad: %s, %d warnings", st.msg, w.n);
    printf("PASS all bad: %s\n", st.msg);

    /* Latest pointing at an older step: newer ones are an abandoned timeline, never loaded,
     * and pruned. */
    char *root2 = check_tmp_path("out2");
    CHECK_TRUE(commit_step(root2, 1) && commit_step(root2, 2) && commit_step(root2, 3), "commits");
    unlink(check_tmp_path("out2/latest"));
    CHECK_TRUE(symlink("step-000000002", check_tmp_path("out2/latest")) == 0, "symlink");
    w.n = 0;
    CHECK_TRUE(ckpt_open_latest(root2, 0, &r, used, sizeof used, on_warn, &w, &st) == 1 &&
                   strstr(used, "step-000000002") && w.n == 0,
               "latest wins over a newer step: %s", used);
    ckpt_close(&r);
    CHECK_TRUE(ckpt_prune(root2, 5, &st) && list_is(root2, (int64_t[]){1, 2}, 2),
               "abandoned newer step pruned");
    CHECK_TRUE(ckpt_prune(root2, 1, &st) && list_is(root2, (int64_t[]){2}, 1),
               "prune keeps latest");
    check_rm_rf(check_tmp_path("out"));
    check_rm_rf(root2);
}

static void count_note(void *ctx, const char *name) {
    (void)name;
    ++*(int *)ctx;
}

/* ckpt_remove_leftovers: every step-N.tmp / .del / .old goes, committed steps and other
 * names stay; a missing root is 0. */
static void test_leftovers(void) {
    printf("-- leftovers\n");
    char *root = check_tmp_path("lo");
    ErrStatus st;
    int notes = 0;
    CHECK_TRUE(ckpt_remove_leftovers(root, count_note, &notes, &st) == 0 && notes == 0,
               "missing root: %s", st.msg);
    CHECK_TRUE(commit_step(root, 5), "commit 5");
    const char *dirs[] = {"lo/step-000000009.tmp", "lo/step-000000003.del", "lo/step-7.old",
                          "lo/keep.tmp"};
    for (int i = 0; i < 4; i++)
        CHECK_TRUE(mkdir(check_tmp_path(dirs[i]), 0755) == 0, "mkdir %s", dirs[i]);
    check_write_file(check_tmp_path("lo/step-000000009.tmp/shard-tp0.pb"), "x", 1);
    CHECK_TRUE(ckpt_remove_leftovers(root, count_note, &notes, &st) == 3 && notes == 3,
               "three leftovers removed (%d notes): %s", notes, st.msg);
    CHECK_TRUE(access(check_tmp_path("lo/step-000000009.tmp"), F_OK) != 0 &&
                   access(check_tmp_path("lo/keep.tmp"), F_OK) == 0 &&
                   list_is(root, (int64_t[]){5}, 1),
               "only the leftovers went");
    check_rm_rf(root);
}

int main(void) {
    check_tmp_init("test_checkpoint");
    test_leftovers();
    test_roundtrip(64);
    test_roundtrip(100);
    test_roundtrip(CKPT_CHUNK_LIMIT_DEFAULT);
    test_corruption();
    test_gaps();
    test_writer_errors();
    test_dirs();
    check_rm_rf(check_tmp);
    return check_finish();
}
