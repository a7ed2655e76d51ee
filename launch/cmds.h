/* The shardlora commands; each returns the process exit status. */
#ifndef SHARDLORA_LAUNCH_CMDS_H
#define SHARDLORA_LAUNCH_CMDS_H

/* Exit statuses (documented in README.md). */
enum {
    EXIT_OK_STATUS = 0,
    EXIT_USAGE = 2,      /* bad command line or impossible layout */
    EXIT_BAD_INPUT = 3,  /* bad model, config or data files */
    EXIT_IO = 4,         /* cannot write outputs */
    EXIT_NONFINITE = 5,  /* the loss or gradient became NaN/inf */
    EXIT_REQUEUE = 75,   /* stopped on SIGUSR1/SIGTERM after writing a checkpoint: requeue */
};

int cmd_make_model(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_merge(int argc, char **argv);

/* mkdir -p; returns 0 and sets errno on failure. */
int launch_mkdirs(const char *path);

#endif
