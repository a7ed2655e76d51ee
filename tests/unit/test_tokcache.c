/* io/tokcache: caches built with 1, 2, 3, 7 (and more parts than lines) give the same
 * documents in the same order as reading the files line by line; several files, CRLF, no
 * final newline, blank lines; bad lines named FILE:LINE from a part that starts mid-file;
 * skip_bad counts; what the fingerprint covers; tcache_open refusing damaged caches; a
 * 20k-line file with a line longer than the read buffer. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "../../io/tokcache.h"
#include "../../launch/tools/bytetok.h"
#include "check.h"

static char tok_path[600];
static Tokenizer *tk;
static DsOptions opts = {NULL, 0, 257, BYTETOK_VOCAB_SIZE};

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc(*n + 1);
    *n = fread(p, 1, *n, f);
    p[*n] = 0;
    fclose(f);
    return p;
}

/* ---- the reference: every file read whole and split at '\n' ---- */

typedef struct {
    int32_t *ids, *labels, *pos; /* pos NULL: 0..len-1 */
    int64_t len;
} RefDoc;

typedef struct {
    RefDoc *d;
    int64_t n, cap, tokens, counted;
} Ref;

static void ref_add_file(Ref *r, const char *path) {
    size_t size;
    char *data = read_file(path, &size);
    CHECK_TRUE(data != NULL, "cannot read %s", path);
    DsExample ex = {0};
    for (size_t at = 0; data && at < size;) {
        char *nl = memchr(data + at, '\n', size - at);
        size_t len = (nl ? (size_t)(nl - data) : size) - at;
        const char *line = data + at;
        at += len + 1;
        if (len && line[len - 1] == '\r') len--;
        if (strspn(line, " \t\r") >= len) continue;
        ErrStatus st;
        if (!ds_encode_line(tk, &opts, line, len, &ex, &st)) continue; /* bad lines skipped */
        if (r->n == r->cap) {
            r->cap = r->cap ? 2 * r->cap : 256;
            r->d = realloc(r->d, (size_t)r->cap * sizeof *r->d);
        }
        RefDoc *d = &r->d[r->n++];
        size_t bytes = ex.ids.n * sizeof(int32_t);
        d->len = (int64_t)ex.ids.n;
        d->ids = malloc(bytes);
        d->labels = malloc(bytes);
        d->pos = ex.has_pos ? malloc(bytes) : NULL;
        memcpy(d->ids, ex.ids.ids, bytes);
        memcpy(d->labels, ex.labels, bytes);
        if (d->pos) memcpy(d->pos, ex.pos, bytes);
        r->tokens += d->len;
        r->counted += ex.counted;
    }
    ds_example_free(&ex);
    free(data);
}

static void ref_free(Ref *r) {
    for (int64_t i = 0; i < r->n; i++) {
        free(r->d[i].ids);
        free(r->d[i].labels);
        free(r->d[i].pos);
    }
    free(r->d);
    memset(r, 0, sizeof *r);
}

static void compare(const TokCache *c, const Ref *r, const char *what) {
    CHECK_TRUE(c->ndocs == r->n && c->ntok == r->tokens,
               "%s: %lld docs / %lld tokens, want %lld / %lld", what, (long long)c->ndocs,
               (long long)c->ntok, (long long)r->n, (long long)r->tokens);
    if (c->ndocs != r->n) return;
    int64_t bad = -1;
    for (int64_t i = 0; i < r->n && bad < 0; i++) {
        TcDoc d;
        tcache_doc(c, i, &d);
        const RefDoc *e = &r->d[i];
        if (d.len != e->len) bad = i;
        for (int64_t t = 0; t < e->len && bad < 0; t++) {
            int32_t want_pos = e->pos ? e->pos[t] : (int32_t)t;
            int32_t got_pos = d.pos ? d.pos[t] : (int32_t)t;
            if (d.ids[t] != e->ids[t] || d.labels[t] != e->labels[t] || got_pos != want_pos)
                bad = i;
        }
    }
    CHECK_TRUE(bad < 0, "%s: document %lld differs", what, (long long)bad);
}

