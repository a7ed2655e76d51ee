/* The byte-level tokenizer.json writer (see bytetok.h). */
#include "bytetok.h"

#include <jansson.h>

#include "../../io/afile.h"
#include "../../io/tokenizer.h"

static json_t *bytetok_bytelevel_obj(int add_prefix_space) {
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("ByteLevel"));
    json_object_set_new(o, "add_prefix_space", json_boolean(add_prefix_space));
    json_object_set_new(o, "trim_offsets", json_true());
    json_object_set_new(o, "use_regex", json_true());
    return o;
}

int bytetok_write(const char *path, ErrStatus *st) {
    err_status_ok(st);
    static const char *specials[] = {"<s>", "</s>", "<pad>"};
    json_t *root = json_object();
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "truncation", json_null());
    json_object_set_new(root, "padding", json_null());
    json_t *added = json_array();
    for (int i = 0; i < 3; i++) {
        json_t *t = json_object();
        json_object_set_new(t, "id", json_integer(256 + i));
        json_object_set_new(t, "content", json_string(specials[i]));
        json_object_set_new(t, "single_word", json_false());
        json_object_set_new(t, "lstrip", json_false());
        json_object_set_new(t, "rstrip", json_false());
        json_object_set_new(t, "normalized", json_false());
        json_object_set_new(t, "special", json_true());
        json_array_append_new(added, t);
    }
    json_object_set_new(root, "added_tokens", added);
    json_object_set_new(root, "normalizer", json_null());
    json_object_set_new(root, "pre_tokenizer", bytetok_bytelevel_obj(0));
    json_object_set_new(root, "post_processor", bytetok_bytelevel_obj(0));
    json_object_set_new(root, "decoder", bytetok_bytelevel_obj(0));
    json_t *model = json_object();
    json_object_set_new(model, "type", json_string("BPE"));
    json_object_set_new(model, "dropout", json_null());
    json_object_set_new(model, "unk_token", json_null());
    json_object_set_new(model, "continuing_subword_prefix", json_null());
    json_object_set_new(model, "end_of_word_suffix", json_null());
    json_object_set_new(model, "fuse_unk", json_false());
    json_object_set_new(model, "byte_fallback", json_false());
    json_t *vocab = json_object();
    for (int b = 0; b < 256; b++) {
        char u[4];
        tok_byte_char(b, u);
        json_object_set_new(vocab, u, json_integer(b));
    }
    for (int i = 0; i < 3; i++)
        json_object_set_new(vocab, specials[i], json_integer(256 + i));
    json_object_set_new(model, "vocab", vocab);
    json_object_set_new(model, "merges", json_array());
    json_object_set_new(root, "model", model);
    int ok = afile_write_json(path, root, JSON_INDENT(1) | JSON_PRESERVE_ORDER, st);
    json_decref(root);
    return ok;
}
