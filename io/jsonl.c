/* Pre-tokenised JSONL reader (see jsonl.h). */
#include "jsonl.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t cap, captok;
} JsonlGrow;

static void jsonl_reserve(JsonlTokens *d, JsonlGrow *g, int64_t nseq, int64_t ntok) {
    if (nseq + 1 > g->cap) {
        g->cap = g->cap ? 2 * g->cap : 1024;
        while (g->cap < nseq + 1) g->cap *= 2;
        d->off = realloc(d->off, (size_t)g->cap * sizeof *d->off);
    }
    if (ntok > g->captok || !d->ids) {
        g->captok = g->captok ? 2 * g->captok : 65536;
        while (g->captok < ntok) g->captok *= 2;
        d->ids = realloc(d->ids, (size_t)g->captok * sizeof *d->ids);
        d->labels = realloc(d->labels, (size_t)g->captok * sizeof *d->labels);
        d->pos = realloc(d->pos, (size_t)g->captok * sizeof *d->pos);
    }
    SL_CHECK(d->off && d->ids && d->labels && d->pos, "out of memory");
}

/* Reads an int array field into dst (n entries); returns its length or -1 with st set. */
static int64_t jsonl_int_array(json_t *arr, const char *path, int64_t line, const char *field,
                               int64_t *dst, int64_t n, ErrStatus *st) {
    if (!json_is_array(arr)) {
        err_status_set(st, "%s:%lld: \"%s\" must be an array of integers", path, (long long)line,
                       field);
        return -1;
    }
    int64_t len = (int64_t)json_array_size(arr);
    if (dst && len != n) {
        err_status_set(st, "%s:%lld: \"%s\" has %lld entries but \"input_ids\" has %lld", path,
                       (long long)line, field, (long long)len, (long long)n);
        return -1;
    }
    for (int64_t i = 0; dst && i < len; i++) {
        json_t *v = json_array_get(arr, (size_t)i);
        if (!json_is_integer(v)) {
            err_status_set(st, "%s:%lld: \"%s\"[%lld] is not an integer", path, (long long)line,
                           field, (long long)i);
            return -1;
        }
        dst[i] = (int64_t)json_integer_value(v);
    }
    return len;
}

int jsonl_tokens_load(JsonlTokens *d, const char *path, int64_t vocab, ErrStatus *st) {
    memset(d, 0, sizeof *d);
    err_status_ok(st);
    FILE *f = fopen(path, "r");
    if (!f) return err_status_set(st, "%s: cannot open: %s", path, strerror(errno));
    JsonlGrow g = {0, 0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int64_t lineno = 0;
    int ok = 1;
    int64_t *tmp = NULL;
    int64_t tmpcap = 0;
    jsonl_reserve(d, &g, 0, 0);
    d->off[0] = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        int blank = 1;
        for (ssize_t i = 0; i < len; i++)
            if (line[i] != ' ' && line[i] != '\t' && line[i] != '\n' && line[i] != '\r') blank = 0;
        if (blank) continue;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, 0, &je);
        if (!o) {
            ok = err_status_set(st, "%s:%lld: not valid JSON (column %d: %s)", path,
                                (long long)lineno, je.column, je.text);
            break;
        }
        if (!json_is_object(o)) {
            json_decref(o);
            ok = err_status_set(st, "%s:%lld: expected a JSON object", path, (long long)lineno);
            break;
        }
        json_t *ids = json_object_get(o, "input_ids");
        if (!ids) {
            json_decref(o);
            ok = err_status_set(st,
                                "%s:%lld: missing \"input_ids\" (pre-tokenised data needs "
                                "{\"input_ids\": [...]})",
                                path, (long long)lineno);
            break;
        }
        int64_t n = jsonl_int_array(ids, path, lineno, "input_ids", NULL, 0, st);
        if (n < 0) {
            json_decref(o);
            ok = 0;
            break;
        }
        if (n > tmpcap) {
            tmpcap = n * 2;
            tmp = realloc(tmp, (size_t)tmpcap * sizeof *tmp);
            SL_CHECK(tmp, "out of memory");
        }
        int64_t base = d->ntok;
        jsonl_reserve(d, &g, d->nseq + 1, base + n);
        if (jsonl_int_array(ids, path, lineno, "input_ids", tmp, n, st) < 0) {
            json_decref(o);
            ok = 0;
            break;
        }
        for (int64_t i = 0; i < n && ok; i++) {
            if (tmp[i] < 0 || tmp[i] >= vocab)
                ok = err_status_set(st,
                                    "%s:%lld: \"input_ids\"[%lld] = %lld is outside the "
                                    "vocabulary [0, %lld)",
                                    path, (long long)lineno, (long long)i, (long long)tmp[i],
                                    (long long)vocab);
            d->ids[base + i] = (int32_t)tmp[i];
        }
        json_t *lab = json_object_get(o, "labels");
        if (ok && lab) {
            if (jsonl_int_array(lab, path, lineno, "labels", d->labels + base, n, st) < 0) ok = 0;
            for (int64_t i = 0; i < n && ok; i++)
                if (d->labels[base + i] != -100 && (d->labels[base + i] < 0 || d->labels[base + i] >= vocab))
                    ok = err_status_set(st,
                                        "%s:%lld: \"labels\"[%lld] = %lld is neither -100 nor in "
                                        "the vocabulary [0, %lld)",
                                        path, (long long)lineno, (long long)i,
                                        (long long)d->labels[base + i], (long long)vocab);
        } else if (ok) {
            for (int64_t i = 0; i < n; i++) d->labels[base + i] = d->ids[base + i];
        }
        json_t *pos = json_object_get(o, "position_ids");
        if (ok && pos) {
            if (jsonl_int_array(pos, path, lineno, "position_ids", d->pos + base, n, st) < 0) ok = 0;
            for (int64_t i = 0; i < n && ok; i++)
                if (d->pos[base + i] < 0)
                    ok = err_status_set(st, "%s:%lld: \"position_ids\"[%lld] is negative", path,
                                        (long long)lineno, (long long)i);
        } else if (ok) {
            for (int64_t i = 0; i < n; i++) d->pos[base + i] = i;
        }
        json_decref(o);
        if (!ok) break;
        if (n == 0) {
            ok = err_status_set(st, "%s:%lld: \"input_ids\" is empty", path, (long long)lineno);
            break;
        }
        d->ntok += n;
        d->nseq++;
        d->off[d->nseq] = d->ntok;
    }
    if (ok && ferror(f)) ok = err_status_set(st, "%s: read error: %s", path, strerror(errno));
    if (ok && d->nseq == 0) ok = err_status_set(st, "%s: no sequences (the file is empty)", path);
    free(line);
    free(tmp);
    fclose(f);
    if (!ok) jsonl_tokens_free(d);
    return ok;
}

void jsonl_tokens_free(JsonlTokens *d) {
    free(d->off);
    free(d->ids);
    free(d->labels);
    free(d->pos);
    memset(d, 0, sizeof *d);
}

void jsonl_tokens_row(const JsonlTokens *d, int64_t i, int64_t T, int32_t *ids, int64_t *labels,
                      int64_t *pos) {
    const int64_t o = d->off[i], n = d->off[i + 1] - o;
    const int64_t m = n < T ? n : T;
    for (int64_t t = 0; t < m; t++) {
        ids[t] = d->ids[o + t];
        labels[t] = d->labels[o + t];
        pos[t] = d->pos[o + t];
    }
    int64_t next = m ? pos[m - 1] + 1 : 0;
    for (int64_t t = m; t < T; t++) {
        ids[t] = 0;
        labels[t] = -100;
        pos[t] = next++;
    }
}
