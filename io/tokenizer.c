/* tokenizer.json reading, encoding and decoding (see tokenizer.h). The byte-to-unicode
 * table is GPT-2's (Radford et al. 2019, encoder.py bytes_to_unicode): printable Latin-1
 * bytes map to themselves, the others to U+0100 upwards in byte order. The pipeline follows
 * the Hugging Face tokenizers docs ("The tokenization pipeline"): added tokens are split out
 * first, then normalizer, pre-tokenizer, model (BPE), post-processor; decoding runs the
 * decoder chain over the tokens' strings. BPE merges in the order of HF's word.rs (lowest
 * rank, leftmost on ties): a rescan for short words, a heap over a linked list for long ones;
 * results per word are cached. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <jansson.h>
#include <limits.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "../runtime/str.h"
#include "afile.h"

/* The largest Hub tokenizer.json files are tens of MB; a GB is not a tokenizer. */
#define TOK_MAX_FILE ((size_t)1 << 30)

static int tok_byte_printable(int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

void tok_byte_char(int b, char out[4]) {
    unsigned cp;
    if (tok_byte_printable(b)) {
        cp = (unsigned)b;
    } else {
        unsigned n = 0;
        for (int x = 0; x < b; x++)
            if (!tok_byte_printable(x)) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

/* ==== reading and encoding ============================================================ */

/* ---- small growable buffers and hashing ---- */

typedef struct {
    char *p;
    size_t n, cap;
} TokBuf;

static void tok_buf_reserve(TokBuf *b, size_t extra) {
    if (b->n + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra)
        cap *= 2;
    b->p = realloc(b->p, cap);
    SL_CHECK(b->p != NULL, "out of memory (%zu bytes)", cap);
    b->cap = cap;
}

static void tok_buf_put(TokBuf *b, const void *s, size_t n) {
    tok_buf_reserve(b, n + 1);
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void tok_ids_push(TokIds *o, int32_t id) {
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 64;
        o->ids = realloc(o->ids, o->cap * sizeof *o->ids);
        SL_CHECK(o->ids != NULL, "out of memory");
    }
    o->ids[o->n++] = id;
}

void tok_ids_free(TokIds *ids) {
    free(ids->ids);
    ids->ids = NULL;
    ids->n = ids->cap = 0;
}

/* 64-bit FNV-1a then a final mix (words are short; the mix spreads the low bits). */
static uint64_t tok_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 and *bad = bytes of the maximal
 * invalid subpart (Unicode 15 sec. 3.9 "U+FFFD substitution of maximal subparts", which is
 * what Rust's from_utf8_lossy and the WHATWG decoder do). */
static size_t tok_utf8_seq(const unsigned char *s, size_t n, size_t *bad) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    /* well-formed lead bytes: their sequence length and the range of the second byte
     * (Unicode 15 Table 3-7); later bytes are always 80..BF */
    static const struct {
        unsigned char c0, c1, len, lo, hi;
    } lead[] = {{0xC2, 0xDF, 2, 0x80, 0xBF}, {0xE0, 0xE0, 3, 0xA0, 0xBF},
                {0xE1, 0xEC, 3, 0x80, 0xBF}, {0xED, 0xED, 3, 0x80, 0x9F},
                {0xEE, 0xEF, 3, 0x80, 0xBF}, {0xF0, 0xF0, 4, 0x90, 0xBF},
                {0xF1, 0xF3, 4, 0x80, 0xBF}, {0xF4, 0xF4, 4, 0x80, 0x8F}};
    size_t f = 0, nlead = sizeof lead / sizeof lead[0];
    while (f < nlead && !(c >= lead[f].c0 && c <= lead[f].c1))
        f++;
    if (f == nlead) {
        *bad = 1;
        return 0;
    }
    const size_t len = lead[f].len;
    const unsigned lo = lead[f].lo, hi = lead[f].hi;
    for (size_t k = 1; k < len; k++) {
        if (k >= n) {
            *bad = k;
            return 0;
        }
        unsigned d = s[k];
        unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (d < l || d > h) {
            *bad = k;
            return 0;
        }
    }
    return len;
}

/* Appends s[0..n) to b with each maximal invalid subpart replaced by U+FFFD. Returns 1
 * if s was valid. */
static int tok_utf8_lossy(TokBuf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, start = 0;
    int valid = 1;
    tok_buf_reserve(b, n + 1);
    while (i < n) {
        size_t bad = 0, l = tok_utf8_seq(u + i, n - i, &bad);
        if (l) {
            i += l;
            continue;
        }
        valid = 0;
        tok_buf_put(b, s + start, i - start);
        tok_buf_put(b, "\xEF\xBF\xBD", 3);
        i += bad;
        start = i;
    }
    tok_buf_put(b, s + start, n - start);
    return valid;
}

static int tok_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t bad, l = tok_utf8_seq(u + i, n - i, &bad);
        if (!l) return 0;
        i += l;
    }
    return 1;
}

/* Decodes the (valid) code point at s, returns its length. */
static size_t tok_utf8_cp(const char *s, size_t n, int32_t *cp) {
    utf8proc_int32_t c;
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &c);
    if (l <= 0) {
        *cp = 0xFFFD;
        return 1;
    }
    *cp = c;
    return (size_t)l;
}