/* ---- building ---- */

static void add_stats(TcStats *sum, const TcStats *s) {
    sum->lines += s->lines;
    sum->bad_lines += s->bad_lines;
    sum->docs += s->docs;
    sum->tokens += s->tokens;
    sum->counted += s->counted;
    for (int f = 0; f < DS_NFORMATS; f++)
        sum->per_format[f] += s->per_format[f];
    if (!sum->first_bad[0]) memcpy(sum->first_bad, s->first_bad, sizeof s->first_bad);
}

/* Builds every part (as the ranks would) and commits; 1 on success, else st holds the
 * first part's error. */
static int build(const char *dir, const char *const *files, int nfiles, int nparts, int skip_bad,
                 const char *fp, TcStats *sum, ErrStatus *st) {
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    mkdir(tmp, 0755);
    memset(sum, 0, sizeof *sum);
    int ok = 1;
    for (int p = 0; ok && p < nparts; p++) {
        TcStats s;
        ok = tcache_build_part(tmp, p, nparts, files, nfiles, tk, &opts, skip_bad, &s, st);
        if (ok) add_stats(sum, &s);
    }
    if (ok) ok = tcache_commit(dir, tmp, nparts, fp, sum, st);
    return ok;
}

static void check_cache(const char *const *files, int nfiles, const Ref *r, int nparts,
                        const char *what) {
    char fp[TCACHE_FP_LEN + 1], name[200];
    ErrStatus st;
    CHECK_TRUE(tcache_fingerprint(files, nfiles, tok_path, &opts, fp, &st), "%s", st.msg);
    TcStats sum;
    const char *dir = check_tmp_path("cache");
    snprintf(name, sizeof name, "%s, %d parts", what, nparts);
    int ok = build(dir, files, nfiles, nparts, 0, fp, &sum, &st);
    CHECK_TRUE(ok, "%s: %s", name, st.msg);
    if (!ok) return;
    CHECK_TRUE(sum.docs == r->n && sum.tokens == r->tokens && sum.counted == r->counted &&
                   sum.bad_lines == 0,
               "%s: stats %lld docs %lld tokens %lld counted", name, (long long)sum.docs,
               (long long)sum.tokens, (long long)sum.counted);
    TokCache c;
    ok = tcache_open(&c, dir, fp, &st);
    CHECK_TRUE(ok, "%s: %s", name, st.msg);
    if (!ok) return;
    CHECK_TRUE(c.nparts == nparts && c.stats.docs == sum.docs && c.stats.lines == sum.lines &&
                   memcmp(c.stats.per_format, sum.per_format, sizeof sum.per_format) == 0,
               "%s: index.json stats differ", name);
    compare(&c, r, name);
    tcache_close(&c);
}

/* Line i of a mixed dataset: text, prompt/completion and pre-tokenised lines (some with
 * position_ids), of varying lengths. */
static int gen_line(char *out, size_t cap, int i) {
    char body[512];
    int len = 1 + (i * 37) % 300;
    for (int k = 0; k < len; k++)
        body[k] = (char)('a' + (i + k) % 26);
    body[len] = 0;
    switch (i % 5) {
    case 0:
    case 4:
        return snprintf(out, cap, "{\"text\": \"%d %s\"}", i, body);
    case 1:
        return snprintf(out, cap, "{\"prompt\": \"q%d: \", \"completion\": \"%s\"}", i, body);
    default: {
        int n = snprintf(out, cap, "{\"input_ids\": [");
        int m = 2 + i % 11; /* one token would have nothing to predict */
        for (int k = 0; k < m; k++)
            n += snprintf(out + n, cap - (size_t)n, "%s%d", k ? "," : "", (i + k) % 259);
        if (i % 5 == 2) {
            n += snprintf(out + n, cap - (size_t)n, "], \"position_ids\": [");
            for (int k = 0; k < m; k++)
                n += snprintf(out + n, cap - (size_t)n, "%s%d", k ? "," : "", k + i % 3);
        }
        return n + snprintf(out + n, cap - (size_t)n, "]}");
    }
    }
}

