/* Unit test of train/tboard and train/mcsv: TFRecord frames (length, masked CRCs checked with
 * a bit-at-a-time CRC-32C written here), the first events of a file (file_version, a
 * SessionLog START at the run's first step: 1, or a resumed run's), a zero scalar still encoded
 * (oneof), two files in the same second, a full disk (warned once, nothing more written, no crash),
 * and metrics.csv's trim and append on a resume. The protobuf decoding itself is
 * tests/e2e/tracking_check.py's. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tests/unit/check.h"
#include "train/mcsv.h"
#include "train/tboard.h"

static uint32_t crc_ref(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static uint32_t masked_ref(const uint8_t *p, size_t n) {
    const uint32_t c = crc_ref(p, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static uint64_t get_le(const uint8_t *p, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* The records of a file: checks the framing, returns how many; rec[i] / len[i] point into
 * buf (its bytes). */
static int parse_records(const uint8_t *buf, size_t n, const uint8_t **rec, size_t *len, int max) {
    size_t off = 0;
    int k = 0;
    while (off < n && k < max) {
        CHECK_TRUE(off + 12 <= n, "truncated header at %zu", off);
        if (off + 12 > n) return k;
        const uint64_t l = get_le(buf + off, 8);
        CHECK_TRUE(get_le(buf + off + 8, 4) == masked_ref(buf + off, 8), "length CRC at %zu", off);
        CHECK_TRUE(off + 16 + l <= n, "truncated record at %zu", off);
        if (off + 16 + l > n) return k;
        CHECK_TRUE(get_le(buf + off + 12 + l, 4) == masked_ref(buf + off + 12, l),
                   "data CRC at %zu", off);
        rec[k] = buf + off + 12;
        len[k++] = (size_t)l;
        off += 16 + l;
    }
    return k;
}

static size_t read_file(const char *path, uint8_t *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static int has_bytes(const uint8_t *p, size_t n, const void *what, size_t wn) {
    for (size_t i = 0; i + wn <= n; i++)
        if (memcmp(p + i, what, wn) == 0) return 1;
    return 0;
}

static int count_event_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strncmp(e->d_name, "events.out.tfevents.", 20) == 0;
    if (d) closedir(d);
    return n;
}

static void test_frame(void) {
    uint8_t out[64];
    const uint8_t data[] = {1, 2, 3, 250};
    size_t n = tboard_frame(out, data, sizeof data);
    CHECK_TRUE(n == 4 + 16, "frame length %zu", n);
    CHECK_TRUE(get_le(out, 8) == 4, "length field");
    CHECK_TRUE(get_le(out + 8, 4) == masked_ref(out, 8), "length CRC");
    CHECK_TRUE(memcmp(out + 12, data, 4) == 0, "data");
    CHECK_TRUE(get_le(out + 16, 4) == masked_ref(data, 4), "data CRC");
    n = tboard_frame(out, data, 0);
    CHECK_TRUE(n == 16 && get_le(out + 12, 4) == masked_ref(data, 0), "empty record");
    printf("PASS frames: length, masked CRC-32C of the length and of the data\n");
}

/* A fresh file and a resumed one in the same second: two files; the first event, the
 * START, a step's scalars (a zero among them). */
static void test_files(void) {
    TBoard a, b;
    CHECK_TRUE(tboard_open(&a, check_tmp, 1), "open");
    const TBoardScalar v[] = {{"train/loss", 2.5}, {"train/mfu", 0.0}};
    tboard_scalars(&a, 1, v, 2);
    CHECK_TRUE(tboard_open(&b, check_tmp, 5), "open resumed");
    CHECK_TRUE(strcmp(a.path, b.path) != 0, "two files: %s", a.path);
    static uint8_t buf[1 << 16];
    const uint8_t *rec[8];
    size_t len[8];
    size_t n = read_file(a.path, buf, sizeof buf);
    int k = parse_records(buf, n, rec, len, 8);
    CHECK_TRUE(k == 3, "%d records in the fresh file", k);
    const char ver[] = "\x1a\x0d"
                       "brain.Event:2"; /* field 3, length-delimited, 13 bytes */
    CHECK_TRUE(k >= 1 && has_bytes(rec[0], len[0], ver, sizeof ver - 1), "file_version");
    const uint8_t step1[] = {0x10, 0x01}, start[] = {0x3a, 0x02, 0x08, 0x01};
    CHECK_TRUE(k == 3 && has_bytes(rec[1], len[1], step1, 2) && has_bytes(rec[1], len[1], start, 4),
               "a SessionLog START at step 1");
    const uint8_t zero[] = {0x15, 0, 0, 0, 0}; /* simple_value (field 2, 32-bit) = 0.0f */
    CHECK_TRUE(k == 3 && has_bytes(rec[2], len[2], zero, sizeof zero), "a zero scalar is encoded");
    CHECK_TRUE(k == 3 && has_bytes(rec[2], len[2], "train/loss", 10), "the tag");
    n = read_file(b.path, buf, sizeof buf);
    k = parse_records(buf, n, rec, len, 8);
    const uint8_t step5[] = {0x10, 0x05};
    CHECK_TRUE(k == 2 && has_bytes(rec[1], len[1], step5, 2) && has_bytes(rec[1], len[1], start, 4),
               "the resumed file's SessionLog START at step 5 (%d records)", k);
    tboard_close(&a);
    tboard_close(&b);
    tboard_close(&b); /* twice is harmless */
    CHECK_TRUE(count_event_files(check_tmp) == 2, "event files: %d", count_event_files(check_tmp));
    printf("PASS event files: file_version, START on resume, zero scalar, two in one second\n");
}

