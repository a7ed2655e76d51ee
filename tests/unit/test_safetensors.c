/* Unit test of io/safetensors: writer -> reader round trip (every dtype, 0-D/1-D/2-D/3-D,
 * metadata), slices along rows and columns with conversion (all three read paths), a
 * hand-built file, exhaustive F16 -> F32, every rejection the reader promises (message names
 * the file and the place, nothing left open), sharded directories, and writer failures. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "tests/unit/check.h"

/* 8-byte LE length + header + data: a file built by hand from the spec. */
static void make_file(const char *path, const char *header, const void *data, size_t dlen) {
    size_t hlen = strlen(header);
    unsigned char *b = malloc(8 + hlen + dlen + 1);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(b + 8, header, hlen);
    if (dlen) memcpy(b + 8 + hlen, data, dlen);
    check_write_file(path, b, 8 + hlen + dlen);
    free(b);
}

static int count_fds(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static uint16_t f32_to_bf16_trunc(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return (uint16_t)(b >> 16);
}

static float bf16_ref(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* binary16 by its definition (independent of the library's bit manipulation). */
static float f16_ref(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp(m, -24);
    else
        v = ldexp(1024 + m, e - 25);
    return (float)(s ? -v : v);
}

static int bits_equal(float a, float b) {
    return memcmp(&a, &b, 4) == 0;
}

/* st_open must fail, leave f closed, and name the file plus every needle. */
static void expect_open_fail(const char *what, const char *path, const char *n1, const char *n2) {
    StFile f;
    ErrStatus st;
    int ok = st_open(&f, path, &st);
    CHECK_TRUE(!ok, "%s: st_open accepted a bad file", what);
    CHECK_TRUE(f.fd == -1 && f.tensors == NULL && f.path == NULL, "%s: handle not closed", what);
    CHECK_TRUE(!st.ok && strstr(st.msg, path), "%s: message lacks the path: %s", what, st.msg);
    CHECK_TRUE(!n1 || strstr(st.msg, n1), "%s: message lacks '%s': %s", what, n1, st.msg);
    CHECK_TRUE(!n2 || strstr(st.msg, n2), "%s: message lacks '%s': %s", what, n2, st.msg);
    printf("  %-22s -> %s\n", what, st.msg);
    if (ok) st_close(&f);
}

/* ---- round trip ---------------------------------------------------------------------- */

enum {
    FR = 5,
    FC = 7,
    BR = 4,
    BC = 6,
    BIGR = 20000,
    BIGC = 64,
    WR = 16,
    WC = 8192,
    WBR = 8,
    WBC = 12000
};

/* The tensors of the round trip: every dtype, corner values, shapes that take every read path. */
typedef struct {
    float f32[FR * FC], wide[WR * WC], scalar;
    uint16_t bf16[BR * BC], f16[3 * 3 * 4], bigbf[BIGR * BIGC], wbf[WBR * WBC];
    int64_t i64[10];
    int32_t i32[2 * 3];
} RtData;

static void rt_fill(RtData *d) {
    d->scalar = -3.25f;
    for (int i = 0; i < FR * FC; i++)
        d->f32[i] = (float)i * 0.37f - 3.0f;
    for (int i = 0; i < BR * BC; i++)
        d->bf16[i] = f32_to_bf16_trunc((float)i * -1.5f + 0.125f);
    /* F16 corner cases: zeros, subnormals, max, inf, NaN, ordinary values. */
    const uint16_t f16v[36] = {0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400, 0x3c00, 0xbc00,
                               0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e00, 0x7c01, 0x3555, 0x4248,
                               0x5640, 0x1234, 0x2345, 0x3456, 0x4567, 0x5678, 0x6789, 0x789a,
                               0x0200, 0x8200, 0x0010, 0xc000, 0x4000, 0x3800, 0xb800, 0x3bff,
                               0x3c01, 0x0401, 0x83ff, 0x7000};
    memcpy(d->f16, f16v, sizeof d->f16);
    for (int i = 0; i < 10; i++)
        d->i64[i] = (int64_t)(i - 5) * 100000007LL;
    d->i64[9] = 2147483647LL;
    for (int i = 0; i < 6; i++)
        d->i32[i] = (i - 2) * 123457;
    for (int i = 0; i < BIGR * BIGC; i++)
        d->bigbf[i] = f32_to_bf16_trunc((float)(i % 9973) - 4000.5f);
    for (int i = 0; i < WR * WC; i++)
        d->wide[i] = (float)i;
    for (int i = 0; i < WBR * WBC; i++)
        d->wbf[i] = f32_to_bf16_trunc((float)i * 0.001f - 7.0f);
}

/* Writes d in an insertion order that differs from name order, with metadata. */
static void rt_write(RtData *d, const char *path) {
    StWriter w;
    st_writer_init(&w);
    const int64_t sf[] = {FR, FC}, sb[] = {BR, BC}, sh[] = {3, 3, 4}, si64[] = {10},
                  si32[] = {2, 3}, sempty[] = {0, 4}, sbig[] = {BIGR, BIGC}, swide[] = {WR, WC},
                  swbf[] = {WBR, WBC};
    /* Insertion order differs from name order on purpose. */
    st_writer_add(&w, "z.f32", ST_F32, 2, sf, d->f32);
    st_writer_add(&w, "b.bf16", ST_BF16, 2, sb, d->bf16);
    st_writer_add(&w, "h.f16.3d", ST_F16, 3, sh, d->f16);
    st_writer_add(&w, "i.i64.1d", ST_I64, 1, si64, d->i64);
    st_writer_add(&w, "j.i32", ST_I32, 2, si32, d->i32);
    st_writer_add(&w, "a.scalar", ST_F32, 0, NULL, &d->scalar);
    st_writer_add(&w, "e.empty", ST_F32, 2, sempty, NULL);
    st_writer_add(&w, "big.bf16", ST_BF16, 2, sbig, d->bigbf);
    st_writer_add(&w, "wide.f32", ST_F32, 2, swide, d->wide);
    st_writer_add(&w, "wbf.bf16", ST_BF16, 2, swbf, d->wbf);
    st_writer_meta(&w, "format", "pt");
    st_writer_meta(&w, "note", "first");
    st_writer_meta(&w, "note", "h\xc3\xa9llo \"quoted\""); /* replaces, UTF-8 + escapes */
    ErrStatus st;
    int ok = st_writer_write(&w, path, &st);
    CHECK_TRUE(ok, "write: %s", st.msg);
    st_writer_free(&w);
    CHECK_TRUE(access(check_tmp_path("rt.safetensors.tmp"), F_OK) != 0, "tmp file left behind");
}

/* Sorted names, lookup, data layout in insertion order, the header's metadata and padding. */
static void rt_check_layout(StFile *f, const char *path) {
    CHECK_TRUE(f->ntensors == 10, "ntensors %d", f->ntensors);
    CHECK_TRUE(f->data_start % 8 == 0, "data_start %llu not 8-aligned",
               (unsigned long long)f->data_start);
    for (int i = 1; i < f->ntensors; i++)
        CHECK_TRUE(strcmp(f->tensors[i - 1].name, f->tensors[i].name) < 0, "not sorted at %d", i);
    for (int i = 0; i < f->ntensors; i++)
        CHECK_TRUE(st_find(f, f->tensors[i].name) == &f->tensors[i], "st_find(%s)",
                   f->tensors[i].name);
    CHECK_TRUE(st_find(f, "nope") == NULL && st_find(f, "") == NULL && st_find(f, "zz") == NULL,
               "st_find of absent names");

    /* Layout in insertion order, contiguous from the data start. */
    const char *order[] = {"z.f32",    "b.bf16",  "h.f16.3d", "i.i64.1d", "j.i32",
                           "a.scalar", "e.empty", "big.bf16", "wide.f32", "wbf.bf16"};
    uint64_t pos = f->data_start;
    for (int i = 0; i < 10; i++) {
        const StTensor *t = st_find(f, order[i]);
        CHECK_TRUE(t && t->begin == pos, "layout of %s", order[i]);
        if (t) pos = t->end;
    }
    CHECK_TRUE(pos == f->file_size, "data end %llu != file size %llu", (unsigned long long)pos,
               (unsigned long long)f->file_size);

    /* Header: metadata present and readable by a JSON parser; padding is spaces. */
    {
        FILE *fp = fopen(path, "rb");
        unsigned char lb[8];
        size_t got = fread(lb, 1, 8, fp);
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--)
            hl = (hl << 8) | lb[i];
        char *h = malloc(hl + 1);
        got += fread(h, 1, hl, fp);
        fclose(fp);
        h[hl] = 0;
        CHECK_TRUE(got == 8 + hl && hl % 8 == 0, "header length %llu", (unsigned long long)hl);
        json_t *root = json_loads(h, 0, NULL);
        json_t *m = root ? json_object_get(root, "__metadata__") : NULL;
        CHECK_TRUE(
            m && !strcmp(json_string_value(json_object_get(m, "format")), "pt") &&
                !strcmp(json_string_value(json_object_get(m, "note")), "h\xc3\xa9llo \"quoted\"") &&
                json_object_size(m) == 2,
            "metadata round trip");
        json_decref(root);
        free(h);
    }
}

/* Shapes, whole tensors read in their own dtype (bit-exact) and converted. */
static void rt_check_whole(StFile *f, const RtData *d) {
    ErrStatus st;
    int ok;
    const StTensor *tf = st_find(f, "z.f32");
    const StTensor *tb = st_find(f, "b.bf16");
    const StTensor *th = st_find(f, "h.f16.3d");
    const StTensor *ti64 = st_find(f, "i.i64.1d");
    const StTensor *ti32 = st_find(f, "j.i32");
    const StTensor *ts = st_find(f, "a.scalar");
    const StTensor *te = st_find(f, "e.empty");
    const StTensor *twide = st_find(f, "wide.f32");
    /* Shapes and dtypes. */
    CHECK_TRUE(th->dtype == ST_F16 && th->ndim == 3 && th->shape[0] == 3 && th->shape[2] == 4 &&
                   st_numel(th) == 36,
               "3-D shape");
    CHECK_TRUE(ti64->dtype == ST_I64 && ti64->ndim == 1 && ti64->shape[0] == 10, "1-D shape");
    CHECK_TRUE(ts->ndim == 0 && st_numel(ts) == 1, "scalar");
    CHECK_TRUE(te->ndim == 2 && st_numel(te) == 0 && te->begin == te->end, "empty");

    /* Whole tensors, same dtype: bit-exact. */
    static float of[FR * FC], owide[WR * WC];
    static uint16_t ob[BR * BC], oh[36];
    int64_t o64[10];
    int32_t o32[6];
    float os = 0;
    ok = st_read_all(f, tf, ST_F32, of, &st) && st_read_all(f, tb, ST_BF16, ob, &st) &&
         st_read_all(f, th, ST_F16, oh, &st) && st_read_all(f, ti64, ST_I64, o64, &st) &&
         st_read_all(f, ti32, ST_I32, o32, &st) && st_read_all(f, ts, ST_F32, &os, &st) &&
         st_read_all(f, te, ST_F32, NULL, &st) && st_read_all(f, twide, ST_F32, owide, &st);
    CHECK_TRUE(ok, "read_all: %s", st.msg);
    CHECK_TRUE(!memcmp(of, d->f32, sizeof of) && !memcmp(ob, d->bf16, sizeof ob) &&
                   !memcmp(oh, d->f16, sizeof oh) && !memcmp(o64, d->i64, sizeof o64) &&
                   !memcmp(o32, d->i32, sizeof o32) && os == d->scalar &&
                   !memcmp(owide, d->wide, sizeof owide),
               "same-dtype read_all not bit-exact");

    /* Conversions. */
    float cf[BR * BC];
    ok = st_read_all(f, tb, ST_F32, cf, &st);
    int bad = 0;
    for (int i = 0; i < BR * BC; i++)
        bad += !bits_equal(cf[i], bf16_ref(d->bf16[i]));
    CHECK_TRUE(ok && bad == 0, "BF16->F32: %d mismatches (%s)", bad, st.msg);
    float ch[36];
    ok = st_read_all(f, th, ST_F32, ch, &st);
    bad = 0;
    for (int i = 0; i < 36; i++) {
        float r = f16_ref(d->f16[i]);
        bad += isnan(r) ? !isnan(ch[i]) : !bits_equal(ch[i], r);
    }
    CHECK_TRUE(ok && bad == 0, "F16->F32 corner values: %d mismatches (%s)", bad, st.msg);
    int32_t n32[10];
    ok = st_read_all(f, ti64, ST_I32, n32, &st);
    bad = 0;
    for (int i = 0; i < 10; i++)
        bad += n32[i] != d->i64[i];
    CHECK_TRUE(ok && bad == 0, "I64->I32: %d mismatches (%s)", bad, st.msg);
    int64_t w64[6];
    ok = st_read_all(f, ti32, ST_I64, w64, &st);
    bad = 0;
    for (int i = 0; i < 6; i++)
        bad += w64[i] != d->i32[i];
    CHECK_TRUE(ok && bad == 0, "I32->I64: %d mismatches (%s)", bad, st.msg);
}

/* Every slice of the small F32 and BF16 matrices, of the 3-D F16 viewed as [9, 4], of 1-D I64. */
static void rt_check_slices(StFile *f, const RtData *d) {
    ErrStatus st;
    int ok;
    const StTensor *tf = st_find(f, "z.f32");
    const StTensor *tb = st_find(f, "b.bf16");
    const StTensor *th = st_find(f, "h.f16.3d");
    const StTensor *ti64 = st_find(f, "i.i64.1d");
    /* Every slice of the small F32 and BF16 matrices, and of the 3-D F16 viewed as [9, 4]. */
    int nslices = 0, bad = 0;
    for (int r0 = 0; r0 <= FR; r0++)
        for (int nr = 0; r0 + nr <= FR; nr++)
            for (int c0 = 0; c0 <= FC; c0++)
                for (int nc = 0; c0 + nc <= FC; nc++) {
                    float out[FR * FC];
                    uint64_t before = f->bytes_read;
                    if (!st_read_slice(f, tf, r0, nr, c0, nc, ST_F32, out, &st)) {
                        bad++;
                        continue;
                    }
                    nslices++;
                    if (f->bytes_read - before != (uint64_t)nr * nc * 4) bad++;
                    for (int i = 0; i < nr; i++)
                        for (int j = 0; j < nc; j++)
                            bad += !bits_equal(out[i * nc + j], d->f32[(r0 + i) * FC + c0 + j]);
                }
    for (int r0 = 0; r0 <= BR; r0++)
        for (int nr = 0; r0 + nr <= BR; nr++)
            for (int c0 = 0; c0 <= BC; c0++)
                for (int nc = 0; c0 + nc <= BC; nc++) {
                    float out[BR * BC];
                    uint16_t raw[BR * BC];
                    if (!st_read_slice(f, tb, r0, nr, c0, nc, ST_F32, out, &st) ||
                        !st_read_slice(f, tb, r0, nr, c0, nc, ST_BF16, raw, &st)) {
                        bad++;
                        continue;
                    }
                    nslices += 2;
                    for (int i = 0; i < nr; i++)
                        for (int j = 0; j < nc; j++) {
                            uint16_t want = d->bf16[(r0 + i) * BC + c0 + j];
                            bad += !bits_equal(out[i * nc + j], bf16_ref(want));
                            bad += raw[i * nc + j] != want;
                        }
                }
    for (int r0 = 0; r0 < 9; r0++)
        for (int c0 = 0; c0 < 4; c0++) {
            float out[36];
            int nr = 9 - r0, nc = 4 - c0;
            if (!st_read_slice(f, th, r0, nr, c0, nc, ST_F32, out, &st)) {
                bad++;
                continue;
            }
            nslices++;
            for (int i = 0; i < nr; i++)
                for (int j = 0; j < nc; j++) {
                    float r = f16_ref(d->f16[(r0 + i) * 4 + c0 + j]);
                    float g = out[i * nc + j];
                    bad += isnan(r) ? !isnan(g) : !bits_equal(g, r);
                }
        }
    /* 1-D is [1, n]: a column range is an element range. */
    {
        int64_t out[4];
        ok = st_read_slice(f, ti64, 0, 1, 3, 4, ST_I64, out, &st);
        nslices++;
        bad += !ok || memcmp(out, d->i64 + 3, sizeof out) != 0;
        ok = st_read_slice(f, ti64, 1, 1, 0, 1, ST_I64, out, &st);
        bad += ok; /* row 1 of a [1, 10] view does not exist */
    }
    printf("  %d slices of F32/BF16/F16/I64 tensors compared exactly: %d mismatches\n", nslices,
           bad);
    CHECK_TRUE(bad == 0, "slices: %d mismatches", bad);
}

/* Large reads through every path of st_read_slice. */
static void rt_check_large(StFile *f, const RtData *d) {
    ErrStatus st;
    int ok;
    const StTensor *tbig = st_find(f, "big.bf16");
    const StTensor *twide = st_find(f, "wide.f32");
    const StTensor *twbf = st_find(f, "wbf.bf16");
    /* Large reads through the three paths: batched short column runs (BF16 -> F32, staging in
     * several blocks), d->wide per-row runs (same dtype straight into dst), per-row runs with
     * conversion, and a contiguous multi-chunk conversion. */
    {
        const int r0 = 123, nr = BIGR - 200, c0 = 10, nc = 20;
        float *out = malloc(sizeof(float) * (size_t)nr * nc);
        uint64_t before = f->bytes_read;
        ok = st_read_slice(f, tbig, r0, nr, c0, nc, ST_F32, out, &st);
        long nb = 0;
        for (int i = 0; ok && i < nr; i++)
            for (int j = 0; j < nc; j++)
                nb += !bits_equal(out[(size_t)i * nc + j],
                                  bf16_ref(d->bigbf[(size_t)(r0 + i) * BIGC + c0 + j]));
        CHECK_TRUE(ok && nb == 0, "batched column slice: %ld mismatches (%s)", nb, st.msg);
        CHECK_TRUE(f->bytes_read - before == (uint64_t)nr * nc * 2, "bytes_read of batched slice");
        printf("  batched column slice [%d rows, %d cols] of BF16 [%d, %d]: %ld mismatches\n", nr,
               nc, BIGR, BIGC, nb);
        free(out);

        float *all = malloc(sizeof(float) * BIGR * BIGC);
        ok = st_read_all(f, tbig, ST_F32, all, &st);
        nb = 0;
        for (int i = 0; ok && i < BIGR * BIGC; i++)
            nb += !bits_equal(all[i], bf16_ref(d->bigbf[i]));
        CHECK_TRUE(ok && nb == 0, "contiguous BF16->F32 in chunks: %ld mismatches", nb);
        free(all);

        const int wc0 = 1000, wnc = 6000, wr0 = 3, wnr = 11;
        float *wo = malloc(sizeof(float) * wnr * wnc);
        ok = st_read_slice(f, twide, wr0, wnr, wc0, wnc, ST_F32, wo, &st);
        nb = 0;
        for (int i = 0; ok && i < wnr; i++)
            for (int j = 0; j < wnc; j++)
                nb += wo[i * wnc + j] != d->wide[(wr0 + i) * WC + wc0 + j];
        CHECK_TRUE(ok && nb == 0, "wide per-row F32 slice: %ld mismatches", nb);
        free(wo);

        /* Per-row runs with conversion: 18000-byte BF16 runs go through the staging buffer. */
        const int bc0 = 7, bnc = 9000;
        float *bo = malloc(sizeof(float) * (WBR - 2) * bnc);
        ok = st_read_slice(f, twbf, 1, WBR - 2, bc0, bnc, ST_F32, bo, &st);
        nb = 0;
        for (int i = 0; ok && i < WBR - 2; i++)
            for (int j = 0; j < bnc; j++)
                nb += !bits_equal(bo[i * bnc + j], bf16_ref(d->wbf[(1 + i) * WBC + bc0 + j]));
        CHECK_TRUE(ok && nb == 0, "wide per-row BF16->F32 slice: %ld mismatches", nb);
        free(bo);

        float rows[3 * BIGC];
        ok = st_read_slice(f, tbig, 5, 3, 0, BIGC, ST_F32, rows, &st);
        nb = 0;
        for (int i = 0; ok && i < 3 * BIGC; i++)
            nb += !bits_equal(rows[i], bf16_ref(d->bigbf[5 * BIGC + i]));
        CHECK_TRUE(ok && nb == 0, "row range BF16->F32: %ld mismatches", nb);
    }
}

/* Reads refused: out of range, impossible conversions. */
static void rt_check_rejected(StFile *f) {
    ErrStatus st;
    int ok;
    const StTensor *tf = st_find(f, "z.f32");
    /* Rejected reads: out of range, impossible conversion, I64 value out of I32 range. */
    {
        float out[64];
        ok = st_read_slice(f, tf, 4, 2, 0, 1, ST_F32, out, &st);
        CHECK_TRUE(!ok && strstr(st.msg, "z.f32") && strstr(st.msg, "out of range"),
                   "range error: %s", st.msg);
        ok = st_read_slice(f, tf, 0, 1, -1, 1, ST_F32, out, &st);
        CHECK_TRUE(!ok, "negative c0 accepted");
        ok = st_read_all(f, tf, ST_I32, out, &st);
        CHECK_TRUE(!ok && strstr(st.msg, "cannot read F32 as I32"), "conversion error: %s", st.msg);
        ok = st_read_all(f, tf, ST_BF16, out, &st);
        CHECK_TRUE(!ok, "F32 -> BF16 accepted");
    }
}

/* I64 -> I32 narrowing of a value that does not fit is refused, naming the element. */
static void rt_check_narrowing(void) {
    StWriter w;
    StFile f;
    ErrStatus st;
    int ok;
    /* I64 -> I32 narrowing of a value that does not fit. */
    int64_t huge[3] = {1, (int64_t)1 << 40, 3};
    const int64_t s3[] = {3};
    st_writer_init(&w);
    st_writer_add(&w, "ids", ST_I64, 1, s3, huge);
    ok = st_writer_write(&w, check_tmp_path("huge.safetensors"), &st);
    st_writer_free(&w);
    CHECK_TRUE(ok, "write huge: %s", st.msg);
    if (st_open(&f, check_tmp_path("huge.safetensors"), &st)) {
        int32_t o[3];
        ok = st_read_all(&f, st_find(&f, "ids"), ST_I32, o, &st);
        CHECK_TRUE(!ok && strstr(st.msg, "element 1") && strstr(st.msg, "1099511627776"),
                   "narrowing error: %s", st.msg);
        st_close(&f);
    }
}

static void test_round_trip(void) {
    printf("round trip: writer -> reader, every dtype, slices\n");
    static RtData data;
    RtData *d = &data;
    rt_fill(d);
    const char *path = check_tmp_path("rt.safetensors");
    rt_write(d, path);
    StFile f;
    ErrStatus st;
    int ok = st_open(&f, path, &st);
    CHECK_TRUE(ok, "open: %s", st.msg);
    if (!ok) return;
    rt_check_layout(&f, path);
    rt_check_whole(&f, d);
    rt_check_slices(&f, d);
    rt_check_large(&f, d);
    rt_check_rejected(&f);
    st_close(&f);
    CHECK_TRUE(f.fd == -1 && f.tensors == NULL, "st_close resets the handle");
    st_close(&f); /* closing twice is harmless */

    rt_check_narrowing();
}

/* Every binary16 value through a real file, against the definition. */
static void test_f16_exhaustive(void) {
    static uint16_t all[65536];
    static float out[65536];
    for (int i = 0; i < 65536; i++)
        all[i] = (uint16_t)i;
    make_file(check_tmp_path("f16.safetensors"),
              "{\"all\":{\"dtype\":\"F16\",\"shape\":[256,256],\"data_offsets\":[0,131072]}}", all,
              sizeof all);
    StFile f;
    ErrStatus st;
    int ok = st_open(&f, check_tmp_path("f16.safetensors"), &st);
    CHECK_TRUE(ok, "open f16: %s", st.msg);
    if (!ok) return;
    ok = st_read_all(&f, st_find(&f, "all"), ST_F32, out, &st);
    int bad = 0, nan = 0, sub = 0;
    for (int i = 0; ok && i < 65536; i++) {
        float r = f16_ref((uint16_t)i);
        if (isnan(r)) {
            uint32_t b;
            memcpy(&b, &out[i], 4);
            /* NaN keeps sign and payload (quiet or not) in the top mantissa bits. */
            bad += !isnan(out[i]) || (b >> 31) != (uint32_t)(i >> 15) ||
                   ((b >> 13) & 0x3ff) != (uint32_t)(i & 0x3ff);
            nan++;
        } else {
            bad += !bits_equal(out[i], r);
            sub += ((i >> 10) & 31) == 0 && (i & 1023) != 0;
        }
    }
    printf("f16: all 65536 values -> F32 (%d subnormal, %d NaN): %d mismatches\n", sub, nan, bad);
    CHECK_TRUE(ok && bad == 0, "F16->F32 exhaustive: %d mismatches", bad);
    st_close(&f);
}

/* A file written by hand from the spec: metadata between entries, padding spaces, data
 * not in name order. */
static void test_handmade(void) {
    printf("hand-made file\n");
    const char *hdr = "{\"b\":{\"dtype\":\"I32\",\"shape\":[1,2],\"data_offsets\":[8,16]},"
                      "\"__metadata__\":{\"format\":\"pt\"},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}      ";
    unsigned char data[16];
    float av[2] = {1.5f, -2.0f};
    int32_t bv[2] = {7, -9};
    memcpy(data, av, 8);
    memcpy(data + 8, bv, 8);
    const char *path = check_tmp_path("hand.safetensors");
    make_file(path, hdr, data, 16);
    StFile f;
    ErrStatus st;
    int ok = st_open(&f, path, &st);
    CHECK_TRUE(ok, "hand-made open: %s", st.msg);
    if (!ok) return;
    uint64_t ds = 8 + strlen(hdr);
    CHECK_TRUE(f.ntensors == 2 && !strcmp(f.tensors[0].name, "a") &&
                   !strcmp(f.tensors[1].name, "b"),
               "names");
    CHECK_TRUE(f.data_start == ds && f.file_size == ds + 16, "data_start");
    const StTensor *a = st_find(&f, "a"), *b = st_find(&f, "b");
    CHECK_TRUE(a->begin == ds && a->end == ds + 8 && a->ndim == 1 && a->dtype == ST_F32,
               "tensor a");
    CHECK_TRUE(b->begin == ds + 8 && b->end == ds + 16 && b->ndim == 2 && b->shape[1] == 2 &&
                   b->dtype == ST_I32,
               "tensor b");
    float ra[2];
    int32_t rb[2];
    int64_t rb64[2];
    ok = st_read_all(&f, a, ST_F32, ra, &st) && st_read_all(&f, b, ST_I32, rb, &st) &&
         st_read_all(&f, b, ST_I64, rb64, &st);
    CHECK_TRUE(ok && ra[0] == 1.5f && ra[1] == -2.0f && rb[0] == 7 && rb[1] == -9 && rb64[0] == 7 &&
                   rb64[1] == -9,
               "hand-made values (%s)", st.msg);
    CHECK_TRUE(f.bytes_read == 8 + 8 + 8, "bytes_read %llu", (unsigned long long)f.bytes_read);
    st_close(&f);
}

/* ---- rejections ---------------------------------------------------------------------- */

static void test_bad_inputs(void) {
    printf("bad inputs (st_open must fail and say where):\n");
    int fds = count_fds();
    const char *ok_hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                         "\"v\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}";
    unsigned char data[32] = {0};
    const char *good = check_tmp_path("good.safetensors");
    make_file(good, ok_hdr, data, 32);
    StFile f;
    ErrStatus st;
    CHECK_TRUE(st_open(&f, good, &st), "control file: %s", st.msg);
    st_close(&f);
    uint64_t hl = strlen(ok_hdr);

    /* Truncations of the good file. */
    const char *p = check_tmp_path("cut_header.safetensors");
    make_file(p, ok_hdr, data, 32);
    CHECK_TRUE(truncate(p, (off_t)(8 + hl / 2)) == 0, "truncate");
    expect_open_fail("cut in header", p, "header length", "past the end");
    p = check_tmp_path("cut_data.safetensors");
    make_file(p, ok_hdr, data, 32);
    CHECK_TRUE(truncate(p, (off_t)(8 + hl + 20)) == 0, "truncate");
    expect_open_fail("cut in data", p,
                     "tensor 'v': data_offsets end 32 is past the end of the file",
                     "(data size 20)");
    p = check_tmp_path("cut_len.safetensors");
    check_write_file(p, "\x10\x00\x00", 3);
    expect_open_fail("cut in length", p, "too short", NULL);
    p = check_tmp_path("empty.safetensors");
    check_write_file(p, "", 0);
    expect_open_fail("empty file", p, "too short", NULL);

    /* Header length field. */
    unsigned char b[64];
    memset(b, ' ', sizeof b);
    b[0] = 0x00;
    b[1] = 0x01; /* 256 > 56 bytes that follow */
    memset(b + 2, 0, 6);
    p = check_tmp_path("len_past.safetensors");
    check_write_file(p, b, sizeof b);
    expect_open_fail("length past EOF", p, "header length 256", "past the end of the file");
    memset(b, 0, 8);
    b[5] = 0x10; /* 2^44 */
    p = check_tmp_path("len_absurd.safetensors");
    check_write_file(p, b, sizeof b);
    expect_open_fail("absurd length", p, "absurd", NULL);

    /* JSON errors: the byte offset counts from the start of the file. */
    p = check_tmp_path("bad_json.safetensors");
    const char *bj = "{\"w\":{\"dtype\":\"F32\",,\"shape\":[1],\"data_offsets\":[0,4]}}";
    make_file(p, bj, data, 4);
    expect_open_fail("malformed JSON", p, "JSON error at byte", "line 1, column");
    {
        StFile g;
        st_open(&g, p, &st);
        const char *q = strstr(st.msg, "at byte ");
        long at = q ? strtol(q + 8, NULL, 10) : -1;
        long comma = (long)(strstr(bj, ",,") - bj) + 8;
        CHECK_TRUE(at >= comma && at <= comma + 2, "byte offset %ld, the error is at %ld", at,
                   comma);
    }
    p = check_tmp_path("dup.safetensors");
    make_file(p,
              "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              data, 8);
    expect_open_fail("duplicate name", p, "duplicate", NULL);
    p = check_tmp_path("array.safetensors");
    make_file(p, "[1, 2]", data, 0);
    expect_open_fail("root not object", p, "not a JSON object", NULL);
    p = check_tmp_path("nul.safetensors");
    check_write_file(p, "\x04\0\0\0\0\0\0\0{\0}  ", 12);
    expect_open_fail("NUL in header", p, "JSON error at byte", NULL);

    /* Entries. */
    struct {
        const char *what, *hdr, *n1, *n2;
    } cases[] = {
        {"entry not object", "{\"layer.0.w\":[1,2]}", "tensor 'layer.0.w'", "not a JSON object"},
        {"unknown dtype", "{\"m.w\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}",
         "tensor 'm.w'", "unknown dtype 'F8_E4M3'"},
        {"dtype not string", "{\"m.w\":{\"dtype\":4,\"shape\":[4],\"data_offsets\":[0,4]}}",
         "tensor 'm.w'", "'dtype' must be a string"},
        {"missing shape", "{\"m.w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "tensor 'm.w'",
         "missing 'shape'"},
        {"size mismatch", "{\"m.w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}",
         "tensor 'm.w'", "hold 20 bytes but F32 shape needs 24"},
        {"negative shape", "{\"m.w\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,0]}}",
         "tensor 'm.w'", "shape[0] must be a non-negative integer"},
        {"real in shape", "{\"m.w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}",
         "tensor 'm.w'", "shape[0]"},
        {"too many dims",
         "{\"m.w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
         "tensor 'm.w'", "9 dimensions"},
        {"shape overflow",
         "{\"m.w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}",
         "tensor 'm.w'", "too large"},
        {"offsets not pair", "{\"m.w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
         "tensor 'm.w'", "'data_offsets' must be [begin, end]"},
        {"begin > end", "{\"m.w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}",
         "tensor 'm.w'", "begin 8 > end 4"},
        {"offsets past end",
         "{\"m.w\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}",
         "tensor 'm.w': data_offsets end 400 is past the end of the file (data size 32)", NULL},
        {"overlap",
         "{\"m.a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
         "\"m.b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[12,28]}}",
         "'m.a' (data_offsets [0, 16]) and 'm.b' (data_offsets [12, 28]) overlap", NULL},
        {"overlap contained",
         "{\"m.a\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]},"
         "\"m.c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[20,24]},"
         "\"m.b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         "'m.a'", "overlap"},
        {"metadata not strings", "{\"__metadata__\":{\"k\":1}}", "'__metadata__'.'k'", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "case%zu.safetensors", i);
        p = check_tmp_path(name);
        make_file(p, cases[i].hdr, data, 32);
        expect_open_fail(cases[i].what, p, cases[i].n1, cases[i].n2);
    }
    /* Empty tensors may share an offset with anything; holes are allowed. */
    p = check_tmp_path("empties.safetensors");
    make_file(p,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
              "\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}}",
              data, 32);
    CHECK_TRUE(st_open(&f, p, &st), "empty tensors inside others rejected: %s", st.msg);
    st_close(&f);

    expect_open_fail("missing file", check_tmp_path("nope.safetensors"), "cannot open", NULL);
    expect_open_fail("directory", check_tmp, "not a regular file", NULL);
    int fds2 = count_fds();
    CHECK_TRUE(fds == fds2, "file descriptors leaked: %d before, %d after", fds, fds2);
}

/* ---- directories --------------------------------------------------------------------- */

static void write_tensors(const char *path, int n, const char *const *names, const float *vals) {
    StWriter w;
    ErrStatus st;
    const int64_t shape[] = {2, 3};
    st_writer_init(&w);
    for (int i = 0; i < n; i++)
        st_writer_add(&w, names[i], ST_F32, 2, shape, vals + 6 * i);
    if (!st_writer_write(&w, path, &st)) {
        printf("FAIL %s\n", st.msg);
        exit(1);
    }
    st_writer_free(&w);
}

static void test_dirs(void) {
    printf("model directories\n");
    float vals[6 * 4];
    for (int i = 0; i < 24; i++)
        vals[i] = (float)i + 0.5f;
    const char *n1[] = {"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"};
    const char *n2[] = {"model.layers.1.mlp.up_proj.weight", "lm_head.weight"};
    char *dir = check_tmp_path("sharded");
    mkdir(dir, 0755);
    char p1[600], p2[600], idx[600];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    write_tensors(p1, 2, n1, vals);
    write_tensors(p2, 2, n2, vals + 12);
    const char *index =
        "{\"metadata\": {\"total_size\": 96}, \"weight_map\": {"
        "\"lm_head.weight\": \"model-00002-of-00002.safetensors\","
        "\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\","
        "\"model.layers.0.mlp.up_proj.weight\": \"model-00001-of-00002.safetensors\","
        "\"model.layers.1.mlp.up_proj.weight\": \"model-00002-of-00002.safetensors\"}}\n";
    check_write_file(idx, index, strlen(index));

    StDir d;
    ErrStatus st;
    int ok = st_dir_open(&d, dir, &st);
    CHECK_TRUE(ok, "sharded open: %s", st.msg);
    if (ok) {
        CHECK_TRUE(d.nfiles == 2, "nfiles %d", d.nfiles);
        int bad = 0;
        for (int i = 0; i < 4; i++) {
            const char *name = i < 2 ? n1[i] : n2[i - 2];
            StFile *file = NULL;
            const StTensor *t = st_dir_find(&d, name, &file);
            float out[6];
            if (!t || !file || !strstr(file->path, i < 2 ? "00001-of" : "00002-of") ||
                !st_read_all(file, t, ST_F32, out, &st) || memcmp(out, vals + 6 * i, sizeof out)) {
                bad++;
                printf("  tensor %s wrong\n", name);
            }
        }
        CHECK_TRUE(bad == 0, "st_dir_find / read across shards");
        StFile *file = (StFile *)1;
        CHECK_TRUE(st_dir_find(&d, "absent", &file) == NULL && file == NULL, "absent tensor");
        CHECK_TRUE(st_dir_bytes_read(&d) == 4 * 24, "dir bytes_read %llu",
                   (unsigned long long)st_dir_bytes_read(&d));
        st_dir_close(&d);
    }

    /* The index names a tensor its file does not have. */
    const char *bad_index = "{\"weight_map\": {"
                            "\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\","
                            "\"lm_head.weight\": \"model-00001-of-00002.safetensors\"}}";
    check_write_file(idx, bad_index, strlen(bad_index));
    ok = st_dir_open(&d, dir, &st);
    CHECK_TRUE(!ok && strstr(st.msg, idx) && strstr(st.msg, "'lm_head.weight'") &&
                   strstr(st.msg, "model-00001-of-00002.safetensors"),
               "wrong mapping: %s", st.msg);
    printf("  wrong mapping -> %s\n", st.msg);
    const char *missing_file = "{\"weight_map\": {\"x\": \"model-00009-of-00009.safetensors\"}}";
    check_write_file(idx, missing_file, strlen(missing_file));
    ok = st_dir_open(&d, dir, &st);
    CHECK_TRUE(!ok && strstr(st.msg, "model-00009-of-00009.safetensors") &&
                   strstr(st.msg, "cannot open"),
               "missing shard: %s", st.msg);
    const char *escape = "{\"weight_map\": {\"x\": \"../rt.safetensors\"}}";
    check_write_file(idx, escape, strlen(escape));
    ok = st_dir_open(&d, dir, &st);
    CHECK_TRUE(!ok && strstr(st.msg, "weight_map.'x'"), "path escape: %s", st.msg);
    check_write_file(idx, "{\"weight_map\": {\"x\": ", 21);
    ok = st_dir_open(&d, dir, &st);
    CHECK_TRUE(!ok && strstr(st.msg, idx) && strstr(st.msg, "byte"), "bad index JSON: %s", st.msg);
    check_write_file(idx, "{\"metadata\": {}}", 16);
    ok = st_dir_open(&d, dir, &st);
    CHECK_TRUE(!ok && strstr(st.msg, "weight_map"), "no weight_map: %s", st.msg);
    /* Same tensor in two shards (the index lists only one). */
    write_tensors(p2, 2, n1, vals);
    const char *dup_index =
        "{\"weight_map\": {"
        "\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\","
        "\"model.layers.0.mlp.up_proj.weight\": \"model-00002-of-00002.safetensors\"}}";
    check_write_file(idx, dup_index, strlen(dup_index));
    ok = st_dir_open(&d, dir, &st);
    CHECK_TRUE(!ok && strstr(st.msg, "is in both"), "duplicate across shards: %s", st.msg);

    /* Single file. */
    char *single = check_tmp_path("single");
    mkdir(single, 0755);
    char sp[600];
    snprintf(sp, sizeof sp, "%s/model.safetensors", single);
    write_tensors(sp, 2, n2, vals);
    ok = st_dir_open(&d, single, &st);
    CHECK_TRUE(ok && d.nfiles == 1 && st_dir_find(&d, "lm_head.weight", NULL), "single file: %s",
               st.msg);
    if (ok) st_dir_close(&d);

    /* Neither. */
    char *none = check_tmp_path("none");
    mkdir(none, 0755);
    ok = st_dir_open(&d, none, &st);
    char want[700];
    snprintf(want, sizeof want, "%s: no model.safetensors or model.safetensors.index.json", none);
    CHECK_TRUE(!ok && strcmp(st.msg, want) == 0, "empty dir: %s", st.msg);
}

/* ---- writer failures ----------------------------------------------------------------- */

static int dir_entries(const char *dir) {
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}

static void test_writer_failures(void) {
    printf("writer failures\n");
    float v[4] = {1, 2, 3, 4};
    const int64_t s[] = {4};
    StWriter w;
    ErrStatus st;
    int before = dir_entries(check_tmp);

    char *p = check_tmp_path("no/such/dir/out.safetensors");
    st_writer_init(&w);
    st_writer_add(&w, "x", ST_F32, 1, s, v);
    int ok = st_writer_write(&w, p, &st);
    st_writer_free(&w);
    CHECK_TRUE(!ok && strstr(st.msg, p) && strstr(st.msg, "No such file"), "nonexistent dir: %s",
               st.msg);
    CHECK_TRUE(dir_entries(check_tmp) == before, "writer created something");
    printf("  nonexistent dir -> %s\n", st.msg);

    /* A failed write leaves an existing file untouched and no tmp behind. */
    p = check_tmp_path("keep.safetensors");
    st_writer_init(&w);
    st_writer_add(&w, "x", ST_F32, 1, s, v);
    ok = st_writer_write(&w, p, &st);
    st_writer_free(&w);
    CHECK_TRUE(ok, "write keep: %s", st.msg);
    struct stat sb0, sb1;
    stat(p, &sb0);
    st_writer_init(&w);
    st_writer_add(&w, "x", ST_F32, 1, s, v);
    st_writer_add(&w, "x", ST_F32, 1, s, v);
    ok = st_writer_write(&w, p, &st);
    st_writer_free(&w);
    CHECK_TRUE(!ok && strstr(st.msg, "'x' added twice"), "duplicate name: %s", st.msg);
    const int64_t neg[] = {-2};
    st_writer_init(&w);
    st_writer_add(&w, "y", ST_F32, 1, neg, v);
    ok = st_writer_write(&w, p, &st);
    st_writer_free(&w);
    CHECK_TRUE(!ok && strstr(st.msg, "negative"), "negative shape: %s", st.msg);
    st_writer_init(&w);
    st_writer_add(&w, "__metadata__", ST_F32, 1, s, v);
    ok = st_writer_write(&w, p, &st);
    st_writer_free(&w);
    CHECK_TRUE(!ok && strstr(st.msg, "reserved"), "reserved name: %s", st.msg);
    stat(p, &sb1);
    CHECK_TRUE(sb0.st_ino == sb1.st_ino && sb0.st_size == sb1.st_size, "existing file changed");
    CHECK_TRUE(access(check_tmp_path("keep.safetensors.tmp"), F_OK) != 0, "tmp left behind");

    /* The tmp path is occupied by a directory: creation fails, the target stays. */
    mkdir(check_tmp_path("keep.safetensors.tmp"), 0755);
    st_writer_init(&w);
    st_writer_add(&w, "z", ST_F32, 1, s, v);
    ok = st_writer_write(&w, p, &st);
    st_writer_free(&w);
    CHECK_TRUE(!ok && strstr(st.msg, "keep.safetensors.tmp"), "tmp is a dir: %s", st.msg);
    rmdir(check_tmp_path("keep.safetensors.tmp"));
    StFile f;
    ok = st_open(&f, p, &st);
    CHECK_TRUE(ok && st_find(&f, "x") && !st_find(&f, "z"), "existing file intact");
    if (ok) st_close(&f);

    /* An empty writer makes a valid empty file; overwriting replaces atomically. */
    st_writer_init(&w);
    ok = st_writer_write(&w, p, &st);
    st_writer_free(&w);
    ok = ok && st_open(&f, p, &st);
    CHECK_TRUE(ok && f.ntensors == 0 && f.data_start == 8 + 8, "empty file: %s", st.msg);
    if (ok) st_close(&f);
}

int main(void) {
    check_tmp_init("sl_test_st");
    CHECK_TRUE(st_dtype_parse("BF16") == ST_BF16 && st_dtype_parse("bf16") == -1 &&
                   st_dtype_size(ST_I64) == 8 && !strcmp(st_dtype_name(ST_F16), "F16"),
               "dtype table");
    test_round_trip();
    test_f16_exhaustive();
    test_handmade();
    test_bad_inputs();
    test_dirs();
    test_writer_failures();
    check_rm_rf(check_tmp);
    return check_finish();
}
