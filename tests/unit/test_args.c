/* launch/args: aliases ('-' or '_', fixed values, refused with their option), did-you-mean
 * distances, and the flat-YAML config reader (scalars, quotes, comments, lists, refusals
 * with file:line). args.c is a launch/ file, compiled into this test. */
#include "../../launch/args.h"
#include "check.h"

typedef struct {
    ArgConfig config;
    const char *kind, *name;
    double lr;
    int64_t steps;
    int pack;
    ArgStrs data;
} Opts;

/* A small table in the shape of train's: groups, aliases, a fixed-value alias. */
static int table(ArgSpec *t, Opts *o) {
    *o = (Opts){.kind = "lora", .lr = 2e-4, .pack = 1};
    const ArgSpec rows[] = {
        {.type = ARG_GROUP, .group = ARGG_MODEL},
        {.name = "config", .type = ARG_CONFIG, .dst = &o->config, .metavar = "FILE", .help = "c"},
        {.name = "name", .type = ARG_STR, .dst = &o->name, .metavar = "S", .help = "a string"},
        {.type = ARG_GROUP, .group = ARGG_DATA},
        {.name = "data", .type = ARG_STRS, .dst = &o->data, .metavar = "F", .help = "files"},
        {.name = "pack", .type = ARG_BOOL, .dst = &o->pack, .help = "pack"},
        {.name = "packing", .type = ARG_ALIAS, .target = "pack"},
        {.type = ARG_GROUP, .group = ARGG_OPTIM},
        {.name = "lr", .type = ARG_FLOAT, .dst = &o->lr, .metavar = "X", .help = "rate"},
        {.name = "learning-rate", .type = ARG_ALIAS, .target = "lr"},
        {.name = "steps", .type = ARG_INT, .dst = &o->steps, .metavar = "N", .help = "steps"},
        {.name = "max-steps", .type = ARG_ALIAS, .target = "steps"},
        {.name = "adapter", .type = ARG_STR, .dst = &o->kind, .metavar = "K", .help = "kind"},
        {.name = "use-dora", .type = ARG_ALIAS, .target = "adapter", .value = "dora"},
    };
    memcpy(t, rows, sizeof rows);
    return (int)(sizeof rows / sizeof rows[0]);
}

/* Parses argv (after a dummy "shardlora cmd") with a fresh table; returns args_parse's
 * verdict, the message in st. */
static int parse(Opts *o, ArgSpec *t, int *n, const char *const *args, int nargs, ErrStatus *st) {
    char *argv[32] = {"shardlora", "cmd"};
    for (int i = 0; i < nargs; i++)
        argv[2 + i] = (char *)args[i];
    *n = table(t, o);
    int help;
    return args_parse(t, *n, 2 + nargs, argv, 2, &help, st);
}

/* The config file `text` read through --config; the verdict, the message in st. */
static int parse_config(Opts *o, ArgSpec *t, int *n, const char *text, ErrStatus *st) {
    char *path = check_tmp_path("c.yaml");
    check_write_file(path, text, strlen(text));
    const char *args[] = {"--config", path};
    return parse(o, t, n, args, 2, st);
}

static void expect_refused(const char *what, int ok, const ErrStatus *st, const char *want) {
    CHECK_TRUE(!ok && strstr(st->msg, want), "%s: refused with '%s' (got %s: '%s')", what, want,
               ok ? "accepted" : "refused", ok ? "" : st->msg);
}

static void test_distance(void) {
    CHECK_TRUE(args_distance("learnig-rate", "learning-rate") == 1, "one deletion");
    CHECK_TRUE(args_distance("lr", "rl") == 1, "a swap of neighbours is one edit");
    CHECK_TRUE(args_distance("", "abc") == 3 && args_distance("abc", "abc") == 0, "ends");
    CHECK_TRUE(args_distance("kitten", "sitting") == 3, "kitten -> sitting");
}