/* nlines mixed lines, a blank line every 13th; bad: line numbers (1-based) to spoil. */
static void gen_file(const char *path, int nlines, const int *bad, int nbad, const char *eol) {
    FILE *f = fopen(path, "wb");
    char line[4096];
    for (int i = 0, lineno = 1; i < nlines; i++, lineno++) {
        int spoil = 0;
        for (int b = 0; b < nbad; b++)
            spoil |= bad[b] == lineno;
        if (spoil)
            fprintf(f, "%s%s", lineno % 2 ? "{\"text\": \"unterminated" : "{\"txt\": \"x\"}", eol);
        else if (i % 13 == 12)
            fprintf(f, "  \t%s", eol);
        else {
            gen_line(line, sizeof line, i);
            fprintf(f, "%s%s", line, eol);
        }
    }
    fclose(f);
}

static void test_parts(void) {
    const char *file = check_tmp_path("mixed.jsonl");
    gen_file(file, 400, NULL, 0, "\n");
    const char *files[] = {file};
    Ref r = {0};
    ref_add_file(&r, file);
    CHECK_TRUE(r.n > 300, "reference has %lld documents", (long long)r.n);
    /* with 7 parts, some boundary must fall inside a line */
    size_t size;
    char *data = read_file(file, &size);
    int inside = 0;
    for (int p = 1; p < 7; p++)
        inside += data[(size_t)p * size / 7 - 1] != '\n';
    free(data);
    CHECK_TRUE(inside > 0, "no part boundary inside a line");
    const int parts[] = {1, 2, 3, 7, 1000};
    for (int k = 0; k < 5; k++)
        check_cache(files, 1, &r, parts[k], "mixed");

    /* positions: the first documents have none, a later one has them: every document of
     * the part gets positions, 0..n-1 where it had none */
    ErrStatus st;
    char fp[TCACHE_FP_LEN + 1];
    TcStats sum;
    TokCache c;
    CHECK_TRUE(tcache_fingerprint(files, 1, tok_path, &opts, fp, &st), "%s", st.msg);
    int ok = build(check_tmp_path("cache"), files, 1, 1, 0, fp, &sum, &st) &&
             tcache_open(&c, check_tmp_path("cache"), fp, &st);
    CHECK_TRUE(ok, "%s", st.msg);
    if (!ok) return;
    TcDoc d;
    tcache_doc(&c, 0, &d);
    CHECK_TRUE(c.pos[0] != NULL && d.pos != NULL && d.pos[0] == 0 && d.pos[d.len - 1] == d.len - 1,
               "positions not back-filled");
    tcache_close(&c);
    ref_free(&r);

    /* a dataset without position_ids has none in the cache */
    const char *plain = check_tmp_path("plain.jsonl");
    const char *text = "{\"text\": \"one\"}\n{\"text\": \"two\"}\n";
    check_write_file(plain, text, strlen(text));
    const char *pf[] = {plain};
    CHECK_TRUE(tcache_fingerprint(pf, 1, tok_path, &opts, fp, &st), "%s", st.msg);
    ok = build(check_tmp_path("cache"), pf, 1, 2, 0, fp, &sum, &st) &&
         tcache_open(&c, check_tmp_path("cache"), fp, &st);
    CHECK_TRUE(ok, "%s", st.msg);
    if (!ok) return;
    CHECK_TRUE(c.ndocs == 2 && !c.pos[0] && !c.pos[1], "positions in a plain cache");
    tcache_doc(&c, 1, &d);
    CHECK_TRUE(d.len == 4 && d.ids[0] == 't' && d.labels[3] == 257 && d.pos == NULL,
               "document 1: len %lld", (long long)d.len);
    tcache_close(&c);

    /* a UTF-8 byte order mark at the start of a file is dropped */
    const char *bom = "\xEF\xBB\xBF{\"text\": \"Hi\"}\r\n";
    check_write_file(plain, bom, strlen(bom));
    CHECK_TRUE(tcache_fingerprint(pf, 1, tok_path, &opts, fp, &st), "%s", st.msg);
    ok = build(check_tmp_path("cache"), pf, 1, 1, 0, fp, &sum, &st) &&
         tcache_open(&c, check_tmp_path("cache"), fp, &st);
    CHECK_TRUE(ok, "BOM: %s", st.msg);
    if (!ok) return;
    tcache_doc(&c, 0, &d);
    CHECK_TRUE(c.ndocs == 1 && d.len == 3 && d.ids[0] == 72 && d.ids[1] == 105, "BOM kept");
    tcache_close(&c);

    /* only blank lines: an empty cache, which opens */
    check_write_file(plain, "\n  \n\r\n", 5);
    CHECK_TRUE(tcache_fingerprint(pf, 1, tok_path, &opts, fp, &st), "%s", st.msg);
    ok = build(check_tmp_path("cache"), pf, 1, 2, 0, fp, &sum, &st) &&
         tcache_open(&c, check_tmp_path("cache"), fp, &st);
    CHECK_TRUE(ok && c.ndocs == 0 && sum.lines == 0, "blank file: %s", st.msg);
    if (ok) tcache_close(&c);
}