/* Rust's char::is_whitespace is Unicode White_Space. */
static int tok_is_space_cp(int32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* HF added_vocabulary.rs: a word character is alphanumeric or '_'. */
static int tok_is_word_cp(int32_t c) {
    if (c == '_') return 1;
    utf8proc_category_t k = utf8proc_category(c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
           (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

/* Rust's char::is_numeric: general category Nd, Nl or No. */
static int tok_is_numeric_cp(int32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

/* Code point ending just before s[end] (s[0..end) valid UTF-8). */
static int32_t tok_cp_before(const char *s, size_t end) {
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    int32_t c;
    tok_utf8_cp(s + i, end - i, &c);
    return c;
}

/* ---- the tokenizer ---- */

typedef enum { TOK_NORM_NFC, TOK_NORM_PREPEND, TOK_NORM_REPLACE } TokNormKind;
typedef struct {
    TokNormKind kind;
    char *a, *b; /* Prepend: a; Replace: a -> b (a is the String pattern) */
    size_t alen, blen;
    pcre2_code *re; /* Replace with a {"Regex": ...} pattern, else NULL */
    pcre2_match_data *md;
} TokNorm;

typedef enum { TOK_PRE_SPLIT, TOK_PRE_BYTELEVEL, TOK_PRE_METASPACE, TOK_PRE_DIGITS } TokPreKind;
/* HF SplitDelimiterBehavior. */
typedef enum {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_PREV,
    TOK_SPLIT_MERGED_NEXT,
    TOK_SPLIT_CONTIGUOUS
} TokSplitBehavior;
typedef enum { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER } TokPrependScheme;

typedef struct {
    TokPreKind kind;
    pcre2_code *re; /* Split (Regex) and ByteLevel use_regex */
    pcre2_match_data *md;
    char *lit; /* Split (String) pattern; Metaspace replacement */
    size_t litlen;
    TokSplitBehavior behavior;
    int invert;
    int add_prefix_space;    /* ByteLevel */
    TokPrependScheme scheme; /* Metaspace */
    int split;               /* Metaspace */
    int individual_digits;   /* Digits */
} TokPre;

typedef enum {
    TOK_DEC_BYTELEVEL,
    TOK_DEC_REPLACE,
    TOK_DEC_BYTEFALLBACK,
    TOK_DEC_FUSE,
    TOK_DEC_STRIP,
    TOK_DEC_METASPACE
} TokDecKind;
typedef struct {
    TokDecKind kind;
    char *a, *b; /* Replace a -> b; Strip content a; Metaspace replacement a */
    size_t alen, blen;
    pcre2_code *re; /* Replace with a {"Regex": ...} pattern, else NULL */
    pcre2_match_data *md;
    int start, stop;
    TokPrependScheme scheme;
} TokDec;

typedef struct {
    char *content;
    size_t len;
    char *pat; /* what is matched: content, or for normalized tokens the normalised content */
    size_t patlen;
    int32_t id;
    int special, lstrip, rstrip, normalized, single_word;
} TokAdded;

/* Added tokens of one kind (normalized or not), bucketed by their pattern's first byte,
 * longest first. */
typedef struct {
    int32_t *idx; /* indices into Tokenizer.added */
    size_t n;
    size_t first[257]; /* idx[first[b]..first[b+1]) start with byte b */
} TokAddedSet;

typedef struct {
    uint64_t key; /* a << 32 | b, 0 empty (ids are stored + 1) */
    int32_t rank, merged;
} TokMerge;

/* A merge by its rank: the pair (a, b) and the merged id; a = -1 for a rank that lost to a
 * later duplicate of its pair. */
typedef struct {
    int32_t a, b, merged;
} TokMergeRank;

typedef struct {
    uint32_t off, len; /* key bytes in Tokenizer.strs */
    int32_t id;
} TokVocabSlot;

/* One symbol of a word in the heap BPE: a doubly linked list over the initial symbols; a
 * symbol merged into its left neighbour gets id -1. */
typedef struct {
    int32_t id, prev, next;
} TokSym;

/* Match spans (start, end pairs) of one pre-tokenizer over one piece. */
typedef struct {
    size_t *m;
    size_t n, cap;
} TokSpans;

typedef struct {
    uint64_t hash;                   /* 0 = empty */
    uint32_t koff, klen, voff, vlen; /* key in cache_keys, ids in cache_ids */
} TokCacheSlot;

#define TOK_CACHE_WORD_MAX 256
#define TOK_META "\xE2\x96\x81" /* U+2581, SentencePiece's space */
#define TOK_CACHE_SLOTS (1u << 18)

struct Tokenizer {
    char *path;
    /* vocab: string -> id (open addressing) and id -> string */
    TokBuf strs;
    TokVocabSlot *vslots;
    size_t vcap;
    int32_t nid;               /* vocab size: 1 + max id */
    int64_t *id_off;           /* [nid] offset of the token's string in strs, -1 none */
    uint32_t *id_len;          /* [nid] */
    unsigned char *id_special; /* [nid] 1 if an added special token */
    /* merges: (a, b) -> (rank, merged id) */
    TokMerge *mslots;
    size_t mcap;
    TokMergeRank *by_rank; /* [nmerges] */
    size_t nmerges;
    /* model options */
    int ignore_merges, byte_fallback, fuse_unk;
    int meta_cut;         /* long words may be cut before a ▁ run (see tok_word) */
    int32_t unk_id;       /* -1 none */
    int32_t byte_id[256]; /* byte-level: id of each byte's GPT-2 character, -1 missing */
    char byte_u8[256][3]; /* UTF-8 of each byte's GPT-2 character, byte_u8len[b] bytes */
    unsigned char byte_u8len[256];
    int32_t ascii_id[128]; /* not byte-level: id of each one-byte character, -1 missing */
    int32_t fb_id[256];    /* byte_fallback: id of <0xNN>, -1 missing */
    int bytelevel;         /* a ByteLevel pre-tokenizer: the model sees bytes as GPT-2 chars */
    /* pipeline */
    TokAdded *added;
    size_t nadded;
    TokAddedSet set_raw, set_norm;
    TokNorm *norm;
    size_t nnorm;
    TokPre *pre;
    size_t npre;
    int32_t *post_before, *post_after; /* TemplateProcessing single: ids around A */
    size_t npost_before, npost_after;
    TokDec *dec;
    size_t ndec;
    int has_decoder;
    /* scratch (why the tokenizer is not thread-safe) */
    TokBuf s_in, s_norm, s_norm2, s_pre, s_word;
    uint32_t *pieces[2]; /* (off, len) pairs into s_pre */
    size_t piece_cap[2];
    TokSpans spans; /* matches of one pre-tokenizer in one piece */
    int32_t *nfc;   /* [nfc_cap] code points for NFC (utf8proc works in place) */
    size_t nfc_cap;
    int32_t *sym, *rank; /* [sym_cap] symbols of a word, rank of (sym[i], sym[i+1]) */
    size_t sym_cap;
    TokSym *hsym;   /* [hsym_cap] heap BPE: the symbols as a linked list */
    uint64_t *heap; /* [2 * hsym_cap] heap BPE: rank << 32 | position, a min-heap */
    size_t hsym_cap;
    /* word cache: pre-token bytes -> ids */
    TokCacheSlot *cache;
    size_t cache_used;
    TokBuf cache_keys;
    int32_t *cache_ids;
    size_t cache_nids, cache_ids_cap;
};

int32_t tok_vocab_size(const Tokenizer *tk) {
    return tk->nid;
}

static int32_t tok_vocab_get(const Tokenizer *tk, const char *s, size_t n) {
    size_t mask = tk->vcap - 1, i = tok_hash(s, n) & mask;
    for (;; i = (i + 1) & mask) {
        const TokVocabSlot *v = &tk->vslots[i];
        if (v->id < 0) return -1;
        if (v->len == n && memcmp(tk->strs.p + v->off, s, n) == 0) return v->id;
    }
}

int32_t tok_token_id(const Tokenizer *tk, const char *token) {
    size_t n = strlen(token);
    for (size_t i = 0; i < tk->nadded; i++)
        if (tk->added[i].len == n && memcmp(tk->added[i].content, token, n) == 0)
            return tk->added[i].id;
    return tok_vocab_get(tk, token, n);
}

void tok_post_counts(const Tokenizer *tk, size_t *before, size_t *after) {
    *before = tk->npost_before;
    *after = tk->npost_after;
}

/* Inserts s -> id; returns 0 if s is already there. */
static int tok_vocab_put(Tokenizer *tk, const char *s, size_t n, int32_t id) {
    size_t mask = tk->vcap - 1, i = tok_hash(s, n) & mask;
    for (;; i = (i + 1) & mask) {
        TokVocabSlot *v = &tk->vslots[i];
        if (v->id < 0) break;
        if (v->len == n && memcmp(tk->strs.p + v->off, s, n) == 0) return 0;
    }
    tk->vslots[i].off = (uint32_t)tk->strs.n;
    tk->vslots[i].len = (uint32_t)n;
    tk->vslots[i].id = id;
    tok_buf_put(&tk->strs, s, n);
    return 1;
}

static const TokMerge *tok_merge_get(const Tokenizer *tk, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)(b + 1);
    size_t mask = tk->mcap - 1, i = str_mix64(key) & mask;
    for (;; i = (i + 1) & mask) {
        const TokMerge *m = &tk->mslots[i];
        if (m->key == key) return m;
        if (m->key == 0) return NULL;
    }
}

/* ---- loading ---- */

static void tok_normalize(Tokenizer *tk, const char *s, size_t n, TokBuf *out);

static int tok_err(ErrStatus *st, const Tokenizer *tk, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int tok_err(ErrStatus *st, const Tokenizer *tk, const char *fmt, ...) {
    char m[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return err_status_set(st, "%s: %s", tk->path, m);
}

static char *tok_strndup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    SL_CHECK(p != NULL, "out of memory");
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

static int tok_json_bool(json_t *o, const char *key, int dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* o's "type" string, or "" */
static const char *tok_type(json_t *o) {
    const char *t = json_string_value(json_object_get(o, "type"));
    return t ? t : "";
}

/* A {"String": s} pattern into *out; 0 if it is a Regex (caller decides) or malformed. */
static int tok_string_pattern(json_t *pat, char **out, size_t *len) {
    json_t *s = json_object_get(pat, "String");
    if (!json_is_string(s)) return 0;
    *out = tok_strndup(json_string_value(s), json_string_length(s));
    *len = json_string_length(s);
    return 1;
}

static int tok_compile(Tokenizer *tk, pcre2_code **re, pcre2_match_data **md, const char *pat,
                       size_t len, const char *where, ErrStatus *st) {
    int ec;
    PCRE2_SIZE eo;
    /* UCP: \s, \w, \d and POSIX classes use Unicode properties, as Rust's onig does. */
    *re = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!*re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return tok_err(st, tk, "%s: regex does not compile at offset %zu: %s", where, (size_t)eo,
                       (char *)msg);
    }
    pcre2_jit_compile(*re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    *md = pcre2_match_data_create_from_pattern(*re, NULL);
    SL_CHECK(*md != NULL, "out of memory");
    return 1;
}

/* GPT-2's pre-tokenizer regex (encoder.py), used by ByteLevel with use_regex. */
static const char tok_gpt2_re[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Metaspace's prepend_scheme (HF metaspace.rs deserialisation): "always" by default; the
 * legacy add_prefix_space = false means "never" and contradicts any other prepend_scheme. */
static int tok_parse_scheme(Tokenizer *tk, json_t *o, TokPrependScheme *s, const char *where,
                            ErrStatus *st) {
    json_t *ps = json_object_get(o, "prepend_scheme");
    int given = ps && !json_is_null(ps);
    *s = TOK_PREPEND_ALWAYS;
    if (given) {
        const char *v = json_string_value(ps);
        if (v && strcmp(v, "always") == 0)
            *s = TOK_PREPEND_ALWAYS;
        else if (v && strcmp(v, "first") == 0)
            *s = TOK_PREPEND_FIRST;
        else if (v && strcmp(v, "never") == 0)
            *s = TOK_PREPEND_NEVER;
        else
            return tok_err(st, tk, "%s.prepend_scheme: unknown value '%s'", where, v ? v : "?");
    }
    if (json_is_false(json_object_get(o, "add_prefix_space"))) {
        if (given && *s != TOK_PREPEND_NEVER)
            return tok_err(st, tk, "%s: add_prefix_space false contradicts prepend_scheme", where);
        *s = TOK_PREPEND_NEVER;
    }
    return 1;
}

/* A Replace pattern (normalizer or decoder): {"String": s} into *a, or {"Regex": r} compiled
 * into *re (the String form is matched literally, as HF escapes it). */
static int tok_replace_pattern(Tokenizer *tk, json_t *o, char **a, size_t *alen, pcre2_code **re,
                               pcre2_match_data **md, const char *where, ErrStatus *st) {
    json_t *pat = json_object_get(o, "pattern"), *r = json_object_get(pat, "Regex");
    if (json_is_string(r)) {
        char sub[300];
        snprintf(sub, sizeof sub, "%s.pattern.Regex", where);
        return tok_compile(tk, re, md, json_string_value(r), json_string_length(r), sub, st);
    }
    if (!tok_string_pattern(pat, a, alen))
        return tok_err(st, tk, "%s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", where);
    if (*alen == 0) return tok_err(st, tk, "%s.pattern: empty", where);
    return 1;
}

/* The loader of one tokenizer component (normalizer, pre-tokenizer, decoder, post-processor). */
typedef int (*TokLoadFn)(Tokenizer *tk, json_t *o, const char *where, ErrStatus *st);

/* A "Sequence" component: each element of o[key] through load, in order. */
static int tok_load_sequence(Tokenizer *tk, json_t *o, const char *key, const char *where,
                             TokLoadFn load, ErrStatus *st) {
    json_t *arr = json_object_get(o, key);
    if (!json_is_array(arr)) return tok_err(st, tk, "%s.%s: missing", where, key);
    char sub[256];
    for (size_t i = 0; i < json_array_size(arr); i++) {
        snprintf(sub, sizeof sub, "%s.%s[%zu]", where, key, i);
        if (!load(tk, json_array_get(arr, i), sub, st)) return 0;
    }
    return 1;
}

static int tok_load_normalizer(Tokenizer *tk, json_t *o, const char *where, ErrStatus *st) {
    if (json_is_null(o) || !o) return 1;
    const char *t = tok_type(o);
    if (strcmp(t, "Sequence") == 0)
        return tok_load_sequence(tk, o, "normalizers", where, tok_load_normalizer, st);
    tk->norm = realloc(tk->norm, (tk->nnorm + 1) * sizeof *tk->norm);
    SL_CHECK(tk->norm != NULL, "out of memory");
    TokNorm *n = &tk->norm[tk->nnorm];
    memset(n, 0, sizeof *n);
    tk->nnorm++; /* counted now, so tok_free frees what a refused entry allocated */
    if (strcmp(t, "NFC") == 0) {
        n->kind = TOK_NORM_NFC;
    } else if (strcmp(t, "Prepend") == 0) {
        json_t *s = json_object_get(o, "prepend");
        if (!json_is_string(s)) return tok_err(st, tk, "%s.prepend: missing", where);
        n->kind = TOK_NORM_PREPEND;
        n->alen = json_string_length(s);
        n->a = tok_strndup(json_string_value(s), n->alen);
    } else if (strcmp(t, "Replace") == 0) {
        json_t *c = json_object_get(o, "content");
        n->kind = TOK_NORM_REPLACE;
        if (!json_is_string(c)) return tok_err(st, tk, "%s.content: missing", where);
        if (!tok_replace_pattern(tk, o, &n->a, &n->alen, &n->re, &n->md, where, st)) return 0;
        n->blen = json_string_length(c);
        n->b = tok_strndup(json_string_value(c), n->blen);
    } else {
        return tok_err(st, tk, "unsupported normalizer type '%s' (%s)", t, where);
    }
    return 1;
}

static const char *tok_behaviors[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                      "Contiguous"};

static int tok_load_pre(Tokenizer *tk, json_t *o, const char *where, ErrStatus *st) {
    if (json_is_null(o) || !o) return 1;
    const char *t = tok_type(o);
    char sub[256];
    if (strcmp(t, "Sequence") == 0)
        return tok_load_sequence(tk, o, "pretokenizers", where, tok_load_pre, st);
    if (tk->bytelevel)
        return tok_err(st, tk, "unsupported: pre_tokenizer '%s' after ByteLevel (%s)", t, where);
    tk->pre = realloc(tk->pre, (tk->npre + 1) * sizeof *tk->pre);
    TokPre *p = &tk->pre[tk->npre];
    memset(p, 0, sizeof *p);
    tk->npre++;
    if (strcmp(t, "Split") == 0) {
        p->kind = TOK_PRE_SPLIT;
        json_t *pat = json_object_get(o, "pattern");
        json_t *re = json_object_get(pat, "Regex");
        if (json_is_string(re)) {
            snprintf(sub, sizeof sub, "%s.pattern.Regex", where);
            if (!tok_compile(tk, &p->re, &p->md, json_string_value(re), json_string_length(re), sub,
                             st))
                return 0;
        } else if (!tok_string_pattern(pat, &p->lit, &p->litlen) || p->litlen == 0) {
            return tok_err(st, tk, "%s.pattern: expected {\"Regex\": ...} or {\"String\": ...}",
                           where);
        }
        const char *b = json_string_value(json_object_get(o, "behavior"));
        int found = 0;
        for (int i = 0; b && i < 5; i++)
            if (strcmp(b, tok_behaviors[i]) == 0) {
                p->behavior = (TokSplitBehavior)i;
                found = 1;
            }
        if (!found)
            return tok_err(st, tk, "%s.behavior: unsupported '%s'", where, b ? b : "(missing)");
        p->invert = tok_json_bool(o, "invert", 0);
    } else if (strcmp(t, "ByteLevel") == 0) {
        p->kind = TOK_PRE_BYTELEVEL;
        p->add_prefix_space = tok_json_bool(o, "add_prefix_space", 1);
        if (tok_json_bool(o, "use_regex", 1)) {
            snprintf(sub, sizeof sub, "%s (GPT-2 regex)", where);
            if (!tok_compile(tk, &p->re, &p->md, tok_gpt2_re, sizeof tok_gpt2_re - 1, sub, st))
                return 0;
        }
        tk->bytelevel = 1;
    } else if (strcmp(t, "Metaspace") == 0) {
        p->kind = TOK_PRE_METASPACE;
        json_t *r = json_object_get(o, "replacement");
        if (!json_is_string(r)) return tok_err(st, tk, "%s.replacement: missing", where);
        /* HF's replacement is one char; an empty one would match everywhere, without end */
        if (json_string_length(r) == 0) return tok_err(st, tk, "%s.replacement: empty", where);
        p->litlen = json_string_length(r);
        p->lit = tok_strndup(json_string_value(r), p->litlen);
        if (!tok_parse_scheme(tk, o, &p->scheme, where, st)) return 0;
        p->split = tok_json_bool(o, "split", 1);
    } else if (strcmp(t, "Digits") == 0) {
        p->kind = TOK_PRE_DIGITS;
        p->individual_digits = tok_json_bool(o, "individual_digits", 0);
    } else {
        return tok_err(st, tk, "unsupported pre_tokenizer type '%s' (%s)", t, where);
    }
    return 1;
}

static int tok_load_dec(Tokenizer *tk, json_t *o, const char *where, ErrStatus *st) {
    if (json_is_null(o) || !o) return 1;
    tk->has_decoder = 1;
    const char *t = tok_type(o);
    if (strcmp(t, "Sequence") == 0)
        return tok_load_sequence(tk, o, "decoders", where, tok_load_dec, st);
    tk->dec = realloc(tk->dec, (tk->ndec + 1) * sizeof *tk->dec);
    TokDec *d = &tk->dec[tk->ndec];
    memset(d, 0, sizeof *d);
    tk->ndec++;
    if (strcmp(t, "ByteLevel") == 0) {
        d->kind = TOK_DEC_BYTELEVEL;
    } else if (strcmp(t, "ByteFallback") == 0) {
        d->kind = TOK_DEC_BYTEFALLBACK;
    } else if (strcmp(t, "Fuse") == 0) {
        d->kind = TOK_DEC_FUSE;
    } else if (strcmp(t, "Replace") == 0) {
        d->kind = TOK_DEC_REPLACE;
        json_t *c = json_object_get(o, "content");
        if (!json_is_string(c)) return tok_err(st, tk, "%s.content: missing", where);
        if (!tok_replace_pattern(tk, o, &d->a, &d->alen, &d->re, &d->md, where, st)) return 0;
        d->blen = json_string_length(c);
        d->b = tok_strndup(json_string_value(c), d->blen);
    } else if (strcmp(t, "Strip") == 0) {
        d->kind = TOK_DEC_STRIP;
        json_t *c = json_object_get(o, "content");
        if (!json_is_string(c)) return tok_err(st, tk, "%s.content: missing", where);
        d->alen = json_string_length(c);
        d->a = tok_strndup(json_string_value(c), d->alen);
        d->start = (int)json_integer_value(json_object_get(o, "start"));
        d->stop = (int)json_integer_value(json_object_get(o, "stop"));
    } else if (strcmp(t, "Metaspace") == 0) {
        d->kind = TOK_DEC_METASPACE;
        json_t *r = json_object_get(o, "replacement");
        if (!json_is_string(r)) return tok_err(st, tk, "%s.replacement: missing", where);
        d->alen = json_string_length(r);
        d->a = tok_strndup(json_string_value(r), d->alen);
        if (!tok_parse_scheme(tk, o, &d->scheme, where, st)) return 0;
    } else {
        return tok_err(st, tk, "unsupported decoder type '%s' (%s)", t, where);
    }
    return 1;
}

static int tok_template_ids(Tokenizer *tk, json_t *specials, const char *name, TokIds *out,
                            const char *where, ErrStatus *st) {
    json_t *ids = json_object_get(json_object_get(specials, name), "ids");
    if (!json_is_array(ids))
        return tok_err(st, tk, "%s: special token '%s' not in special_tokens", where, name);
    for (size_t i = 0; i < json_array_size(ids); i++) {
        json_t *v = json_array_get(ids, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > INT32_MAX - 1)
            return tok_err(st, tk, "%s: '%s' ids not integers", where, name);
        if (out) tok_ids_push(out, (int32_t)json_integer_value(v));
    }
    return 1;
}

/* One TemplateProcessing template (o[key], "single" or "pair"): a list of
 * {"SpecialToken": {"id": name}} and {"Sequence": {"id": "A" or "B"}}. The ids of the
 * special tokens before the first sequence go to before, the others to after; with before
 * NULL only the form is checked (names need not be in special_tokens: HF loads such a pair
 * template). *seq gets a bit per sequence seen (1 A, 2 B). */
static int tok_parse_template(Tokenizer *tk, json_t *o, const char *key, TokIds *before,
                              TokIds *after, int *seq, const char *where, ErrStatus *st) {
    json_t *tpl = json_object_get(o, key), *specials = json_object_get(o, "special_tokens");
    char sub[300];
    if (!json_is_array(tpl)) return tok_err(st, tk, "%s.%s: missing or not a list", where, key);
    *seq = 0;
    for (size_t i = 0; i < json_array_size(tpl); i++) {
        json_t *it = json_array_get(tpl, i);
        snprintf(sub, sizeof sub, "%s.%s[%zu]", where, key, i);
        json_t *sp = json_object_get(it, "SpecialToken"), *sq = json_object_get(it, "Sequence");
        if (sp) {
            const char *name = json_string_value(json_object_get(sp, "id"));
            if (!name) return tok_err(st, tk, "%s.SpecialToken.id: missing", sub);
            if (before && !tok_template_ids(tk, specials, name, *seq ? after : before, sub, st))
                return 0;
        } else if (sq) {
            const char *id = json_string_value(json_object_get(sq, "id"));
            int bit = id && strcmp(id, "A") == 0 ? 1 : id && strcmp(id, "B") == 0 ? 2 : 0;
            if (!bit) return tok_err(st, tk, "%s.Sequence.id: expected \"A\" or \"B\"", sub);
            if (before && (*seq & bit))
                return tok_err(st, tk, "%s: unsupported: sequence %s used twice", sub, id);
            *seq |= bit;
        } else {
            return tok_err(st, tk, "%s: expected SpecialToken or Sequence", sub);
        }
    }
    return 1;
}

static int tok_load_post(Tokenizer *tk, json_t *o, const char *where, ErrStatus *st) {
    if (json_is_null(o) || !o) return 1;
    const char *t = tok_type(o);
    if (strcmp(t, "Sequence") == 0)
        return tok_load_sequence(tk, o, "processors", where, tok_load_post, st);
    if (strcmp(t, "ByteLevel") == 0) return 1; /* only adjusts offsets */
    if (strcmp(t, "TemplateProcessing") != 0)
        return tok_err(st, tk, "unsupported post_processor type '%s' (%s)", t, where);
    if (tk->post_before || tk->post_after)
        return tok_err(st, tk, "unsupported: two TemplateProcessing post-processors (%s)", where);
    /* Only single sequences are encoded here. Its special tokens must be known (HF panics
     * when encoding otherwise) and A used once (HF repeats or drops the text otherwise).
     * The pair template is checked for its form only, as HF's deserialiser does; a missing
     * one is accepted (HF requires it). */
    TokIds before = {0}, after = {0};
    int seq = 0, ok = tok_parse_template(tk, o, "single", &before, &after, &seq, where, st);
    if (ok && seq != 1)
        ok = tok_err(st, tk, "%s.single: unsupported: must use sequence A once (and not B)", where);
    json_t *pair = json_object_get(o, "pair");
    if (ok && pair && !json_is_null(pair))
        ok = tok_parse_template(tk, o, "pair", NULL, NULL, &seq, where, st);
    if (!ok) {
        tok_ids_free(&before);
        tok_ids_free(&after);
        return 0;
    }
    tk->post_before = before.ids ? before.ids : calloc(1, sizeof(int32_t));
    tk->npost_before = before.n;
    tk->post_after = after.ids ? after.ids : calloc(1, sizeof(int32_t));
    tk->npost_after = after.n;
    return 1;
}

static int tok_cmp_added_len(const void *a, const void *b, void *ctx) {
    const TokAdded *ad = ctx;
    const TokAdded *x = &ad[*(const int32_t *)a], *y = &ad[*(const int32_t *)b];
    int bx = (unsigned char)x->pat[0], by = (unsigned char)y->pat[0];
    if (bx != by) return bx - by;
    return x->patlen < y->patlen ? 1 : x->patlen > y->patlen ? -1 : 0;
}

/* The set of added tokens with normalized == normalized. HF added_vocabulary.rs matches
 * normalized tokens in the normalised text with their content passed through the normalizer
 * (with Prepend "▁" + Replace " " -> "▁", "<x>" is looked for as "▁<x>"); empty contents
 * are ignored, as HF does. */
static void tok_build_set(Tokenizer *tk, TokAddedSet *s, int normalized) {
    s->idx = malloc((tk->nadded + 1) * sizeof *s->idx);
    SL_CHECK(s->idx != NULL, "out of memory");
    s->n = 0;
    for (size_t i = 0; i < tk->nadded; i++) {
        TokAdded *a = &tk->added[i];
        if (a->normalized != normalized) continue;
        if (!a->pat) {
            a->pat = a->content;
            a->patlen = a->len;
            if (normalized && tk->nnorm && a->len) {
                tok_normalize(tk, a->content, a->len, &tk->s_norm);
                a->pat = tok_strndup(tk->s_norm.p, tk->s_norm.n);
                a->patlen = tk->s_norm.n;
            }
        }
        if (a->len && a->patlen) s->idx[s->n++] = (int32_t)i;
    }
    qsort_r(s->idx, s->n, sizeof *s->idx, tok_cmp_added_len, tk->added);
    size_t k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < s->n && (unsigned char)tk->added[s->idx[k]].pat[0] < b)
            k++;
        s->first[b] = k;
    }
}

/* The added tokens' ids as HF gives them (added_vocabulary.rs add_tokens; the "id" fields
 * are only compared, with a warning): a content in the model's vocabulary takes its id
 * there, a repeated content the id it got first, a new one the next id after the largest
 * so far, but at least the vocabulary's size (its number of entries). */
static void tok_assign_added_ids(Tokenizer *tk, size_t vocab_size) {
    size_t cap = 16;
    while (cap < 2 * tk->nadded + 2)
        cap *= 2;
    int32_t *seen = malloc(cap * sizeof *seen); /* open addressing: index into added */
    SL_CHECK(seen != NULL, "out of memory");
    for (size_t i = 0; i < cap; i++)
        seen[i] = -1;
    int64_t maxid = -1;
    for (size_t i = 0; i < tk->nadded; i++) {
        TokAdded *a = &tk->added[i];
        if (a->len == 0) continue; /* HF ignores it; it keeps its "id" for decoding */
        size_t h = tok_hash(a->content, a->len) & (cap - 1);
        while (seen[h] >= 0 && !(tk->added[seen[h]].len == a->len &&
                                 memcmp(tk->added[seen[h]].content, a->content, a->len) == 0))
            h = (h + 1) & (cap - 1);
        int64_t id;
        if (seen[h] >= 0) {
            id = tk->added[seen[h]].id;
        } else {
            seen[h] = (int32_t)i;
            id = tok_vocab_get(tk, a->content, a->len);
            if (id < 0)
                id = maxid >= (int64_t)vocab_size || vocab_size == 0 ? maxid + 1
                                                                     : (int64_t)vocab_size;
        }
        SL_CHECK(id < INT32_MAX, "added token id overflow");
        a->id = (int32_t)id;
        if (id > maxid) maxid = id;
    }
    free(seen);
}

/* model.vocab: the vocabulary table, the id -> string index, and the added tokens' strings
 * (they override the vocabulary's for their id, as HF's id_to_token). */
static int tok_load_vocab(Tokenizer *tk, json_t *vocab, ErrStatus *st) {
    size_t nv = json_object_size(vocab);
    tk->vcap = 64;
    while (tk->vcap < 2 * (nv + tk->nadded) + 2)
        tk->vcap *= 2;
    tk->vslots = malloc(tk->vcap * sizeof *tk->vslots);
    for (size_t i = 0; i < tk->vcap; i++)
        tk->vslots[i].id = -1;
    const char *key;
    json_t *val;
    int32_t maxid = -1;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) > INT32_MAX - 1)
            return tok_err(st, tk, "model.vocab[\"%s\"]: not a valid id", key);
        int32_t id = (int32_t)json_integer_value(val);
        tok_vocab_put(tk, key, strlen(key), id);
        if (id > maxid) maxid = id;
    }
    tok_assign_added_ids(tk, nv);
    for (size_t i = 0; i < tk->nadded; i++)
        if (tk->added[i].id > maxid) maxid = tk->added[i].id;
    tk->nid = maxid + 1;
    tk->id_off = malloc((size_t)tk->nid * sizeof *tk->id_off);
    tk->id_len = calloc((size_t)tk->nid, sizeof *tk->id_len);
    tk->id_special = calloc((size_t)tk->nid, 1);
    for (int32_t i = 0; i < tk->nid; i++)
        tk->id_off[i] = -1;
    for (size_t i = 0; i < tk->vcap; i++) {
        TokVocabSlot *v = &tk->vslots[i];
        if (v->id >= 0) {
            tk->id_off[v->id] = v->off;
            tk->id_len[v->id] = v->len;
        }
    }
    for (size_t i = 0; i < tk->nadded; i++) {
        TokAdded *a = &tk->added[i];
        tk->id_off[a->id] = (int64_t)tk->strs.n;
        tk->id_len[a->id] = (uint32_t)a->len;
        tok_buf_put(&tk->strs, a->content, a->len);
        if (a->special) tk->id_special[a->id] = 1;
    }
    return 1;
}

/* model.unk_token, and the ids of single bytes (byte-level) and of <0xNN> (byte fallback). */
static int tok_load_byte_ids(Tokenizer *tk, json_t *m, ErrStatus *st) {
    json_t *unk = json_object_get(m, "unk_token");
    tk->unk_id = -1;
    if (json_is_string(unk)) {
        tk->unk_id = tok_vocab_get(tk, json_string_value(unk), json_string_length(unk));
        if (tk->unk_id < 0)
            return tok_err(st, tk, "model.unk_token: '%s' is not in model.vocab",
                           json_string_value(unk));
    }
    for (int b = 0; b < 256; b++) {
        char u[4], fb[8];
        tok_byte_char(b, u);
        tk->byte_id[b] = tok_vocab_get(tk, u, strlen(u));
        tk->byte_u8len[b] = (unsigned char)strlen(u);
        memcpy(tk->byte_u8[b], u, tk->byte_u8len[b]);
        if (b < 128) {
            char c = (char)b;
            tk->ascii_id[b] = tok_vocab_get(tk, &c, 1);
        }
        snprintf(fb, sizeof fb, "<0x%02X>", b);
        tk->fb_id[b] = tok_vocab_get(tk, fb, 6);
    }
    return 1;
}

/* model.merges ("a b" or ["a", "b"]) into the pair -> (rank, merged id) table. */
static int tok_load_merges(Tokenizer *tk, json_t *merges, ErrStatus *st) {
    size_t nm = json_array_size(merges);
    tk->meta_cut = !tk->ignore_merges && tok_vocab_get(tk, TOK_META, 3) >= 0;
    tk->mcap = 64;
    while (tk->mcap < 2 * nm + 2)
        tk->mcap *= 2;
    tk->mslots = calloc(tk->mcap, sizeof *tk->mslots);
    SL_CHECK(nm < INT32_MAX, "model.merges: %zu merges", nm);
    tk->nmerges = nm;
    tk->by_rank = malloc((nm + 1) * sizeof *tk->by_rank);
    SL_CHECK(tk->mslots && tk->by_rank, "out of memory");
    TokBuf cat = {0};
    for (size_t r = 0; r < nm; r++) {
        json_t *e = json_array_get(merges, r);
        const char *a, *b;
        size_t al, bl;
        if (json_is_string(e)) {
            /* "a b": HF splits on the space and requires exactly two parts */
            const char *s = json_string_value(e), *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ') || sp == s || !sp[1]) {
                free(cat.p);
                return tok_err(st, tk, "model.merges[%zu]: '%s' is not two tokens 'a b'", r, s);
            }
            a = s;
            al = (size_t)(sp - s);
            b = sp + 1;
            bl = strlen(b);
        } else if (json_is_array(e) && json_array_size(e) == 2 &&
                   json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
            a = json_string_value(json_array_get(e, 0));
            al = json_string_length(json_array_get(e, 0));
            b = json_string_value(json_array_get(e, 1));
            bl = json_string_length(json_array_get(e, 1));
        } else {
            free(cat.p);
            return tok_err(st, tk, "model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", r);
        }
        if (bl >= 3 && memcmp(b, TOK_META, 3) == 0)
            for (size_t k = 0; k < al && tk->meta_cut; k += 3)
                if (al % 3 || memcmp(a + k, TOK_META, 3) != 0) tk->meta_cut = 0;
        int32_t ia = tok_vocab_get(tk, a, al), ib = tok_vocab_get(tk, b, bl);
        cat.n = 0;
        tok_buf_put(&cat, a, al);
        tok_buf_put(&cat, b, bl);
        int32_t im = tok_vocab_get(tk, cat.p, cat.n);
        if (ia < 0 || ib < 0 || im < 0) {
            int rc = tok_err(st, tk, "model.merges[%zu]: '%.*s' + '%.*s': %s not in model.vocab", r,
                             (int)al, a, (int)bl, b,
                             ia < 0   ? "first token"
                             : ib < 0 ? "second token"
                                      : "merged token");
            free(cat.p);
            return rc;
        }
        uint64_t key = ((uint64_t)(uint32_t)(ia + 1) << 32) | (uint32_t)(ib + 1);
        size_t mask = tk->mcap - 1, i = str_mix64(key) & mask;
        while (tk->mslots[i].key && tk->mslots[i].key != key)
            i = (i + 1) & mask;
        /* a pair listed twice keeps its last rank: HF collects the merges into a hash map */
        if (tk->mslots[i].key == key) tk->by_rank[tk->mslots[i].rank].a = -1;
        tk->mslots[i].key = key;
        tk->mslots[i].rank = (int32_t)r;
        tk->mslots[i].merged = im;
        tk->by_rank[r] = (TokMergeRank){ia, ib, im};
    }
    free(cat.p);
    return 1;
}

static int tok_load_model(Tokenizer *tk, json_t *m, ErrStatus *st) {
    if (!json_is_object(m)) return tok_err(st, tk, "model: missing");
    const char *t = tok_type(m);
    if (*t && strcmp(t, "BPE") != 0)
        return tok_err(st, tk, "unsupported model type '%s' (model.type)", t);
    json_t *vocab = json_object_get(m, "vocab"), *merges = json_object_get(m, "merges");
    if (!json_is_object(vocab)) return tok_err(st, tk, "model.vocab: missing or not an object");
    if (json_object_size(vocab) == 0) /* every text would become unknown tokens */
        return tok_err(st, tk, "model.vocab: empty (a tokenizer needs at least one token)");
    if (!json_is_array(merges)) return tok_err(st, tk, "model.merges: missing or not an array");
    json_t *dr = json_object_get(m, "dropout");
    if (dr && !json_is_null(dr) && json_number_value(dr) != 0.0)
        return tok_err(st, tk, "model.dropout: unsupported (must be null)");
    const char *opts[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(m, opts[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return tok_err(st, tk, "model.%s: unsupported (must be null)", opts[i]);
    }
    tk->ignore_merges = tok_json_bool(m, "ignore_merges", 0);
    tk->byte_fallback = tok_json_bool(m, "byte_fallback", 0);
    tk->fuse_unk = tok_json_bool(m, "fuse_unk", 0);

    return tok_load_vocab(tk, vocab, st) && tok_load_byte_ids(tk, m, st) &&
           tok_load_merges(tk, merges, st);
}

static int tok_load_added(Tokenizer *tk, json_t *arr, ErrStatus *st) {
    if (!arr || json_is_null(arr)) return 1;
    if (!json_is_array(arr)) return tok_err(st, tk, "added_tokens: not an array");
    tk->added = calloc(json_array_size(arr) + 1, sizeof *tk->added);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *o = json_array_get(arr, i), *id = json_object_get(o, "id"),
               *c = json_object_get(o, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) > INT32_MAX - 1 || !json_is_string(c))
            return tok_err(st, tk, "added_tokens[%zu]: needs an integer id and a content", i);
        TokAdded *a = &tk->added[tk->nadded++];
        a->id = (int32_t)json_integer_value(id);
        a->len = json_string_length(c);
        a->content = tok_strndup(json_string_value(c), a->len);
        a->special = tok_json_bool(o, "special", 0);
        a->lstrip = tok_json_bool(o, "lstrip", 0);
        a->rstrip = tok_json_bool(o, "rstrip", 0);
        a->normalized = tok_json_bool(o, "normalized", !a->special);
        a->single_word = tok_json_bool(o, "single_word", 0);
    }
    return 1;
}

Tokenizer *tok_load(const char *path, ErrStatus *st) {
    err_status_ok(st);
    Tokenizer *tk = calloc(1, sizeof *tk);
    SL_CHECK(tk != NULL, "out of memory");
    tk->path = tok_strndup(path, strlen(path));
    /* duplicates: the last one wins, as it always has here */
    json_t *root = afile_read_json(path, TOK_MAX_FILE, 0, st);
    if (!root) {
        tok_free(tk);
        return NULL;
    }
    int ok = json_is_object(root) ? 1 : tok_err(st, tk, "not a JSON object");
    ok = ok && tok_load_added(tk, json_object_get(root, "added_tokens"), st);
    ok = ok && tok_load_model(tk, json_object_get(root, "model"), st);
    ok = ok && tok_load_normalizer(tk, json_object_get(root, "normalizer"), "normalizer", st);
    ok = ok && tok_load_pre(tk, json_object_get(root, "pre_tokenizer"), "pre_tokenizer", st);
    ok = ok && tok_load_post(tk, json_object_get(root, "post_processor"), "post_processor", st);
    ok = ok && tok_load_dec(tk, json_object_get(root, "decoder"), "decoder", st);
    json_t *trunc = json_object_get(root, "truncation"), *pad = json_object_get(root, "padding");
    if (ok && trunc && !json_is_null(trunc))
        ok = tok_err(st, tk, "unsupported: truncation (must be null)");
    if (ok && pad && !json_is_null(pad))
        ok = tok_err(st, tk, "unsupported: padding (must be null)");
    json_decref(root);
    if (!ok) {
        tok_free(tk);
        return NULL;
    }
    tok_build_set(tk, &tk->set_raw, 0);
    tok_build_set(tk, &tk->set_norm, 1);
    /* HF keeps a normalized added token as its normalised content: that is also its string
     * when decoding ("New York" decodes as " New York" after Prepend + Replace "▁") */
    for (size_t i = 0; i < tk->nadded; i++) {
        TokAdded *a = &tk->added[i];
        if (a->pat == a->content || !a->patlen) continue;
        tk->id_off[a->id] = (int64_t)tk->strs.n;
        tk->id_len[a->id] = (uint32_t)a->patlen;
        tok_buf_put(&tk->strs, a->pat, a->patlen);
    }
    tk->cache = calloc(TOK_CACHE_SLOTS, sizeof *tk->cache);
    return tk;
}

void tok_free(Tokenizer *tk) {
    if (!tk) return;
    free(tk->path);
    free(tk->strs.p);
    free(tk->vslots);
    free(tk->id_off);
    free(tk->id_len);
    free(tk->id_special);
    free(tk->mslots);
    free(tk->by_rank);
    for (size_t i = 0; i < tk->nadded; i++) {
        if (tk->added[i].pat != tk->added[i].content) free(tk->added[i].pat);
        free(tk->added[i].content);
    }
    free(tk->added);
    free(tk->set_raw.idx);
    free(tk->set_norm.idx);
    for (size_t i = 0; i < tk->nnorm; i++) {
        free(tk->norm[i].a);
        free(tk->norm[i].b);
        if (tk->norm[i].md) pcre2_match_data_free(tk->norm[i].md);
        if (tk->norm[i].re) pcre2_code_free(tk->norm[i].re);
    }
    free(tk->norm);
    for (size_t i = 0; i < tk->npre; i++) {
        if (tk->pre[i].md) pcre2_match_data_free(tk->pre[i].md);
        if (tk->pre[i].re) pcre2_code_free(tk->pre[i].re);
        free(tk->pre[i].lit);
    }
    free(tk->pre);
    free(tk->post_before);
    free(tk->post_after);
    for (size_t i = 0; i < tk->ndec; i++) {
        free(tk->dec[i].a);
        free(tk->dec[i].b);
        if (tk->dec[i].md) pcre2_match_data_free(tk->dec[i].md);
        if (tk->dec[i].re) pcre2_code_free(tk->dec[i].re);
    }
    free(tk->dec);
    free(tk->s_in.p);
    free(tk->s_norm.p);
    free(tk->s_norm2.p);
    free(tk->s_pre.p);
    free(tk->s_word.p);
    free(tk->pieces[0]);
    free(tk->pieces[1]);
    free(tk->spans.m);
    free(tk->nfc);
    free(tk->sym);
    free(tk->rank);
    free(tk->hsym);
    free(tk->heap);
    free(tk->cache);
    free(tk->cache_keys.p);
    free(tk->cache_ids);
    free(tk);
}

/* ---- normalizer ---- */

/* o += s[0..n) with every occurrence of a replaced by b. */
static void tok_replace_into(TokBuf *o, const char *s, size_t n, const char *a, size_t al,
                             const char *b, size_t bl) {
    size_t i = 0, start = 0;
    while (i + al <= n) {
        if (memcmp(s + i, a, al) == 0) {
            tok_buf_put(o, s + start, i - start);
            tok_buf_put(o, b, bl);
            i += al;
            start = i;
        } else {
            i++;
        }
    }
    tok_buf_put(o, s + start, n - start);
}

/* o += s[0..n) with every match of re replaced by b: the matches of the onig crate's
 * find_iter, which HF's Replace uses (an empty match right where the previous match ended is
 * skipped; the search then steps over one character). An empty s is left as it is. */
static void tok_replace_re_into(TokBuf *o, pcre2_code *re, pcre2_match_data *md, const char *s,
                                size_t n, const char *b, size_t bl) {
    size_t at = 0, copied = 0, last_end = SIZE_MAX;
    while (n > 0 && at <= n) {
        int rc = pcre2_jit_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_JIT_BADOPTION)
            rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], e = ov[1];
        if (a == e && e == last_end) {
            at = e + 1;
            while (at < n && ((unsigned char)s[at] & 0xC0) == 0x80)
                at++;
            continue;
        }
        tok_buf_put(o, s + copied, a - copied);
        tok_buf_put(o, b, bl);
        copied = at = last_end = e;
    }
    tok_buf_put(o, s + copied, n - copied);
}