static void test_flags(void) {
    ArgSpec t[32];
    Opts o;
    ErrStatus st;
    int n;
    const char *a1[] = {"--learning_rate=1e-3", "--max-steps", "7", "--no-packing", "--use_dora"};
    int ok = parse(&o, t, &n, a1, 5, &st);
    CHECK_TRUE(ok && o.lr == 1e-3 && o.steps == 7 && o.pack == 0 && !strcmp(o.kind, "dora"),
               "aliases set their options (%s)", ok ? "" : st.msg);
    CHECK_TRUE(args_find(t, n, "lr")->seen == ARG_FROM_FLAG && !args_find(t, n, "learning-rate"),
               "args_find knows the option, not its alias");
    json_t *j = args_to_json(t, n);
    CHECK_TRUE(json_object_size(j) == 7 && json_object_get(j, "lr") &&
                   !json_object_get(j, "learning-rate"),
               "args_to_json: 7 options by their own names");
    json_decref(j);
    args_free(t, n);
    const char *a2[] = {"--use-dora=false", "--packing=true"};
    ok = parse(&o, t, &n, a2, 2, &st);
    CHECK_TRUE(ok && !strcmp(o.kind, "lora") && o.pack == 1, "--use-dora=false sets nothing");
    args_free(t, n);
    const char *a3[] = {"--lr", "1", "--learning-rate", "1"};
    expect_refused("alias and option", parse(&o, t, &n, a3, 4, &st), &st,
                   "--lr and --learning-rate both set --lr");
    args_free(t, n);
    const char *a4[] = {"--lerning-rate", "1"};
    expect_refused("typo", parse(&o, t, &n, a4, 2, &st), &st,
                   "unknown option --lerning-rate; did you mean --learning-rate (= --lr)?");
    args_free(t, n);
    const char *a5[] = {"--usedora"};
    expect_refused("typo of a fixed-value alias", parse(&o, t, &n, a5, 1, &st), &st,
                   "did you mean --use-dora (= --adapter dora)?");
    args_free(t, n);
    const char *a6[] = {"--zzzzzzz", "1"};
    expect_refused("far from every name", parse(&o, t, &n, a6, 2, &st), &st,
                   "unknown option --zzzzzzz (see --help)");
    args_free(t, n);
}

static void test_yaml(void) {
    ArgSpec t[32];
    Opts o;
    ErrStatus st;
    int n;
    int ok = parse_config(&o, t, &n,
                          "---\n# comment\nname: 'it''s # not a comment'  # a comment\n"
                          "learning_rate: 5e-4\nmax_steps: ~\npacking: No\nuse_dora: yes\n"
                          "data:\n  - a.jsonl\n  - \"b \\\"q\\\".jsonl\"\n- c.jsonl\n",
                          &st);
    CHECK_TRUE(ok, "YAML read (%s)", ok ? "" : st.msg);
    CHECK_TRUE(ok && !strcmp(o.name, "it's # not a comment") && o.lr == 5e-4 && o.steps == 0 &&
                   o.pack == 0 && !strcmp(o.kind, "dora"),
               "YAML scalars: quotes, comments, null, booleans, a fixed-value alias");
    CHECK_TRUE(ok && o.data.n == 3 && !strcmp(o.data.v[1], "b \"q\".jsonl") &&
                   !strcmp(o.data.v[2], "c.jsonl"),
               "YAML block list of 3 (escapes decoded)");
    args_free(t, n);
    ok = parse_config(&o, t, &n, "data: [a, 'b, c', \"d\"]\nlr = 0.5\n", &st);
    CHECK_TRUE(ok && o.data.n == 3 && !strcmp(o.data.v[1], "b, c") && o.lr == 0.5,
               "flow list with a quoted comma; key = value lines too");
    args_free(t, n);
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"lr: 1\nadapter:\n  kind: dora\n", "c.yaml:3: nested mappings are not supported"},
        {"lr: 1\nsteps: [1, 2]\n", "c.yaml:2: a list is only allowed for repeatable options"},
        {"lr: 1\nlearning_rate: 2\n", "c.yaml:2: lr and learning-rate both set lr"},
        {"lerning_rate: 2\n",
         "c.yaml:1: unknown option 'lerning_rate'; did you mean learning_rate"},
        {"name: &x y\n", "c.yaml:1: YAML anchors, aliases and tags are not supported"},
        {"name: |\n  text\n", "c.yaml:1: block scalars"},
        {"name: 'open\n", "c.yaml:1: unterminated single-quoted value"},
        {"name: \"a\\qb\"\n", "c.yaml:1: unsupported escape"},
        {"- a\n", "c.yaml:1: a list item with no key above it"},
        {"data: [a, b\n", "c.yaml:1: a list opened with [ must close with ]"},
        {"name: {a: 1}\n", "c.yaml:1: nested mappings are not supported"},
        {"data:\n  - [a]\n", "c.yaml:2: nested lists are not supported"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ok = parse_config(&o, t, &n, bad[i].text, &st);
        expect_refused(bad[i].text, ok, &st, bad[i].want);
        args_free(t, n);
    }
}

int main(void) {
    check_tmp_init("test_args");
    test_distance();
    test_flags();
    test_yaml();
    check_rm_rf(check_tmp);
    return check_finish();
}