static void test_files(void) {
    /* CRLF with a blank CRLF line, an empty file, one without a final newline */
    const char *a = check_tmp_path("a.jsonl"), *b = check_tmp_path("b.jsonl"),
               *e = check_tmp_path("e.jsonl");
    gen_file(a, 60, NULL, 0, "\r\n");
    check_write_file(e, "", 0);
    char text[8192];
    size_t n = 0;
    for (int i = 0; i < 40; i++) {
        n += (size_t)gen_line(text + n, sizeof text - n, 1000 + i);
        if (i < 39) text[n++] = '\n';
    }
    check_write_file(b, text, n);
    const char *files[] = {a, e, b, e};
    Ref r = {0};
    ref_add_file(&r, a);
    ref_add_file(&r, b);
    const int parts[] = {1, 2, 3, 7, 200};
    for (int k = 0; k < 5; k++)
        check_cache(files, 4, &r, parts[k], "files");
    ref_free(&r);
}

static void test_bad_lines(void) {
    const char *file = check_tmp_path("bad.jsonl");
    const int bad[] = {77};
    gen_file(file, 100, bad, 1, "\n");
    const char *files[] = {file};
    char tmp[700], want[700];
    snprintf(tmp, sizeof tmp, "%s", check_tmp_path("badparts"));
    mkdir(tmp, 0755);
    snprintf(want, sizeof want, "%s:77: invalid JSON at column", file);
    int failed = 0, failed_part = -1;
    for (int p = 0; p < 4; p++) {
        TcStats s;
        ErrStatus st;
        if (!tcache_build_part(tmp, p, 4, files, 1, tk, &opts, 0, &s, &st)) {
            failed++;
            failed_part = p;
            CHECK_TRUE(strncmp(st.msg, want, strlen(want)) == 0, "got '%s', want '%s...'", st.msg,
                       want);
        }
    }
    CHECK_TRUE(failed == 1 && failed_part >= 2, "%d parts failed, the last %d", failed,
               failed_part);

    /* the bad line in the second file, counted from that file's start */
    const char *first = check_tmp_path("first.jsonl"), *second = check_tmp_path("second.jsonl");
    gen_file(first, 50, NULL, 0, "\n");
    const int bad2[] = {30};
    gen_file(second, 40, bad2, 1, "\n");
    const char *two[] = {first, second};
    snprintf(want, sizeof want, "%s:30: no \"text\"", second);
    failed = 0;
    for (int p = 0; p < 3; p++) {
        TcStats s;
        ErrStatus st;
        if (!tcache_build_part(tmp, p, 3, two, 2, tk, &opts, 0, &s, &st)) {
            failed++;
            CHECK_TRUE(strncmp(st.msg, want, strlen(want)) == 0, "got '%s', want '%s...'", st.msg,
                       want);
        }
    }
    CHECK_TRUE(failed == 1, "%d parts failed", failed);

    /* skip_bad: counted, the first remembered, the others give the same documents */
    const char *many = check_tmp_path("many_bad.jsonl");
    const int bad3[] = {10, 51, 90, 91, 92, 93, 94, 95};
    gen_file(many, 120, bad3, 8, "\n");
    const char *mf[] = {many};
    Ref r = {0};
    ref_add_file(&r, many);
    char fp[TCACHE_FP_LEN + 1];
    ErrStatus st;
    CHECK_TRUE(tcache_fingerprint(mf, 1, tok_path, &opts, fp, &st), "%s", st.msg);
    snprintf(want, sizeof want, "%s:10: no \"text\"", many);
    const int parts[] = {1, 3};
    for (int k = 0; k < 2; k++) {
        TcStats sum;
        TokCache c;
        int ok = build(check_tmp_path("cache"), mf, 1, parts[k], 1, fp, &sum, &st) &&
                 tcache_open(&c, check_tmp_path("cache"), fp, &st);
        CHECK_TRUE(ok, "%s", st.msg);
        if (!ok) continue;
        CHECK_TRUE(sum.bad_lines == 8 && c.stats.bad_lines == 8, "bad_lines %lld",
                   (long long)sum.bad_lines);
        CHECK_TRUE(strncmp(c.stats.first_bad, want, strlen(want)) == 0, "first_bad '%s'",
                   c.stats.first_bad);
        compare(&c, &r, "skip_bad");
        tcache_close(&c);
    }
    ref_free(&r);

    /* a line beyond the 256 MiB bound (a sparse file: NUL bytes, no newline): refused without
     * holding it in memory, and skipped with skip_bad */
    const char *huge = check_tmp_path("huge.jsonl");
    FILE *hf = fopen(huge, "w");
    CHECK_TRUE(hf && fputs("{\"text\": \"a b\"}\n", hf) >= 0 &&
                   ftruncate(fileno(hf), ((off_t)257 << 20)) == 0 && fclose(hf) == 0,
               "cannot make %s", huge);
    const char *hfs[] = {huge};
    snprintf(want, sizeof want, "%s:2: a line of %lld bytes, longer than the 256 MiB", huge,
             (long long)((257 << 20) - 16));
    TcStats hs;
    CHECK_TRUE(!tcache_build_part(tmp, 0, 1, hfs, 1, tk, &opts, 0, &hs, &st) &&
                   strncmp(st.msg, want, strlen(want)) == 0,
               "got '%s', want '%s...'", st.msg, want);
    CHECK_TRUE(tcache_build_part(tmp, 0, 1, hfs, 1, tk, &opts, 1, &hs, &st) && hs.docs == 1 &&
                   hs.bad_lines == 1,
               "skip_bad: %s (docs %lld, bad %lld)", st.msg, (long long)hs.docs,
               (long long)hs.bad_lines);
    unlink(huge);

    /* an unreadable file */
    const char *gone[] = {check_tmp_path("missing.jsonl")};
    TcStats s;
    CHECK_TRUE(!tcache_build_part(tmp, 0, 1, gone, 1, tk, &opts, 0, &s, &st) &&
                   strstr(st.msg, "missing.jsonl: cannot open") != NULL,
               "got '%s'", st.msg);
    CHECK_TRUE(!tcache_fingerprint(gone, 1, tok_path, &opts, (char[TCACHE_FP_LEN + 1]){0}, &st) &&
                   strstr(st.msg, "missing.jsonl: cannot open") != NULL,
               "got '%s'", st.msg);
}