/* o += NFC(s[0..n)) (utf8proc_NFC's options, but on an explicit length, so that a NUL in the
 * text is kept, and into the tokenizer's code point buffer rather than a fresh allocation). */
static void tok_nfc_into(Tokenizer *tk, TokBuf *o, const char *s, size_t n) {
    const utf8proc_option_t opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    for (;;) {
        utf8proc_ssize_t k = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n,
                                                tk->nfc, (utf8proc_ssize_t)tk->nfc_cap, opt);
        SL_CHECK(k >= 0, "utf8proc_decompose: %s", utf8proc_errmsg(k));
        /* reencode writes the UTF-8 over the code points and a NUL after it: k + 1 slots */
        if ((size_t)k < tk->nfc_cap) {
            utf8proc_ssize_t m = utf8proc_reencode(tk->nfc, k, opt);
            SL_CHECK(m >= 0, "utf8proc_reencode: %s", utf8proc_errmsg(m));
            tok_buf_put(o, tk->nfc, (size_t)m);
            return;
        }
        tk->nfc_cap = 2 * (size_t)k + 64;
        tk->nfc = realloc(tk->nfc, tk->nfc_cap * sizeof *tk->nfc);
        SL_CHECK(tk->nfc != NULL, "out of memory");
    }
}

/* out = the normalizer chain over s[0..n) (out is not s_norm2, the chain's other buffer). */
static void tok_normalize(Tokenizer *tk, const char *s, size_t n, TokBuf *out) {
    TokBuf *cur = out, *alt = &tk->s_norm2;
    cur->n = 0;
    tok_buf_put(cur, s, n);
    for (size_t k = 0; k < tk->nnorm; k++) {
        const TokNorm *nm = &tk->norm[k];
        alt->n = 0;
        tok_buf_put(alt, "", 0);
        if (nm->kind == TOK_NORM_NFC) {
            size_t i = 0;
            while (i < cur->n && !((unsigned char)cur->p[i] & 0x80))
                i++;
            if (i == cur->n) continue; /* ASCII is always NFC */
            tok_nfc_into(tk, alt, cur->p, cur->n);
        } else if (nm->kind == TOK_NORM_PREPEND) {
            if (cur->n == 0) continue; /* HF Prepend leaves an empty string empty */
            tok_buf_put(alt, nm->a, nm->alen);
            tok_buf_put(alt, cur->p, cur->n);
        } else if (nm->re) {
            tok_replace_re_into(alt, nm->re, nm->md, cur->p, cur->n, nm->b, nm->blen);
        } else {
            tok_replace_into(alt, cur->p, cur->n, nm->a, nm->alen, nm->b, nm->blen);
        }
        TokBuf t = *cur;
        *cur = *alt;
        *alt = t;
    }
}

