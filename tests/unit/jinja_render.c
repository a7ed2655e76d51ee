/* Test driver of the Jinja engine (not a test itself): renders TEMPLATE_FILE with the
 * variables of CONTEXT_JSON_FILE and prints the text exactly (no newline added), or with
 * --spans the JSON object {"text": ..., "generation": [[start, end], ...]} (byte offsets).
 * --now EPOCH fixes strftime_now's time. On error: "error: KIND: message" on stderr, exit 1
 * (KIND: syntax, unsupported, raised, runtime, limit). tests/reference/jinja_oracle.py is
 * its Python twin. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/jinja.h"

static char *slurp(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    size_t cap = 1 << 16, n = 0, k;
    char *buf = malloc(cap);
    while (buf && (k = fread(buf + n, 1, cap - n, fp)) > 0) {
        n += k;
        if (n == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    fclose(fp);
    *len = n;
    return buf;
}

static const char *kind_name(JinjaErr k) {
    switch (k) {
    case JINJA_ERR_SYNTAX:
        return "syntax";
    case JINJA_ERR_UNSUPPORTED:
        return "unsupported";
    case JINJA_ERR_RAISED:
        return "raised";
    case JINJA_ERR_RUNTIME:
        return "runtime";
    case JINJA_ERR_LIMIT:
        return "limit";
    default:
        return "ok";
    }
}

int main(int argc, char **argv) {
    const char *tpath = NULL, *cpath = NULL;
    int spans = 0;
    JinjaLimits lim = {0, 0, -1};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--spans") == 0)
            spans = 1;
        else if (strcmp(argv[i], "--now") == 0 && i + 1 < argc)
            lim.now = strtoll(argv[++i], NULL, 10);
        else if (!tpath)
            tpath = argv[i];
        else if (!cpath)
            cpath = argv[i];
        else
            tpath = NULL, i = argc;
    }
    if (!tpath || !cpath) {
        fprintf(stderr, "usage: jinja_render TEMPLATE_FILE CONTEXT_JSON_FILE [--now EPOCH] "
                        "[--spans]\n");
        return 2;
    }
    size_t len;
    char *src = slurp(tpath, &len);
    if (!src) {
        fprintf(stderr, "cannot read %s\n", tpath);
        return 2;
    }
    json_error_t jerr;
    json_t *vars = json_load_file(cpath, JSON_DECODE_ANY, &jerr);
    if (!vars) {
        fprintf(stderr, "%s: %s\n", cpath, jerr.text);
        free(src);
        return 2;
    }
    JinjaErr kind;
    ErrStatus st;
    JinjaOutput out;
    int rc = 0;
    JinjaTemplate *t = jinja_compile(src, len, &kind, &st);
    if (!t || !jinja_render(t, vars, &lim, &out, &kind, &st)) {
        fprintf(stderr, "error: %s: %s\n", kind_name(kind), st.msg);
        rc = 1;
    } else {
        if (spans) {
            json_t *o = json_object(), *g = json_array();
            json_object_set_new(o, "text", json_stringn(out.text, out.len));
            for (size_t i = 0; i < out.ngen; i++)
                json_array_append_new(g, json_pack("[I, I]", (json_int_t)out.gen[i].start,
                                                   (json_int_t)out.gen[i].end));
            json_object_set_new(o, "generation", g);
            char *s = json_dumps(o, JSON_COMPACT);
            fputs(s, stdout);
            free(s);
            json_decref(o);
        } else {
            fwrite(out.text, 1, out.len, stdout);
        }
        jinja_output_free(&out);
    }
    jinja_free(t);
    json_decref(vars);
    free(src);
    return rc;
}
