/* The shardlora commands; each returns the process exit status. */
#ifndef SHARDLORA_LAUNCH_CMDS_H
#define SHARDLORA_LAUNCH_CMDS_H

#include "../runtime/err.h" /* the exit statuses */

int cmd_make_model(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_preview(int argc, char **argv);
int cmd_plan(int argc, char **argv);

#endif
