/* What the commands share besides their exit statuses (see cmds.h). */
#include "cmds.h"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

int launch_mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return 0;
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return 0;
    return 1;
}
