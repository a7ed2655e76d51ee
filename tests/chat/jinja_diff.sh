#!/usr/bin/env bash
# The chat-template engine (io/jinja.c through tests/unit/jinja_render) against the Jinja2
# oracle (tests/reference/jinja_oracle.py): every construct case of tests/chat/cases/ and the
# real templates (npm packages + tests/chat/templates/) over tests/chat/conversations.jsonl must
# render byte for byte the same, or fail with the same error kind (jinja_diff.py says how).
# Exits 77 when JINJA_RENDER is missing (after checking the cases on the oracle alone): ctest
# counts that as a failure, since the project builds it.
# usage: jinja_diff.sh JINJA_RENDER TOKENIZER_CACHE WORK_DIR [NAME_SUBSTRING]
set -euo pipefail
BIN="$1"; CACHE="$2"; W="$3/jinja_diff"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$HERE/../tokenizer/install.sh" "$CACHE" > /dev/null
rm -rf "$W"; mkdir -p "$W"
exec /usr/bin/python3 "$HERE/jinja_diff.py" "$BIN" "$CACHE" "$W" "${@:4}"