static void test_fingerprint(void) {
    const char *file = check_tmp_path("fp.jsonl");
    gen_file(file, 30, NULL, 0, "\n");
    const char *files[] = {file};
    char fp0[TCACHE_FP_LEN + 1], fp[TCACHE_FP_LEN + 1];
    ErrStatus st;
    CHECK_TRUE(tcache_fingerprint(files, 1, tok_path, &opts, fp0, &st), "%s", st.msg);
    CHECK_TRUE(strlen(fp0) == TCACHE_FP_LEN && strspn(fp0, "0123456789abcdef") == TCACHE_FP_LEN,
               "fingerprint '%s'", fp0);
    CHECK_TRUE(tcache_fingerprint(files, 1, tok_path, &opts, fp, &st) && strcmp(fp, fp0) == 0,
               "not stable");
    /* the same tokenizer bytes elsewhere: same fingerprint */
    size_t n;
    char *tok = read_file(tok_path, &n);
    const char *copy = check_tmp_path("copy-tokenizer.json");
    check_write_file(copy, tok, n);
    CHECK_TRUE(tcache_fingerprint(files, 1, copy, &opts, fp, &st) && strcmp(fp, fp0) == 0,
               "tokenizer path changed the fingerprint");
    /* one byte of the tokenizer changed (a space at the end) */
    tok = realloc(tok, n + 1);
    tok[n] = ' ';
    check_write_file(copy, tok, n + 1);
    free(tok);
    CHECK_TRUE(tcache_fingerprint(files, 1, copy, &opts, fp, &st) && strcmp(fp, fp0) != 0,
               "tokenizer change not seen");
    CHECK_TRUE(tcache_fingerprint(files, 1, NULL, &opts, fp, &st) && strcmp(fp, fp0) != 0,
               "no tokenizer not seen");
    /* every option */
    ChatTemplate chatml;
    chat_template_init_format(&chatml, CHAT_CHATML);
    for (int k = 0; k < 4; k++) {
        DsOptions o = opts;
        if (k == 0) o.chat = &chatml;
        if (k == 1) o.train_on_prompt = 1;
        if (k == 2) o.eos_id = -1;
        if (k == 3) o.vocab++;
        CHECK_TRUE(tcache_fingerprint(files, 1, tok_path, &o, fp, &st) && strcmp(fp, fp0) != 0,
                   "option %d not seen", k);
    }
    chat_template_free(&chatml);
    /* the data: a changed byte near the end (same size, same mtime); the mtime alone */
    struct stat sb;
    stat(file, &sb);
    size_t size;
    char *data = read_file(file, &size);
    data[size - 3] ^= 1;
    check_write_file(file, data, size);
    struct timespec times[2] = {sb.st_atim, sb.st_mtim};
    utimensat(AT_FDCWD, file, times, 0);
    CHECK_TRUE(tcache_fingerprint(files, 1, tok_path, &opts, fp, &st) && strcmp(fp, fp0) != 0,
               "data change not seen");
    data[size - 3] ^= 1;
    check_write_file(file, data, size);
    utimensat(AT_FDCWD, file, times, 0);
    CHECK_TRUE(tcache_fingerprint(files, 1, tok_path, &opts, fp, &st) && strcmp(fp, fp0) == 0,
               "restored data gives another fingerprint");
    times[1].tv_nsec = (times[1].tv_nsec + 1) % 1000000000;
    utimensat(AT_FDCWD, file, times, 0);
    CHECK_TRUE(tcache_fingerprint(files, 1, tok_path, &opts, fp, &st) && strcmp(fp, fp0) != 0,
               "mtime change not seen");
    free(data);
    /* another file list */
    const char *twice[] = {file, file};
    CHECK_TRUE(tcache_fingerprint(twice, 2, tok_path, &opts, fp, &st) && strcmp(fp, fp0) != 0,
               "file list not seen");
}