/* ---- pre-tokenizer: pieces are (offset, length) pairs into s_pre ---- */

static void tok_piece_push(Tokenizer *tk, int w, size_t *np, size_t off, size_t len) {
    if (len == 0) return;
    if (2 * (*np + 1) > tk->piece_cap[w]) {
        tk->piece_cap[w] = tk->piece_cap[w] ? 2 * tk->piece_cap[w] : 256;
        tk->pieces[w] = realloc(tk->pieces[w], tk->piece_cap[w] * sizeof(uint32_t));
        SL_CHECK(tk->pieces[w] != NULL, "out of memory");
    }
    tk->pieces[w][2 * *np] = (uint32_t)off;
    tk->pieces[w][2 * *np + 1] = (uint32_t)len;
    (*np)++;
}

static void tok_spans_push(TokSpans *sp, size_t a, size_t b) {
    if (sp->n + 2 > sp->cap) {
        sp->cap = sp->cap ? 2 * sp->cap : 64;
        sp->m = realloc(sp->m, sp->cap * sizeof *sp->m);
        SL_CHECK(sp->m != NULL, "out of memory");
    }
    sp->m[sp->n++] = a;
    sp->m[sp->n++] = b;
}

static void tok_find_matches(const TokPre *p, const char *s, size_t n, TokSpans *sp) {
    sp->n = 0;
    if (p->kind == TOK_PRE_DIGITS) {
        /* HF digits.rs splits on Rust's char::is_numeric: categories Nd, Nl and No */
        for (size_t i = 0; i < n;) {
            int32_t c;
            size_t l = tok_utf8_cp(s + i, n - i, &c), j = i + l;
            if (!tok_is_numeric_cp(c)) {
                i = j;
                continue;
            }
            while (!p->individual_digits && j < n) {
                size_t l2 = tok_utf8_cp(s + j, n - j, &c);
                if (!tok_is_numeric_cp(c)) break;
                j += l2;
            }
            tok_spans_push(sp, i, j);
            i = j;
        }
        return;
    }
    if (p->re) {
        size_t at = 0;
        while (at <= n) {
            int rc = pcre2_jit_match(p->re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, p->md, NULL);
            if (rc == PCRE2_ERROR_JIT_BADOPTION)
                rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, p->md, NULL);
            if (rc < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p->md);
            size_t a = ov[0], b = ov[1];
            if (b > a) {
                tok_spans_push(sp, a, b);
                at = b;
            } else {
                /* empty match: step over one character (as Rust's find_iter does) */
                at = a + 1;
                while (at < n && ((unsigned char)s[at] & 0xC0) == 0x80)
                    at++;
            }
        }
        return;
    }
    /* literal */
    for (size_t i = 0; i + p->litlen <= n;) {
        if (memcmp(s + i, p->lit, p->litlen) == 0) {
            tok_spans_push(sp, i, i + p->litlen);
            i += p->litlen;
        } else {
            i++;
        }
    }
}

