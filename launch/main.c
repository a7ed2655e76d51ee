/* shardlora: LoRA fine-tuning of large frozen Llama-family models on CPU clusters.
 * main() dispatches to the commands. */
#include <stdio.h>
#include <string.h>

#include "../parallel/grid.h"
#include "../runtime/gemm.h"
#include "cmds.h"

#ifndef SHARDLORA_GIT
#define SHARDLORA_GIT "" /* `git describe` when the build was configured in a git tree */
#endif

static void main_usage(FILE *f) {
    fprintf(
        f,
        "usage: shardlora COMMAND [options]   (shardlora COMMAND --help for its options)\n\n"
        "commands (train, eval, generate, merge: one process or under mpirun / srun):\n"
        "  make-model   write a Hugging Face model directory with synthetic random weights\n"
        "  train        train LoRA, LoRA-FA, DoRA or VeRA adapters on a frozen model (tp x dp)\n"
        "  inspect      print a checkpoint's manifest and verify its checksums\n"
        "  tokenize     encode stdin with a model's tokenizer.json (or --decode ids)\n"
        "  preview      show data examples as train tokenises them (chat template, counted "
        "tokens)\n"
        "  plot         draw OUT/metrics.jsonl as an SVG chart of the train and eval loss\n"
        "  generate     generate text from prompts (model + optional adapter, KV cache, any tp)\n"
        "  export       write a training checkpoint's adapter as a PEFT adapter directory\n"
        "  eval         mean loss and perplexity of a model (+ adapter) on a JSONL dataset\n"
        "  merge        merge a PEFT LoRA, DoRA or VeRA adapter into the weights (any number of "
        "ranks)\n"
        "  plan         which tp x dp layouts of a model fit N nodes, and the bytes per link per "
        "step (config.json only)\n"
        "  version      print the versions of shardlora, its MPI library and its BLAS (also "
        "--version)\n"
        "\n"
        "environment:\n"
        "  SHARDLORA_BLAS_CORE   'keep' to keep OpenBLAS's core choice, or a core name to force\n"
        "                        (default: use AVX-512 kernels when the CPU has them)\n"
        "  OMP_WAIT_POLICY       PASSIVE when unset (idle OpenMP threads sleep, not spin)\n");
}

/* Three lines: shardlora, the MPI library (MPI_Get_library_version needs no MPI_Init), the
 * BLAS with its build configuration. */
static int main_version(void) {
    char mpi[8192];
    printf("shardlora %s%s%s%s\n", SHARDLORA_VERSION, SHARDLORA_GIT[0] ? " (git " : "",
           SHARDLORA_GIT, SHARDLORA_GIT[0] ? ")" : "");
    printf("MPI: %s\n", grid_mpi_version(mpi, sizeof mpi));
    printf("BLAS: %s\n", gemm_blas_config());
    return 0;
}

int main(int argc, char **argv) {
    /* Before anything touches BLAS, OpenMP or MPI: this may re-exec the program. */
    gemm_ensure_blas_core(argc, argv);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        main_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) return main_version();
    if (strcmp(argv[1], "make-model") == 0) return cmd_make_model(argc, argv);
    if (strcmp(argv[1], "train") == 0) return cmd_train(argc, argv);
    if (strcmp(argv[1], "inspect") == 0) return cmd_inspect(argc, argv);
    if (strcmp(argv[1], "tokenize") == 0) return cmd_tokenize(argc, argv);
    if (strcmp(argv[1], "plot") == 0) return cmd_plot(argc, argv);
    if (strcmp(argv[1], "generate") == 0) return cmd_generate(argc, argv);
    if (strcmp(argv[1], "export") == 0) return cmd_export(argc, argv);
    if (strcmp(argv[1], "eval") == 0) return cmd_eval(argc, argv);
    if (strcmp(argv[1], "merge") == 0) return cmd_merge(argc, argv);
    if (strcmp(argv[1], "preview") == 0) return cmd_preview(argc, argv);
    if (strcmp(argv[1], "plan") == 0) return cmd_plan(argc, argv);
    fprintf(stderr, "shardlora: unknown command '%s'\n", argv[1]);
    main_usage(stderr);
    return EXIT_USAGE;
}
