/* `shardlora tokenize --model DIR`: text on stdin to ids (or ids to text with --decode),
 * with the model's own tokenizer.json; --jsonl for one JSON value per line (tests). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/tokenizer.h"
#include "../runtime/str.h"
#include "args.h"
#include "cmds.h"

#define TOKCLI_LINE_MAX ((size_t)256 << 20) /* bytes of one --jsonl line of stdin */

static char *tokenize_read_all(FILE *f, size_t *n) {
    size_t cap = 1 << 16, len = 0;
    char *p = malloc(cap);
    for (;;) {
        if (len + 4096 > cap) {
            cap *= 2;
            p = realloc(p, cap);
        }
        SL_CHECK(p != NULL, "out of memory");
        size_t r = fread(p + len, 1, cap - len - 1, f);
        len += r;
        if (r == 0) break;
    }
    p[len] = 0;
    *n = len;
    return p;
}

/* Whitespace-separated ids from s into out; 0 on a bad number. */
static int tokenize_parse_ids(const char *s, TokIds *out) {
    char *end;
    for (;;) {
        while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
            s++;
        if (!*s) return 1;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX) return 0;
        if (out->n == out->cap) {
            out->cap = out->cap ? 2 * out->cap : 64;
            out->ids = realloc(out->ids, out->cap * sizeof *out->ids);
        }
        out->ids[out->n++] = (int32_t)v;
        s = end;
    }
}

/* JSON text written by JavaScript or Python may hold unpaired UTF-16 surrogate escapes
 * (\uD800-\uDFFF), which are not Unicode scalar values; jansson rejects them. Like a
 * JavaScript string handed to Hugging Face tokenizers (and invalid UTF-8 on stdin here),
 * each unpaired one becomes U+FFFD. In place: both escapes are 6 characters. */
static int tokcli_hex4(const char *p, unsigned *v) {
    unsigned x = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return 0;
        x = x * 16 + (unsigned)d;
    }
    *v = x;
    return 1;
}

static void tokcli_fix_surrogates(char *s, size_t n) {
    for (size_t i = 0; i + 6 <= n; i++) {
        if (s[i] != '\\') continue;
        if (s[i + 1] != 'u') {
            i++;
            continue;
        } /* another escape: skip its character */
        unsigned u, lo;
        if (!tokcli_hex4(s + i + 2, &u)) continue;
        int paired = u >= 0xD800 && u <= 0xDBFF && i + 12 <= n && s[i + 6] == '\\' &&
                     s[i + 7] == 'u' && tokcli_hex4(s + i + 8, &lo) && lo >= 0xDC00 && lo <= 0xDFFF;
        if (paired) {
            i += 11;
        } else if (u >= 0xD800 && u <= 0xDFFF) {
            memcpy(s + i + 2, "FFFD", 4);
            i += 5;
        } else {
            i += 5;
        }
    }
}

/* The model's tokenizer.json into *tk; 0, or EXIT_BAD_INPUT with the message printed. */
static int tokenize_load(const char *model, Tokenizer **tk) {
    size_t plen = strlen(model) + 32;
    char *path = malloc(plen);
    SL_CHECK(path != NULL, "out of memory");
    snprintf(path, plen, "%s/tokenizer.json", model);
    ErrStatus st;
    *tk = tok_load(path, &st);
    free(path);
    if (!*tk) {
        fprintf(stderr, "shardlora tokenize: %s\n", st.msg);
        return EXIT_BAD_INPUT;
    }
    return 0;
}

/* All of stdin as one text (or, with decode, one list of ids); the result on stdout.
 * 0 or EXIT_BAD_INPUT. */
static int tokenize_whole(Tokenizer *tk, int decode, int add_special, TokIds *ids) {
    ErrStatus st;
    int rc = 0;
    size_t n;
    char *in = tokenize_read_all(stdin, &n);
    if (decode) {
        if (!tokenize_parse_ids(in, ids)) {
            fprintf(stderr, "shardlora tokenize: stdin: expected whitespace-separated ids\n");
            rc = EXIT_BAD_INPUT;
        } else {
            size_t len;
            char *text = tok_decode(tk, ids->ids, ids->n, 0, &len);
            fwrite(text, 1, len, stdout);
            free(text);
        }
    } else if (!tok_encode(tk, in, n, add_special, ids, &st)) {
        fprintf(stderr, "shardlora tokenize: %s\n", st.msg);
        rc = EXIT_BAD_INPUT;
    } else {
        for (size_t i = 0; i < ids->n; i++)
            printf(i ? " %d" : "%d", ids->ids[i]);
        putchar('\n');
    }
    free(in);
    return rc;
}

