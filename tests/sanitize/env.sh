# shellcheck shell=bash
# The sanitizer settings of tests/run.sh's sanitized pass; source it before running tests in
# a -DSHARDLORA_SANITIZE=ON tree by hand (README "Sanitized build").
SAN_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# halt_on_error: the first report ends the process with a non-zero status, so the test fails.
# fast_unwind_on_malloc=0: full allocation stacks, which lsan.supp's library entries match
# (Open MPI and its libraries have no frame pointers).
# detect_leaks=1: LeakSanitizer at exit (the default on x86-64 Linux, said here to be sure).
# allocator_may_return_null=1: an allocation too big to satisfy returns NULL as glibc's does,
# so the code's own out-of-memory path runs (ASan would end the process with its report).
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:fast_unwind_on_malloc=0:allocator_may_return_null=1"
# the third-party libraries' leaks at exit (see lsan.supp); print_suppressions=0 keeps the
# list of suppressions used off stderr, which several tests require to be empty or one line.
export LSAN_OPTIONS="suppressions=$SAN_DIR/lsan.supp:print_suppressions=0"
# -fno-sanitize-recover=undefined already makes UB fatal; the stack says where it came from.
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
