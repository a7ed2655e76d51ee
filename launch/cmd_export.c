/* `shardlora export CKPT --out DIR`: a training checkpoint (adapter values stored in global
 * coordinates, io/checkpoint.h) -> a PEFT adapter directory with a model card
 * (model/adapter_io.h). One process, no MPI: the checkpoint holds full tensors whatever
 * layout wrote it. The bytes equal those the training run wrote at the same step. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "../io/afile.h"
#include "../io/checkpoint.h"
#include "../model/adapter_io.h"
#include "../runtime/str.h"
#include "args.h"
#include "cmds.h"

typedef struct {
    const char *ckpt, *out, *base_model;
} ExportOpts;

static void export_warn(void *ctx, const char *msg) {
    (void)ctx;
    fprintf(stderr, "shardlora export: WARNING: %s; trying an older checkpoint\n", msg);
}

static int export_is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* CKPT may be a checkpoint (step-N or latest), a run's checkpoints/ directory, or the run's
 * output directory; the last two mean its newest usable checkpoint. */
static int export_open(CkptReader *r, const char *ckpt, char *used, size_t n, ErrStatus *st) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", ckpt, CKPT_MANIFEST_NAME);
    struct stat sb;
    if (stat(path, &sb) == 0) {
        snprintf(used, n, "%s", ckpt);
        if (!ckpt_open(r, ckpt, st)) return 0;
        if (!ckpt_verify(r, st)) {
            ckpt_close(r);
            return 0;
        }
        return 1;
    }
    char root[4200];
    snprintf(root, sizeof root, "%s/checkpoints", ckpt);
    if (!export_is_dir(root)) snprintf(root, sizeof root, "%s", ckpt);
    if (!export_is_dir(root))
        return err_status_set(st, "%s: no such checkpoint or directory", ckpt);
    int rc = ckpt_open_latest(root, 1, r, used, n, export_warn, NULL, st);
    if (rc == 0)
        return err_status_set(st, "%s: no checkpoint here (expected %s or step-N/ directories)",
                              ckpt, CKPT_MANIFEST_NAME);
    return rc > 0;
}

/* The model's layers as the adapter tensors imply them (largest layer index + 1). */
static int64_t export_layers(const CkptReader *r) {
    static const char prefix[] = "base_model.model.model.layers.";
    int64_t L = 0;
    for (size_t i = 0; i < r->ntensors; i++) {
        const char *name = r->tensors[i].name;
        if (strncmp(name, prefix, sizeof prefix - 1) != 0) continue;
        long long l = strtoll(name + sizeof prefix - 1, NULL, 10);
        if (l + 1 > L) L = l + 1;
    }
    return L;
}