static void expect_refused(const char *dir, const char *fp, const char *reason) {
    TokCache c;
    ErrStatus st;
    int ok = tcache_open(&c, dir, fp, &st);
    CHECK_TRUE(!ok && strstr(st.msg, reason) != NULL, "want '%s', got %s '%s'", reason,
               ok ? "an open cache" : "", st.msg);
    if (ok) tcache_close(&c);
    CHECK_TRUE(c.maps == NULL && c.nparts == 0, "a refused cache keeps its state");
}

static void test_refusals(void) {
    const char *file = check_tmp_path("mixed.jsonl");
    const char *files[] = {file};
    const char *dir = check_tmp_path("cache");
    char fp[TCACHE_FP_LEN + 1], part[700];
    ErrStatus st;
    TcStats sum;
    CHECK_TRUE(tcache_fingerprint(files, 1, tok_path, &opts, fp, &st), "%s", st.msg);
    CHECK_TRUE(build(dir, files, 1, 3, 0, fp, &sum, &st), "%s", st.msg);
    TokCache c;
    CHECK_TRUE(tcache_open(&c, dir, fp, &st), "%s", st.msg);
    tcache_close(&c);
    snprintf(part, sizeof part, "%s/part-00001.tok", dir);
    size_t n;
    char *good = read_file(part, &n);
    CHECK_TRUE(good && n > 1000, "part-00001.tok: %zu bytes", n);
    if (!good) return;
    const size_t flips[] = {n / 2, n - 1, 32 /* the header's counted */};
    for (int k = 0; k < 3; k++) {
        good[flips[k]] ^= 0x10;
        check_write_file(part, good, n);
        good[flips[k]] ^= 0x10;
        expect_refused(dir, fp, "part-00001.tok: checksum mismatch");
    }
    check_write_file(part, good, n - 4);
    expect_refused(dir, fp, "part-00001.tok: ");
    expect_refused(dir, fp, "(truncated?)");
    check_write_file(part, good, 20);
    expect_refused(dir, fp, "part-00001.tok: truncated (20 bytes)");
    unlink(part);
    expect_refused(dir, fp, "part-00001.tok: cannot open");
    check_write_file(part, good, n);
    CHECK_TRUE(tcache_open(&c, dir, fp, &st), "restored: %s", st.msg);
    tcache_close(&c);
    char other[TCACHE_FP_LEN + 1];
    memcpy(other, fp, sizeof other);
    other[0] = other[0] == '0' ? '1' : '0';
    expect_refused(dir, other, "made from other data or tokenizer settings");
    expect_refused(check_tmp_path("nothing-here"), fp, "no cache");
    free(good);

    /* commit replaces an old cache, but not a directory holding other files */
    CHECK_TRUE(build(dir, files, 1, 2, 0, fp, &sum, &st) && tcache_open(&c, dir, fp, &st) &&
                   c.nparts == 2,
               "rebuild over an old cache: %s", st.msg);
    tcache_close(&c);
    const char *foreign = check_tmp_path("foreign");
    mkdir(foreign, 0755);
    char keep[700];
    snprintf(keep, sizeof keep, "%s/notes.txt", foreign);
    check_write_file(keep, "mine", 4);
    CHECK_TRUE(!build(foreign, files, 1, 1, 0, fp, &sum, &st) &&
                   strstr(st.msg, "not a cache") != NULL && access(keep, F_OK) == 0,
               "a foreign directory: '%s'", st.msg);
}