/* A piece of tok_split_piece not yet pushed: [a, b), whether it is set and a match. */
typedef struct {
    size_t a, b;
    int have, match;
} TokPend;

/* Pushes the pending piece, if any, and makes [a, b) the pending one. */
static void tok_pend_restart(Tokenizer *tk, int w, size_t *np, size_t off, TokPend *pd, size_t a,
                             size_t b) {
    if (pd->have) tok_piece_push(tk, w, np, off + pd->a, pd->b - pd->a);
    pd->a = a;
    pd->b = b;
    pd->have = 1;
}

/* HF normalizer.rs split(): the matches cut the piece by the behaviour. */
static void tok_split_piece(Tokenizer *tk, const TokPre *p, TokSplitBehavior beh, int invert,
                            size_t off, size_t n, int w, size_t *np) {
    const char *s = tk->s_pre.p + off;
    TokSpans *sp = &tk->spans;
    tok_find_matches(p, s, n, sp);
    /* (start, end, is_match) covering the piece */
    size_t cur = 0, k = 0;
    TokPend pd = {0, 0, 0, 0}; /* the piece not yet pushed */
    while (cur < n) {
        size_t a, b;
        int is_match;
        if (k < sp->n && sp->m[k] == cur) {
            a = sp->m[k];
            b = sp->m[k + 1];
            k += 2;
            is_match = 1;
        } else {
            a = cur;
            b = k < sp->n ? sp->m[k] : n;
            is_match = 0;
        }
        cur = b;
        if (invert) is_match = !is_match;
        switch (beh) {
        case TOK_SPLIT_REMOVED:
            if (!is_match) tok_piece_push(tk, w, np, off + a, b - a);
            break;
        case TOK_SPLIT_ISOLATED:
            tok_piece_push(tk, w, np, off + a, b - a);
            break;
        case TOK_SPLIT_MERGED_PREV:
            /* a match joins the piece before it unless that one was a match too */
            if (is_match && pd.have && !pd.match) {
                pd.b = b;
            } else {
                tok_pend_restart(tk, w, np, off, &pd, a, b);
            }
            pd.match = is_match;
            break;
        case TOK_SPLIT_MERGED_NEXT:
            /* a match joins the piece after it unless that one is a match too */
            if (is_match) {
                tok_pend_restart(tk, w, np, off, &pd, a, b);
            } else if (pd.have) {
                tok_piece_push(tk, w, np, off + pd.a, b - pd.a);
                pd.have = 0;
            } else {
                tok_piece_push(tk, w, np, off + a, b - a);
            }
            break;
        case TOK_SPLIT_CONTIGUOUS:
            if (pd.have && pd.match == is_match) {
                pd.b = b;
            } else {
                tok_pend_restart(tk, w, np, off, &pd, a, b);
                pd.match = is_match;
            }
            break;
        }
    }
    if (pd.have) tok_piece_push(tk, w, np, off + pd.a, pd.b - pd.a);
}

