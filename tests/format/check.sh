#!/usr/bin/env bash
# The format check (CTest `format`, label unit): every tracked *.c / *.h must be what
# clang-format makes of it with the root .clang-format. Fails with the list of files that
# differ and the command that fixes them. Usage: tests/format/check.sh [SOURCE_ROOT]
set -uo pipefail

ROOT="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
# clang-format's output changes between major versions; the style is checked with
# Debian 12's clang-format 14 (launch/install-deps.sh installs it).
CLANG_FORMAT="${CLANG_FORMAT:-$(command -v clang-format-14 || command -v clang-format || true)}"
WANT_MAJOR=14
# Generated files are not ours to format (none is tracked today; protoc-c output lives in
# the build tree). An extended regex over the paths git ls-files prints.
EXCLUDE='(\.pb-c\.[ch]$)'

if [ -z "$CLANG_FORMAT" ]; then
  echo "format: clang-format not found (Debian package clang-format; launch/install-deps.sh installs it)" >&2
  exit 1
fi
if ! git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "format: $ROOT is not a git work tree: no list of tracked files (skipped)"
  exit 77
fi
version="$("$CLANG_FORMAT" --version)"
major="$(sed -n 's/.*clang-format version \([0-9]*\).*/\1/p' <<<"$version")"
if [ "$major" != "$WANT_MAJOR" ]; then
  echo "format: note: $version is not clang-format $WANT_MAJOR; its output may differ" >&2
fi

cd "$ROOT" || exit 1
mapfile -t files < <(git ls-files -- '*.c' '*.h' | grep -Ev "$EXCLUDE")
if [ ${#files[@]} -eq 0 ]; then
  echo "format: no tracked *.c / *.h files under $ROOT" >&2
  exit 1
fi

err="$("$CLANG_FORMAT" --style=file --dry-run --Werror "${files[@]}" 2>&1 >/dev/null)"
rc=$?
mapfile -t bad < <(sed -n 's/^\(.*\):[0-9]*:[0-9]*: error: code should be clang-formatted.*/\1/p' \
                     <<<"$err" | sort -u)
if [ $rc -eq 0 ]; then
  echo "format: ${#files[@]} files match .clang-format ($version)"
  exit 0
fi
if [ ${#bad[@]} -eq 0 ]; then
  # clang-format failed for another reason (a bad .clang-format, an unreadable file).
  echo "format: clang-format failed (status $rc):" >&2
  echo "$err" >&2
  exit 1
fi
echo "format: ${#bad[@]} of ${#files[@]} files differ from .clang-format ($version):"
printf '  %s\n' "${bad[@]}"
echo "fix with: (cd $ROOT && $CLANG_FORMAT -i FILE...), or see the changes with"
echo "          $CLANG_FORMAT --style=file FILE | diff FILE -"
exit 1