static void test_large(void) {
    const char *file = check_tmp_path("large.jsonl");
    gen_file(file, 20000, NULL, 0, "\n");
    /* one line longer than the reader's 1 MiB buffer, in the middle */
    FILE *f = fopen(file, "ab");
    fputs("{\"text\": \"", f);
    for (int i = 0; i < 3 * 1024 * 1024; i++)
        fputc(i % 7 == 6 ? ' ' : 'a' + i % 26, f);
    fputs("\"}\n", f);
    fclose(f);
    const char *more = check_tmp_path("large2.jsonl");
    gen_file(more, 5000, NULL, 0, "\n");
    const char *files[] = {file, more};
    Ref r = {0};
    ref_add_file(&r, file);
    ref_add_file(&r, more);
    const int parts[] = {1, 3, 7};
    for (int k = 0; k < 3; k++)
        check_cache(files, 2, &r, parts[k], "large");
    ref_free(&r);
}

int main(void) {
    check_tmp_init("test_tokcache");
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", check_tmp);
    ErrStatus st;
    CHECK_TRUE(bytetok_write(tok_path, &st), "%s", st.msg);
    tk = tok_load(tok_path, &st);
    CHECK_TRUE(tk != NULL, "%s", st.msg);
    if (!tk) return check_finish();

    test_parts();
    test_files();
    test_bad_lines();
    test_fingerprint();
    test_refusals();
    test_large();

    tok_free(tk);
    check_rm_rf(check_tmp);
    return check_finish();
}