/* Runs the pre-tokenizers over s_pre[0..n); the pieces end in pieces[returned w]. Pieces
 * made by ByteLevel's prefix space or by Metaspace are appended to s_pre. first_segment: the
 * text starts at offset 0 of the original (for Metaspace's prepend_scheme "first"). */
static int tok_pretokenize(Tokenizer *tk, int first_segment, size_t *np_out) {
    size_t np = 0;
    int w = 0;
    tok_piece_push(tk, w, &np, 0, tk->s_pre.n);
    for (size_t k = 0; k < tk->npre; k++) {
        const TokPre *p = &tk->pre[k];
        int o = 1 - w;
        size_t no = 0;
        for (size_t i = 0; i < np; i++) {
            size_t off = tk->pieces[w][2 * i], len = tk->pieces[w][2 * i + 1];
            if (p->kind == TOK_PRE_SPLIT || p->kind == TOK_PRE_DIGITS) {
                TokSplitBehavior beh =
                    p->kind == TOK_PRE_DIGITS
                        ? (p->individual_digits ? TOK_SPLIT_ISOLATED : TOK_SPLIT_CONTIGUOUS)
                        : p->behavior;
                tok_split_piece(tk, p, beh, p->kind == TOK_PRE_SPLIT && p->invert, off, len, o,
                                &no);
            } else if (p->kind == TOK_PRE_BYTELEVEL) {
                if (p->add_prefix_space && tk->s_pre.p[off] != ' ') {
                    /* HF ByteLevel: prepend a space to each piece that lacks one (reserve
                     * first: the copy reads from the buffer it appends to) */
                    tok_buf_reserve(&tk->s_pre, len + 2);
                    size_t noff = tk->s_pre.n;
                    tk->s_pre.p[noff] = ' ';
                    memcpy(tk->s_pre.p + noff + 1, tk->s_pre.p + off, len);
                    tk->s_pre.n += len + 1;
                    tk->s_pre.p[tk->s_pre.n] = 0;
                    off = noff;
                    len++;
                }
                if (p->re)
                    tok_split_piece(tk, p, TOK_SPLIT_ISOLATED, 0, off, len, o, &no);
                else
                    tok_piece_push(tk, o, &no, off, len);
            } else {
                /* Metaspace (HF pre_tokenizers/metaspace.rs): spaces become the replacement;
                 * then the replacement is prepended unless the piece starts with it (after
                 * the replacing), for "first" only to the piece at the text's offset 0;
                 * then split before each replacement */
                /* reserved first: the copy reads from the buffer it appends to */
                tok_buf_reserve(&tk->s_pre, (len + 1) * (p->litlen + 1) + 1);
                const char *src = tk->s_pre.p + off;
                size_t noff = tk->s_pre.n;
                int prepend = p->scheme == TOK_PREPEND_ALWAYS ||
                              (p->scheme == TOK_PREPEND_FIRST && first_segment && off == 0);
                if (prepend && src[0] != ' ' &&
                    !(len >= p->litlen && memcmp(src, p->lit, p->litlen) == 0))
                    tok_buf_put(&tk->s_pre, p->lit, p->litlen);
                tok_replace_into(&tk->s_pre, src, len, " ", 1, p->lit, p->litlen);
                size_t nlen = tk->s_pre.n - noff;
                if (p->split) {
                    TokPre lit = *p;
                    lit.re = NULL;
                    tok_split_piece(tk, &lit, TOK_SPLIT_MERGED_NEXT, 0, noff, nlen, o, &no);
                } else {
                    tok_piece_push(tk, o, &no, noff, nlen);
                }
            }
        }
        w = o;
        np = no;
    }
    *np_out = np;
    return w;
}

/* ---- BPE model on one pre-token ---- */

static void tok_sym_reserve(Tokenizer *tk, size_t n) {
    if (n <= tk->sym_cap) return;
    tk->sym_cap = n * 2;
    tk->sym = realloc(tk->sym, tk->sym_cap * sizeof *tk->sym);
    tk->rank = realloc(tk->rank, tk->sym_cap * sizeof *tk->rank);
    SL_CHECK(tk->sym && tk->rank, "out of memory");
}

static int32_t tok_pair_rank(const Tokenizer *tk, int32_t a, int32_t b) {
    const TokMerge *m = tok_merge_get(tk, a, b);
    return m ? m->rank : INT32_MAX;
}

/* Below this many symbols the rescan of a rank array (tok_bpe_scan) is at least as fast as
 * the heap: on the test corpus with the word cache off, 16 to 64 were alike and the heap for
 * every word was 15-25% slower (GPT-2, Llama-3 and Mistral pieces are mostly short). */