int cmd_export(int argc, char **argv) {
    ExportOpts o = {NULL, NULL, NULL};
    /* one option per line: name, type, destination, metavar, help, required, seen */
    // clang-format off
    ArgSpec specs[] = {
        {"checkpoint", ARG_STR, &o.ckpt, "CKPT", "the checkpoint (also the first argument): OUT/checkpoints/step-N, .../latest, OUT/checkpoints or OUT (its newest usable checkpoint)", 0, 0},
        {"out", ARG_STR, &o.out, "DIR", "output directory: adapter_model.safetensors, adapter_config.json, README.md (created; existing files replaced)", 1, 0},
        {"base-model", ARG_STR, &o.base_model, "NAME", "base_model_name_or_path to write (default: the training run's --model); a Hub id (owner/name) also becomes the model card's base_model", 0, 0},
    };
    // clang-format on
    const int nspecs = (int)(sizeof specs / sizeof specs[0]);
    int first = 2;
    if (argc > 2 && strncmp(argv[2], "--", 2) != 0 && strcmp(argv[2], "-h") != 0) {
        o.ckpt = argv[2];
        first = 3;
    }
    int rc;
    if (!args_command(specs, nspecs, argc, argv, first, "export",
                      "shardlora export CKPT --out DIR [options]",
                      "Write the adapter of a training checkpoint as a PEFT adapter directory "
                      "(adapter_model.safetensors with PEFT's keys, adapter_config.json, and a "
                      "README.md model card with the training configuration). One process, no "
                      "mpirun: a checkpoint holds full tensors whatever layout wrote it. Exit "
                      "status 0, 2 bad command line, 3 bad or missing checkpoint, 4 cannot write "
                      "DIR.",
                      &rc)) {
        args_free(specs, nspecs);
        return rc;
    }
    ErrStatus st;
    int ok = 1;
    if (!o.ckpt) ok = err_status_set(&st, "which checkpoint? (shardlora export CKPT --out DIR)");
    if (!ok) {
        fprintf(stderr, "shardlora export: %s\n", st.msg);
        args_free(specs, nspecs);
        return EXIT_USAGE;
    }
    CkptReader r;
    char used[4200] = "";
    if (!export_open(&r, o.ckpt, used, sizeof used, &st)) {
        fprintf(stderr, "shardlora export: %s\n", st.msg);
        args_free(specs, nspecs);
        return EXIT_BAD_INPUT;
    }
    AdioCfg c;
    const int64_t L = export_layers(&r);
    ok = adio_cfg_from_json(&c, r.meta.adapter_config, L, &st);
    if (!ok) {
        ErrStatus inner = st;
        err_status_set(&st, "%s: %s", used, inner.msg);
    }
    /* base_model_name_or_path: the run's --model unless --base-model */
    json_t *run = json_loads(r.meta.run_config, 0, NULL);
    json_t *mv = run ? json_object_get(run, "model") : NULL;
    if (ok) {
        free(c.base_model);
        c.base_model = strdup(o.base_model         ? o.base_model
                              : json_is_string(mv) ? json_string_value(mv)
                                                   : "");
        SL_CHECK(c.base_model, "out of memory");
    }
    if (run) json_decref(run);
    /* every adapter tensor (optimizer state is stored as NAME/exp_avg, ...) */
    AdioTensor *t = calloc(r.ntensors ? r.ntensors : 1, sizeof *t);
    float **buf = calloc(r.ntensors ? r.ntensors : 1, sizeof *buf);
    SL_CHECK(t && buf, "out of memory");
    int n = 0;
    for (size_t i = 0; ok && i < r.ntensors; i++) {
        const CkptTensor *ct = &r.tensors[i];
        if (strchr(ct->name, '/')) continue;
        buf[n] = malloc((size_t)(ct->rows * ct->cols) * sizeof(float));
        SL_CHECK(buf[n], "out of memory");
        t[n] = (AdioTensor){ct->name, ct->rows, ct->cols, buf[n]};
        ok = ckpt_read_slice(&r, ct->name, 0, ct->rows, 0, ct->cols, buf[n], &st);
        n++;
    }
    rc = ok ? 0 : EXIT_BAD_INPUT;
    if (ok) {
        AdioCard card = {r.meta.run_config,
                         r.meta.optimizer_kind,
                         r.meta.optimizer_hparams,
                         r.meta.step,
                         r.meta.tp,
                         r.meta.dp,
                         adio_hub_id_ok(o.base_model, 0) ? o.base_model : NULL};
        ok = afile_mkdirs(o.out)
                 ? adio_export(o.out, &c, t, n, &card, &st)
                 : err_status_set(&st, "%s: cannot create: %s", o.out, strerror(errno));
        rc = ok ? 0 : EXIT_IO;
    }
    char ab[32];
    if (ok)
        fprintf(stderr,
                "shardlora export: %s (step %lld, written at tp=%d dp=%d) -> %s: %d tensors, r=%d, "
                "lora_alpha=%s%s\n",
                used, (long long)r.meta.step, r.meta.tp, r.meta.dp, o.out, n, c.acfg.r,
                str_fmt_double(c.alpha, ab, sizeof ab),
                c.slot_r ? " (per-module ranks/alphas in rank_pattern / alpha_pattern)" : "");
    else
        fprintf(stderr, "shardlora export: %s\n", st.msg);
    for (int i = 0; i < n; i++)
        free(buf[i]);
    free(buf);
    free(t);
    if (c.acfg.kind[0]) adio_cfg_free(&c);
    ckpt_close(&r);
    args_free(specs, nspecs);
    return rc;
}
