/* Durable atomic file writes (see afile.h). */
#include "afile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/str.h"

int afile_open(AFile *f, const char *path, ErrStatus *st) {
    f->path = str_dup(path);
    f->tmp = str_printf("%s.tmp", path);
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        err_status_set(st, "%s: cannot create: %s", f->tmp, strerror(errno));
        free(f->path);
        free(f->tmp);
        f->path = f->tmp = NULL;
        return 0;
    }
    return 1;
}

void afile_abort(AFile *f) {
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    if (f->tmp) unlink(f->tmp);
    free(f->tmp);
    free(f->path);
    f->tmp = f->path = NULL;
}

int afile_write(AFile *f, const void *data, size_t len, ErrStatus *st) {
    const char *p = data;
    while (len > 0) {
        ssize_t put = write(f->fd, p, len);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) {
            err_status_set(st, "%s: write failed: %s", f->tmp,
                           put < 0 ? strerror(errno) : "no progress");
            afile_abort(f);
            return 0;
        }
        p += put;
        len -= (size_t)put;
    }
    return 1;
}

int afile_append_record(int fd, const char *path, const void *data, size_t len, ErrStatus *st) {
    const off_t start = lseek(fd, 0, SEEK_END);
    if (start < 0) return err_status_set(st, "%s: cannot write: %s", path, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t put = write(fd, p, left);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) {
            const int e = put < 0 ? errno : ENOSPC;
            /* no torn record: readers stop at the last whole one */
            const int cut = left == len || ftruncate(fd, start) == 0;
            return err_status_set(st, "%s: cannot write: %s%s", path, strerror(e),
                                  cut ? "" : " (and cannot cut the partial line off)");
        }
        p += put;
        left -= (size_t)put;
    }
    return 1;
}

int afile_fsync_dir(const char *path, ErrStatus *st) {
    const char *slash = strrchr(path, '/');
    char *dir = !slash ? str_dup(".") : str_ndup(path, slash == path ? 1 : (size_t)(slash - path));
    int ok = 1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        ok = err_status_set(st, "%s: cannot open directory to fsync: %s", dir, strerror(errno));
    } else {
        /* Some filesystems do not support fsync on directories; that is not a failure. */
        if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP)
            ok = err_status_set(st, "%s: fsync failed: %s", dir, strerror(errno));
        close(fd);
    }
    free(dir);
    return ok;
}

int afile_commit(AFile *f, ErrStatus *st) {
    if (fsync(f->fd) != 0) {
        err_status_set(st, "%s: fsync failed: %s", f->tmp, strerror(errno));
        afile_abort(f);
        return 0;
    }
    int rc = close(f->fd);
    f->fd = -1;
    if (rc != 0) {
        err_status_set(st, "%s: close failed: %s", f->tmp, strerror(errno));
        afile_abort(f);
        return 0;
    }
    if (rename(f->tmp, f->path) != 0) {
        err_status_set(st, "%s: cannot rename %s into place: %s", f->path, f->tmp, strerror(errno));
        afile_abort(f);
        return 0;
    }
    int ok = afile_fsync_dir(f->path, st);
    free(f->tmp);
    free(f->path);
    f->tmp = f->path = NULL;
    return ok;
}

int afile_write_all(const char *path, const void *data, size_t len, ErrStatus *st) {
    AFile f;
    if (!afile_open(&f, path, st)) return 0;
    if (!afile_write(&f, data, len, st)) return 0;
    return afile_commit(&f, st);
}

int afile_write_json(const char *path, const json_t *doc, size_t flags, ErrStatus *st) {
    char *text = json_dumps(doc, flags);
    if (!text) return err_status_set(st, "%s: cannot encode JSON", path);
    if (!(flags & JSON_REAL_PRECISION(31))) str_json_shorten(text); /* 0.05, not 0.05000...03 */
    size_t n = strlen(text);
    int ok = afile_write_all(path, text, n, st);
    free(text);
    return ok;
}