#define TOK_BPE_HEAP_MIN 32

/* sym[0..ns) merged in place, returns the new count: repeatedly the lowest-ranked pair,
 * leftmost on ties. O(ns^2), for short words. */
static size_t tok_bpe_scan(Tokenizer *tk, size_t ns) {
    int32_t *sym = tk->sym, *rank = tk->rank;
    for (size_t i = 0; i + 1 < ns; i++)
        rank[i] = tok_pair_rank(tk, sym[i], sym[i + 1]);
    while (ns > 1) {
        size_t best = 0;
        int32_t br = INT32_MAX;
        for (size_t i = 0; i + 1 < ns; i++)
            if (rank[i] < br) {
                br = rank[i];
                best = i;
            }
        if (br == INT32_MAX) break;
        sym[best] = tok_merge_get(tk, sym[best], sym[best + 1])->merged;
        memmove(sym + best + 1, sym + best + 2, (ns - best - 2) * sizeof *sym);
        memmove(rank + best + 1, rank + best + 2,
                (ns - best - 2 > 0 ? ns - best - 2 : 0) * sizeof *rank);
        ns--;
        if (best + 1 < ns) rank[best] = tok_pair_rank(tk, sym[best], sym[best + 1]);
        if (best > 0) rank[best - 1] = tok_pair_rank(tk, sym[best - 1], sym[best]);
    }
    return ns;
}

/* Min-heap of rank << 32 | position, the order of HF word.rs Merge (rank, then position).
 * 4-ary (as HF's dary_heap): half the depth of a binary heap, the children in one line. */
static void tok_heap_down(uint64_t *h, size_t n, size_t i) {
    uint64_t x = h[i];
    for (;;) {
        size_t c = 4 * i + 1, e = c + 4 < n ? c + 4 : n;
        if (c >= n) break;
        size_t m = c;
        for (size_t k = c + 1; k < e; k++)
            if (h[k] < h[m]) m = k;
        if (h[m] >= x) break;
        h[i] = h[m];
        i = m;
    }
    h[i] = x;
}

static void tok_heap_push(uint64_t *h, size_t *n, uint64_t x) {
    size_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 4] > x) {
        h[i] = h[(i - 1) / 4];
        i = (i - 1) / 4;
    }
    h[i] = x;
}

static void tok_heap_push_pair(const Tokenizer *tk, uint64_t *h, size_t *nh, int32_t pos) {
    const TokSym *s = tk->hsym;
    const TokMerge *m = tok_merge_get(tk, s[pos].id, s[s[pos].next].id);
    if (m) tok_heap_push(h, nh, (uint64_t)(uint32_t)m->rank << 32 | (uint32_t)pos);
}

/* sym[0..ns) merged in place, returns the new count; the same merges as tok_bpe_scan in
 * O(ns log ns): HF word.rs merge_all. Each adjacent pair that has a merge is in a heap keyed
 * by (rank, position of its left symbol); positions are those of the initial symbols, which
 * keep their order, so the top is the lowest rank, leftmost on ties. An entry is stale when
 * its left symbol was merged away, has no right neighbour any more, or the pair there now
 * is not the one the entry was made for (HF looks the pair up and compares the merged id; a
 * merged id names the text the pair covers, which starts where the entry's pair started, so
 * it is the same test). dropout is refused at load. */
static size_t tok_bpe_heap(Tokenizer *tk, size_t ns) {
    if (ns > tk->hsym_cap) {
        tk->hsym_cap = 2 * ns;
        tk->hsym = realloc(tk->hsym, tk->hsym_cap * sizeof *tk->hsym);
        /* live entries <= initial pairs + one net push per merge < 2 ns */
        tk->heap = realloc(tk->heap, 2 * tk->hsym_cap * sizeof *tk->heap);
        SL_CHECK(tk->hsym && tk->heap, "out of memory");
    }
    SL_CHECK(ns < INT32_MAX, "word of %zu symbols", ns);
    TokSym *s = tk->hsym;
    uint64_t *h = tk->heap;
    size_t nh = 0;
    for (size_t i = 0; i < ns; i++) {
        s[i].id = tk->sym[i];
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < ns ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < ns; i++) {
        const TokMerge *m = tok_merge_get(tk, s[i].id, s[i + 1].id);
        if (m) h[nh++] = (uint64_t)(uint32_t)m->rank << 32 | (uint32_t)i;
    }
    for (size_t i = nh / 4 + 1; i-- > 0;)
        tok_heap_down(h, nh, i);
    while (nh > 0) {
        uint64_t top = h[0];
        h[0] = h[--nh];
        if (nh) tok_heap_down(h, nh, 0);
        int32_t pos = (int32_t)(uint32_t)top, rank = (int32_t)(top >> 32);
        TokSym *a = &s[pos];
        if (a->id < 0 || a->next < 0) continue;
        TokSym *b = &s[a->next];
        const TokMergeRank *m = &tk->by_rank[rank];
        if (m->a != a->id || m->b != b->id) continue;
        a->id = m->merged;
        b->id = -1;
        a->next = b->next;
        if (a->next >= 0) s[a->next].prev = pos;
        if (a->prev >= 0) tok_heap_push_pair(tk, h, &nh, a->prev);
        if (a->next >= 0) tok_heap_push_pair(tk, h, &nh, pos);
    }
    size_t n = 0;
    for (int32_t i = 0; i >= 0; i = s[i].next)
        tk->sym[n++] = s[i].id;
    return n;
}

/* Ids of word w[0..n) appended to out (HF models/bpe/model.rs merge_word, then word.rs
 * merge_all: always the lowest-ranked pair, leftmost on ties). */
static void tok_bpe_word(Tokenizer *tk, const char *w, size_t n, TokIds *out) {
    if (tk->ignore_merges) {
        int32_t id;
        if (tk->bytelevel) {
            tk->s_word.n = 0;
            for (size_t i = 0; i < n; i++) {
                unsigned char b = (unsigned char)w[i];
                tok_buf_put(&tk->s_word, tk->byte_u8[b], tk->byte_u8len[b]);
            }
            id = tok_vocab_get(tk, tk->s_word.p, tk->s_word.n);
        } else {
            id = tok_vocab_get(tk, w, n);
        }
        if (id >= 0) {
            tok_ids_push(out, id);
            return;
        }
    }
    tok_sym_reserve(tk, 4 * n + 4);
    int32_t *sym = tk->sym;
    size_t ns = 0;
    int prev_unk = 0;
    for (size_t i = 0; i < n;) {
        size_t l = 1;
        int32_t id;
        if (tk->bytelevel) {
            id = tk->byte_id[(unsigned char)w[i]];
        } else if ((unsigned char)w[i] < 0x80) {
            id = tk->ascii_id[(unsigned char)w[i]];
        } else {
            int32_t cp;
            l = tok_utf8_cp(w + i, n - i, &cp);
            id = tok_vocab_get(tk, w + i, l);
        }
        if (id < 0 && tk->byte_fallback) {
            int all = 1;
            for (size_t j = 0; j < l; j++)
                all &= tk->fb_id[(unsigned char)w[i + j]] >= 0;
            if (all) {
                for (size_t j = 0; j < l; j++)
                    sym[ns++] = tk->fb_id[(unsigned char)w[i + j]];
                prev_unk = 0;
                i += l;
                continue;
            }
        }
        if (id < 0) {
            /* unknown: unk (fused with a preceding unk when fuse_unk), dropped without one */
            if (tk->unk_id >= 0 && !(tk->fuse_unk && prev_unk)) sym[ns++] = tk->unk_id;
            prev_unk = tk->unk_id >= 0;
        } else {
            sym[ns++] = id;
            prev_unk = 0;
        }
        i += l;
    }
    ns = ns < TOK_BPE_HEAP_MIN ? tok_bpe_scan(tk, ns) : tok_bpe_heap(tk, ns);
    for (size_t i = 0; i < ns; i++)
        tok_ids_push(out, sym[i]);
}

/* The word cache: pre-tokens repeat (Zipf), so most words skip the merge loop. Cleared
 * when full rather than evicted one by one. */
static void tok_word_cached(Tokenizer *tk, const char *w, size_t n, TokIds *out) {
    if (n > TOK_CACHE_WORD_MAX) {
        tok_bpe_word(tk, w, n, out);
        return;
    }
    uint64_t h = tok_hash(w, n) | 1;
    size_t mask = TOK_CACHE_SLOTS - 1, i = h & mask;
    for (;; i = (i + 1) & mask) {
        TokCacheSlot *c = &tk->cache[i];
        if (c->hash == 0) break;
        if (c->hash == h && c->klen == n && memcmp(tk->cache_keys.p + c->koff, w, n) == 0) {
            for (uint32_t j = 0; j < c->vlen; j++)
                tok_ids_push(out, tk->cache_ids[c->voff + j]);
            return;
        }
    }
    size_t before = out->n;
    tok_bpe_word(tk, w, n, out);
    if (tk->cache_used * 2 >= TOK_CACHE_SLOTS) {
        memset(tk->cache, 0, TOK_CACHE_SLOTS * sizeof *tk->cache);
        tk->cache_used = 0;
        tk->cache_keys.n = 0;
        tk->cache_nids = 0;
        i = h & mask;
    }
    size_t nv = out->n - before;
    if (tk->cache_nids + nv > tk->cache_ids_cap) {
        tk->cache_ids_cap = (tk->cache_nids + nv) * 2 + 1024;
        tk->cache_ids = realloc(tk->cache_ids, tk->cache_ids_cap * sizeof *tk->cache_ids);
        SL_CHECK(tk->cache_ids != NULL, "out of memory");
    }
    TokCacheSlot *c = &tk->cache[i];
    c->hash = h;
    c->koff = (uint32_t)tk->cache_keys.n;
    c->klen = (uint32_t)n;
    c->voff = (uint32_t)tk->cache_nids;
    c->vlen = (uint32_t)nv;
    tok_buf_put(&tk->cache_keys, w, n);
    /* A word may give no ids (and the cache no buffer yet): NULL + 0 is undefined in C. */
    if (nv > 0) memcpy(tk->cache_ids + tk->cache_nids, out->ids + before, nv * sizeof *out->ids);
    tk->cache_nids += nv;
    tk->cache_used++;
}

/* One pre-token. SentencePiece-style files (Llama-2, Mistral) have no pre-tokenizer, so a
 * whole line is one word. If no merge joins a left part holding another character to a right
 * part that starts with ▁ (checked at load: meta_cut), BPE never merges across the start of
 * a ▁ run that follows another character: cut there, the pieces merge as they would inside
 * the whole word (merges on either side never see each other), and each piece, a word with
 * its leading ▁, goes through the word cache. Not with ignore_merges (the whole word is
 * looked up first) nor byte-level (the model sees bytes as GPT-2 characters). */