/* A full disk: the first failed write warns and stops the writer; nothing crashes. */
static void test_full_disk(void) {
    TBoard t;
    memset(&t, 0, sizeof t);
    t.f = fopen("/dev/full", "wb");
    t.path = strdup("/dev/full");
    if (!t.f) {
        printf("SKIP /dev/full: not available\n");
        free(t.path);
        return;
    }
    const TBoardScalar v[] = {{"train/loss", 1}};
    tboard_scalars(&t, 1, v, 1);
    CHECK_TRUE(t.failed == 1, "a failed write is noticed");
    tboard_scalars(&t, 2, v, 1);
    tboard_close(&t);
    CHECK_TRUE(t.f == NULL && t.path == NULL, "closed");
    printf("PASS full disk: one warning, the writer stops, training would go on\n");
}

static void csv_steps(MCsv *c, int64_t from, int64_t to, double loss) {
    for (int64_t s = from; s <= to; s++) {
        TrainerStep ts = {.step = s, .loss = loss, .grad_norm = 0.5, .counted = 64, .finite = 1};
        mcsv_step(c, &ts, 0.25 * (double)s, 1e-3, 1000, 0.5);
    }
}

static void test_csv(void) {
    MCsv c;
    char got[4096];
    CHECK_TRUE(mcsv_open(&c, check_tmp, 1), "open metrics.csv");
    csv_steps(&c, 1, 4, 2);
    mcsv_eval(&c, 2, 0.5, 0, 10);
    mcsv_close(&c);
    CHECK_TRUE(mcsv_open(&c, check_tmp, 3), "reopen on a resume");
    csv_steps(&c, 3, 3, 1.5);
    TrainerStep nan = {.step = 4, .loss = NAN, .grad_norm = INFINITY, .counted = 64};
    mcsv_step(&c, &nan, 1, 1e-3, 1000, 0.5);
    mcsv_close(&c);
    size_t n = read_file(check_tmp_path("metrics.csv"), (uint8_t *)got, sizeof got - 1);
    got[n] = 0;
    const char *want = MCSV_HEADER "\n"
                                   "1,0.25,2,0.001,0.5,64,1e+03,0.5,0,,,\n"
                                   "2,0.5,2,0.001,0.5,64,1e+03,0.5,0,,,\n"
                                   "2,0.5,,,,,,,,0,1,10\n"
                                   "3,0.75,1.5,0.001,0.5,64,1e+03,0.5,0,,,\n"
                                   "4,1,nan,0.001,inf,64,1e+03,0.5,1,,,\n";
    CHECK_TRUE(strcmp(got, want) == 0, "metrics.csv after a resume at step 3:\n%s", got);
    remove(check_tmp_path("metrics.csv"));
    CHECK_TRUE(mcsv_open(&c, check_tmp, 7), "a resume without a metrics.csv");
    mcsv_close(&c);
    n = read_file(check_tmp_path("metrics.csv"), (uint8_t *)got, sizeof got - 1);
    got[n] = 0;
    CHECK_TRUE(strcmp(got, MCSV_HEADER "\n") == 0, "a header is written: %s", got);
    printf("PASS metrics.csv: rows, eval rows, nan/inf, a resume trims and appends\n");
}

int main(void) {
    check_tmp_init("test_tboard");
    test_frame();
    test_files();
    test_full_disk();
    test_csv();
    check_rm_rf(check_tmp);
    return check_finish();
}