int afile_rmdir_flat(const char *dir, ErrStatus *st) {
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 1
                               : err_status_set(st, "%s: cannot open: %s", dir, strerror(errno));
    struct dirent *e;
    char path[4352];
    int ok = 1;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0 && errno != ENOENT && ok)
            ok = err_status_set(st, "%s: cannot remove: %s", path, strerror(errno));
    }
    closedir(d);
    if (ok && rmdir(dir) != 0 && errno != ENOENT)
        ok = err_status_set(st, "%s: cannot remove: %s", dir, strerror(errno));
    return ok;
}

int afile_mkdirs(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return 0;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return 0;
        *p = '/';
    }
    return mkdir(buf, 0777) == 0 || errno == EEXIST;
}

int afile_json_error(ErrStatus *st, const char *path, const json_error_t *e) {
    return err_status_set(st, "%s: JSON error at byte %d (line %d, column %d): %s", path,
                          e->position, e->line, e->column, e->text);
}

/* ---- reading inputs ------------------------------------------------------------------ */

static const char *afile_kind(mode_t m) {
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISDIR(m)) return "a directory";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a plain file";
}

int afile_open_input(const char *path, struct stat *sb, ErrStatus *st) {
    /* O_NONBLOCK: opening a FIFO for reading blocks until a writer appears; a non-blocking
     * open returns at once, and fstat then shows what it is. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        const int why = errno;
        err_status_set(st, "%s: cannot open: %s", path, strerror(why));
        errno = why;
        return -1;
    }
    if (fstat(fd, sb) != 0) {
        err_status_set(st, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(sb->st_mode)) {
        err_status_set(st, "%s: not a regular file (%s)", path, afile_kind(sb->st_mode));
        close(fd);
        errno = S_ISDIR(sb->st_mode) ? EISDIR : EINVAL; /* never a stale ENOENT */
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        err_status_set(st, "%s: cannot clear O_NONBLOCK: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

FILE *afile_fopen_input(const char *path, ErrStatus *st) {
    struct stat sb;
    int fd = afile_open_input(path, &sb, st);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        err_status_set(st, "%s: cannot open: %s", path, strerror(errno));
        close(fd);
    }
    return f;
}

char *afile_read_input(const char *path, size_t max, size_t *len, ErrStatus *st) {
    struct stat sb;
    int fd = afile_open_input(path, &sb, st);
    if (fd < 0) return NULL;
    if (sb.st_size < 0 || (unsigned long long)sb.st_size > max) {
        err_status_set(st, "%s: %lld bytes is more than the %zu this file may have", path,
                       (long long)sb.st_size, max);
        close(fd);
        return NULL;
    }
    const size_t want = (size_t)sb.st_size;
    char *buf = malloc(want + 1);
    SL_CHECK(buf != NULL, "out of memory reading %s (%zu bytes)", path, want);
    size_t got = 0;
    int ok = 1;
    for (;;) {
        /* one byte past the size fstat gave: a file that grew is noticed, not cut */
        char extra;
        ssize_t n = got < want ? read(fd, buf + got, want - got) : read(fd, &extra, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            ok = err_status_set(st, "%s: read failed: %s", path, strerror(errno));
            break;
        }
        if (n == 0) {
            if (got < want)
                ok = err_status_set(st, "%s: shrank from %zu to %zu bytes while being read", path,
                                    want, got);
            break;
        }
        if (got == want) {
            ok = err_status_set(st, "%s: grew past %zu bytes while being read", path, want);
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    if (!ok) {
        free(buf);
        return NULL;
    }
    buf[got] = 0;
    *len = got;
    return buf;
}

json_t *afile_read_json(const char *path, size_t max, size_t flags, ErrStatus *st) {
    size_t len = 0;
    char *buf = afile_read_input(path, max, &len, st);
    if (!buf) return NULL;
    json_error_t je;
    json_t *root = json_loadb(buf, len, flags, &je);
    free(buf);
    if (!root) afile_json_error(st, path, &je);
    return root;
}
