/* io/afile's input side: afile_open_input refuses a FIFO, a directory and a device without
 * blocking, afile_read_input checks sizes against the file and a maximum, afile_read_json
 * rejects duplicate keys when asked. Every case runs under alarm(): a hang fails the test. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../io/afile.h"
#include "check.h"

/* afile_open_input on path must fail with a message holding PATH and want. */
static void expect_refused(const char *what, const char *path, const char *want) {
    struct stat sb;
    ErrStatus st;
    err_status_ok(&st);
    int fd = afile_open_input(path, &sb, &st);
    CHECK_TRUE(fd < 0, "%s: accepted", what);
    if (fd >= 0) close(fd);
    CHECK_TRUE(strstr(st.msg, path) && strstr(st.msg, want), "%s: want '%s', got '%s'", what, want,
               st.msg);
    printf("  %-22s -> %s\n", what, st.msg);
}

static void test_open_input(void) {
    printf("-- afile_open_input\n");
    const char *fifo = check_tmp_path("fifo");
    CHECK_TRUE(mkfifo(fifo, 0600) == 0, "mkfifo: %s", strerror(errno));
    /* no writer: a plain open() would block here forever */
    expect_refused("FIFO", fifo, "not a regular file (a FIFO)");
    expect_refused("directory", check_tmp, "not a regular file (a directory)");
    expect_refused("device", "/dev/null", "not a regular file (a character device)");
    expect_refused("missing", check_tmp_path("nope"), "cannot open: No such file");
    {
        struct stat sb;
        ErrStatus st;
        CHECK_TRUE(afile_open_input(check_tmp_path("nope"), &sb, &st) < 0 && errno == ENOENT,
                   "a missing file keeps errno ENOENT (%d)", errno);
        CHECK_TRUE(afile_open_input(check_tmp, &sb, &st) < 0 && errno == EISDIR,
                   "a directory gives EISDIR, not a stale errno (%d)", errno);
    }
    const char *reg = check_tmp_path("reg");
    check_write_file(reg, "hello", 5);
    struct stat sb;
    ErrStatus st;
    int fd = afile_open_input(reg, &sb, &st);
    CHECK_TRUE(fd >= 0 && sb.st_size == 5, "regular file: %s", st.msg);
    if (fd >= 0) {
        CHECK_TRUE((fcntl(fd, F_GETFL) & O_NONBLOCK) == 0, "O_NONBLOCK left set");
        CHECK_TRUE((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0, "no FD_CLOEXEC");
        close(fd);
    }
    FILE *f = afile_fopen_input(fifo, &st);
    CHECK_TRUE(!f && strstr(st.msg, "a FIFO"), "afile_fopen_input on a FIFO: %s", st.msg);
    if (f) fclose(f);
    f = afile_fopen_input(reg, &st);
    char buf[8] = {0};
    CHECK_TRUE(f && fread(buf, 1, sizeof buf, f) == 5 && !memcmp(buf, "hello", 5),
               "afile_fopen_input reads: %s", st.msg);
    if (f) fclose(f);
}

static void test_read_input(void) {
    printf("-- afile_read_input / afile_read_json\n");
    const char *p = check_tmp_path("doc.json");
    check_write_file(p, "{\"a\": 1}", 8);
    size_t len = 0;
    ErrStatus st;
    char *b = afile_read_input(p, 8, &len, &st);
    CHECK_TRUE(b && len == 8 && b[8] == 0 && !strcmp(b, "{\"a\": 1}"), "read at the maximum: %s",
               st.msg);
    free(b);
    b = afile_read_input(p, 7, &len, &st);
    CHECK_TRUE(!b && strstr(st.msg, "8 bytes is more than the 7"), "over the maximum: %s", st.msg);
    free(b);
    b = afile_read_input(check_tmp_path("fifo"), 100, &len, &st);
    CHECK_TRUE(!b && strstr(st.msg, "a FIFO"), "FIFO read: %s", st.msg);
    free(b);
    const char *empty = check_tmp_path("empty");
    check_write_file(empty, "", 0);
    b = afile_read_input(empty, 100, &len, &st);
    CHECK_TRUE(b && len == 0 && b[0] == 0, "empty file: %s", st.msg);
    free(b);

    json_t *j = afile_read_json(p, 100, JSON_REJECT_DUPLICATES, &st);
    CHECK_TRUE(j && json_integer_value(json_object_get(j, "a")) == 1, "json: %s", st.msg);
    json_decref(j);
    const char *dup = check_tmp_path("dup.json");
    check_write_file(dup, "{\"a\": 1, \"a\": 2}", 16);
    j = afile_read_json(dup, 100, JSON_REJECT_DUPLICATES, &st);
    CHECK_TRUE(!j && strstr(st.msg, dup) && strstr(st.msg, "duplicate"), "duplicate key: %s",
               st.msg);
    json_decref(j);
    j = afile_read_json(dup, 100, 0, &st);
    CHECK_TRUE(j && json_integer_value(json_object_get(j, "a")) == 2, "duplicates allowed: %s",
               st.msg);
    json_decref(j);
}

int main(void) {
    alarm(60); /* a blocking open would otherwise hang the test run */
    check_tmp_init("test_afile");
    test_open_input();
    test_read_input();
    check_rm_rf(check_tmp);
    return check_finish();
}