/* --jsonl --decode, one line: the JSON array of ids v to a JSON string. 0 or EXIT_BAD_INPUT. */
static int tokenize_decode_json(Tokenizer *tk, json_t *v, long lineno, TokIds *ids) {
    int rc = 0;
    for (size_t i = 0; i < json_array_size(v) && rc == 0; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e))
            rc = EXIT_BAD_INPUT;
        else if (ids->n == ids->cap) {
            ids->cap = ids->cap ? 2 * ids->cap : 64;
            ids->ids = realloc(ids->ids, ids->cap * sizeof *ids->ids);
        }
        if (rc == 0) ids->ids[ids->n++] = (int32_t)json_integer_value(e);
    }
    if (rc) {
        fprintf(stderr, "shardlora tokenize: stdin line %ld: not an array of ids\n", lineno);
        return rc;
    }
    size_t tl;
    char *text = tok_decode(tk, ids->ids, ids->n, 0, &tl);
    json_t *js = json_stringn(text, tl);
    char *dump = json_dumps(js, JSON_ENCODE_ANY);
    puts(dump);
    free(dump);
    json_decref(js);
    free(text);
    return 0;
}

/* --jsonl: one JSON string (or with decode, array of ids) per line of stdin, one result
 * per line on stdout, up to the first bad line. 0 or EXIT_BAD_INPUT. */
static int tokenize_lines(Tokenizer *tk, int decode, int add_special, TokIds *ids) {
    ErrStatus st;
    int rc = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int cut;
    while (rc == 0 && (len = str_getline(&line, &cap, stdin, TOKCLI_LINE_MAX, &cut)) >= 0) {
        lineno++;
        if (cut) {
            fprintf(stderr, "shardlora tokenize: stdin line %ld: %lld bytes, longer than %zu MiB\n",
                    lineno, (long long)len, TOKCLI_LINE_MAX >> 20);
            rc = EXIT_BAD_INPUT;
            break;
        }
        json_error_t je;
        tokcli_fix_surrogates(line, (size_t)len);
        json_t *v = json_loadb(line, (size_t)len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        ids->n = 0;
        if (!decode && json_is_string(v)) {
            if (!tok_encode(tk, json_string_value(v), json_string_length(v), add_special, ids,
                            &st)) {
                fprintf(stderr, "shardlora tokenize: stdin line %ld: %s\n", lineno, st.msg);
                rc = EXIT_BAD_INPUT;
            } else {
                putchar('[');
                for (size_t i = 0; i < ids->n; i++)
                    printf(i ? ",%d" : "%d", ids->ids[i]);
                fputs("]\n", stdout);
            }
        } else if (decode && json_is_array(v)) {
            rc = tokenize_decode_json(tk, v, lineno, ids);
        } else {
            fprintf(stderr, "shardlora tokenize: stdin line %ld: expected a JSON %s\n", lineno,
                    decode ? "array of ids" : "string");
            rc = EXIT_BAD_INPUT;
        }
        json_decref(v);
    }
    free(line);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL;
    int no_special = 0, decode = 0, jsonl = 0;
    /* one option per line: name, type, destination, metavar, help, required, seen */
    // clang-format off
    ArgSpec specs[] = {
        {"model", ARG_STR, &model, "DIR", "model directory holding tokenizer.json", 1, 0},
        {"no-special", ARG_BOOL, &no_special, NULL,
         "do not add BOS/EOS (special tokens written in the text are still matched)", 0, 0},
        {"decode", ARG_BOOL, &decode, NULL, "stdin holds ids; print their text", 0, 0},
        {"jsonl", ARG_BOOL, &jsonl, NULL,
         "one JSON string per line in, one JSON array of ids per line out (reversed with "
         "--decode)", 0, 0},
    };
    // clang-format on
    int ns = (int)(sizeof specs / sizeof specs[0]);
    const char *usage = "shardlora tokenize --model DIR [--no-special] [--decode] [--jsonl]";
    const char *about = "Encode stdin (all of it, one text) to ids printed on one line, or with "
                        "--decode print the text of the ids on stdin.";
    int rc;
    if (!args_command(specs, ns, argc, argv, 2, "tokenize", usage, about, &rc)) return rc;
    Tokenizer *tk;
    rc = tokenize_load(model, &tk);
    if (rc) return rc;
    TokIds ids = {0};
    rc = jsonl ? tokenize_lines(tk, decode, !no_special, &ids)
               : tokenize_whole(tk, decode, !no_special, &ids);
    tok_ids_free(&ids);
    tok_free(tk);
    return rc;
}