static void tok_word(Tokenizer *tk, const char *w, size_t n, TokIds *out) {
    if (!tk->meta_cut || tk->bytelevel) {
        tok_word_cached(tk, w, n, out);
        return;
    }
    size_t start = 0;
    for (size_t i = 1; i + 3 <= n; i++) {
        const char *e = memchr(w + i, 0xE2, n - 2 - i);
        if (!e) break;
        i = (size_t)(e - w);
        if (memcmp(w + i, TOK_META, 3) == 0 && !(i >= 3 && memcmp(w + i - 3, TOK_META, 3) == 0)) {
            tok_word_cached(tk, w + start, i - start, out);
            start = i;
        }
    }
    tok_word_cached(tk, w + start, n - start, out);
}

/* ---- encoding ---- */

/* Normalised text segment -> ids */
static void tok_encode_normalized(Tokenizer *tk, const char *s, size_t n, int first_segment,
                                  TokIds *out) {
    tk->s_pre.n = 0;
    tok_buf_put(&tk->s_pre, s, n);
    size_t np;
    int w = tok_pretokenize(tk, first_segment, &np);
    for (size_t i = 0; i < np; i++)
        tok_word(tk, tk->s_pre.p + tk->pieces[w][2 * i], tk->pieces[w][2 * i + 1], out);
}

/* Finds the leftmost-longest added token of set in s[from..n) (HF added_vocabulary.rs:
 * aho-corasick LeftmostLongest, then single_word / lstrip / rstrip). Returns the token
 * index or -1; *ms..*me is the span to replace (with stripped whitespace). */
static int tok_find_added(const Tokenizer *tk, const TokAddedSet *set, const char *s, size_t n,
                          size_t from, size_t *ms, size_t *me) {
    if (set->n == 0) return -1;
    for (size_t i = from; i < n; i++) {
        unsigned b = (unsigned char)s[i];
        for (size_t k = set->first[b]; k < set->first[b + 1]; k++) {
            const TokAdded *a = &tk->added[set->idx[k]];
            if (a->patlen > n - i || memcmp(s + i, a->pat, a->patlen) != 0) continue;
            size_t st = i, en = i + a->patlen;
            if (a->single_word) {
                int32_t c;
                if (st > 0 && tok_is_word_cp(tok_cp_before(s, st))) continue;
                if (en < n && (tok_utf8_cp(s + en, n - en, &c), tok_is_word_cp(c))) continue;
            }
            if (a->lstrip)
                while (st > from && tok_is_space_cp(tok_cp_before(s, st))) {
                    int32_t c = tok_cp_before(s, st);
                    st -= (size_t)(c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4);
                }
            if (a->rstrip)
                while (en < n) {
                    int32_t c;
                    size_t l = tok_utf8_cp(s + en, n - en, &c);
                    if (!tok_is_space_cp(c)) break;
                    en += l;
                }
            *ms = st;
            *me = en;
            return set->idx[k];
        }
    }
    return -1;
}

int tok_encode(Tokenizer *tk, const char *text, size_t len, int add_special, TokIds *out,
               ErrStatus *st) {
    err_status_ok(st);
    const char *s = text;
    if (!tok_utf8_valid(text, len)) {
        tk->s_in.n = 0;
        tok_utf8_lossy(&tk->s_in, text, len);
        s = tk->s_in.p;
        len = tk->s_in.n;
    }
    if (add_special)
        for (size_t i = 0; i < tk->npost_before; i++)
            tok_ids_push(out, tk->post_before[i]);
    /* pass 1: added tokens matched on the raw text */
    size_t pos = 0;
    int first = 1;
    while (pos <= len) {
        size_t ms = len, me = len;
        int a = tok_find_added(tk, &tk->set_raw, s, len, pos, &ms, &me);
        if (a < 0) ms = me = len;
        if (ms > pos) {
            /* pass 2: normalise, then added tokens with normalized = true */
            TokBuf *norm = &tk->s_norm;
            tok_normalize(tk, s + pos, ms - pos, norm);
            size_t q = 0;
            while (q <= norm->n) {
                size_t ns = norm->n, ne = norm->n;
                int b = tok_find_added(tk, &tk->set_norm, norm->p, norm->n, q, &ns, &ne);
                if (b < 0) ns = ne = norm->n;
                if (ns > q) tok_encode_normalized(tk, norm->p + q, ns - q, first && q == 0, out);
                if (b < 0) break;
                tok_ids_push(out, tk->added[b].id);
                q = ne;
            }
        }
        first = 0;
        if (a < 0) break;
        tok_ids_push(out, tk->added[a].id);
        pos = me;
    }
    if (add_special)
        for (size_t i = 0; i < tk->npost_after; i++)
            tok_ids_push(out, tk->post_after[i]);
    return 1;
}

/* ---- decoding: the decoder chain over a list of strings (HF tokenizers src/decoders) ---- */

typedef struct {
    TokBuf *t;
    size_t n, cap;
} TokList;

static TokBuf *tok_list_add(TokList *l) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->t = realloc(l->t, l->cap * sizeof *l->t);
        SL_CHECK(l->t != NULL, "out of memory");
    }
    TokBuf *b = &l->t[l->n++];
    *b = (TokBuf){0};
    tok_buf_put(b, "", 0);
    return b;
}

static void tok_list_free(TokList *l) {
    for (size_t i = 0; i < l->n; i++)
        free(l->t[i].p);
    free(l->t);
    *l = (TokList){0};
}

static int tok_hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void tok_dec_step(const TokDec *d, TokList *in, TokList *out) {
    if (d->kind == TOK_DEC_BYTELEVEL || d->kind == TOK_DEC_FUSE) {
        TokBuf *o = tok_list_add(out);
        if (d->kind == TOK_DEC_FUSE) {
            for (size_t i = 0; i < in->n; i++)
                tok_buf_put(o, in->t[i].p, in->t[i].n);
            return;
        }
        /* each token's characters back to bytes via GPT-2's table, or the token's own
         * bytes if one character is not in the table; then UTF-8 lossy */
        TokBuf raw = {0};
        tok_buf_put(&raw, "", 0);
        for (size_t i = 0; i < in->n; i++) {
            const char *s = in->t[i].p;
            size_t n = in->t[i].n, start = raw.n;
            int ok = 1;
            for (size_t j = 0; j < n && ok;) {
                int32_t cp;
                j += tok_utf8_cp(s + j, n - j, &cp);
                int b = -1;
                if (cp < 256 && tok_byte_printable(cp))
                    b = cp;
                else if (cp >= 256 && cp < 256 + 68) {
                    int k = 0;
                    for (int x = 0; x < 256; x++)
                        if (!tok_byte_printable(x) && k++ == cp - 256) {
                            b = x;
                            break;
                        }
                }
                if (b < 0)
                    ok = 0;
                else {
                    char c = (char)b;
                    tok_buf_put(&raw, &c, 1);
                }
            }
            if (!ok) {
                raw.n = start;
                tok_buf_put(&raw, s, n);
            }
        }
        tok_utf8_lossy(o, raw.p, raw.n);
        free(raw.p);
        return;
    }
    if (d->kind == TOK_DEC_BYTEFALLBACK) {
        TokBuf bytes = {0};
        tok_buf_put(&bytes, "", 0);
        for (size_t i = 0; i <= in->n; i++) {
            const TokBuf *t = i < in->n ? &in->t[i] : NULL;
            if (t && t->n == 6 && memcmp(t->p, "<0x", 3) == 0 && t->p[5] == '>' &&
                tok_hexval(t->p[3]) >= 0 && tok_hexval(t->p[4]) >= 0) {
                char c = (char)(tok_hexval(t->p[3]) * 16 + tok_hexval(t->p[4]));
                tok_buf_put(&bytes, &c, 1);
                continue;
            }
            if (bytes.n) {
                TokBuf *o = tok_list_add(out);
                if (tok_utf8_valid(bytes.p, bytes.n))
                    tok_buf_put(o, bytes.p, bytes.n);
                else
                    for (size_t j = 0; j < bytes.n; j++)
                        tok_buf_put(o, "\xEF\xBF\xBD", 3);
                bytes.n = 0;
            }
            if (t) tok_buf_put(tok_list_add(out), t->p, t->n);
        }
        free(bytes.p);
        return;
    }
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->t[i].p;
        size_t n = in->t[i].n;
        TokBuf *o = tok_list_add(out);
        if (d->kind == TOK_DEC_REPLACE) {
            if (d->re)
                tok_replace_re_into(o, d->re, d->md, s, n, d->b, d->blen);
            else
                tok_replace_into(o, s, n, d->a, d->alen, d->b, d->blen);
        } else if (d->kind == TOK_DEC_METASPACE) {
            /* HF metaspace.rs decode_chain: each replacement becomes a space, except in the
             * first token, where every one is dropped (unless prepend_scheme is "never") */
            int drop = i == 0 && d->scheme != TOK_PREPEND_NEVER;
            tok_replace_into(o, s, n, d->a, d->alen, " ", drop ? 0 : 1);
        } else { /* Strip: up to start leading and stop trailing copies of content */
            size_t a = 0, b = n;
            for (int k = 0; k < d->start && a + d->alen <= b && memcmp(s + a, d->a, d->alen) == 0;
                 k++)
                a += d->alen;
            for (int k = 0;
                 k < d->stop && b >= a + d->alen && memcmp(s + b - d->alen, d->a, d->alen) == 0;
                 k++)
                b -= d->alen;
            tok_buf_put(o, s + a, b - a);
        }
    }
}

char *tok_decode(Tokenizer *tk, const int32_t *ids, size_t n, int skip_special, size_t *len_out) {
    TokList cur = {0}, nxt = {0};
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tk->nid || tk->id_off[id] < 0) continue;
        if (skip_special && tk->id_special[id]) continue;
        tok_buf_put(tok_list_add(&cur), tk->strs.p + tk->id_off[id], tk->id_len[id]);
    }
    for (size_t k = 0; k < tk->ndec; k++) {
        tok_dec_step(&tk->dec[k], &cur, &nxt);
        tok_list_free(&cur);
        cur = nxt;
        nxt = (TokList){0};
    }
    TokBuf o = {0};
    tok_buf_put(&o, "", 0);
    for (size_t i = 0; i < cur.n; i++) {
        if (i && !tk->has_decoder) tok_buf_put(&o, " ", 1); /* HF joins with spaces */
        tok_buf_put(&o, cur.t[i].p, cur.t[i].n);
    }
    tok_list_free(&cur);
    if (len_out) *len_out = o.n;
    return o.p;
}
