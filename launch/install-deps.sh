#!/usr/bin/env bash
# Installs the Debian packages shardlora needs to build, run and test (as root, with
# apt-get); installs nothing when they are all present. Used by launch/quickstart.sh and
# tests/run.sh.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config            # toolchain
  libopenblas-dev                             # GEMM backend (OpenBLAS)
  libdnnl-dev                                 # BF16 matmuls (oneDNN: --compute-dtype bf16)
  libopenmpi-dev openmpi-bin                  # MPI
  libnuma-dev numactl                         # NUMA-local pinned memory
  libprotobuf-c-dev protobuf-c-compiler       # checkpoints
  libjansson-dev                              # JSON (config.json, safetensors headers, JSONL)
  libpcre2-dev libutf8proc-dev                # tokenizer: Unicode regex pre-tokenizers, NFC
  python3-torch python3-numpy                 # the PyTorch reference and baseline (/usr/bin/python3)
  python3-protobuf protobuf-compiler          # the tests' own reader of TensorBoard event files
  python3-jinja2                              # the chat-template oracle (tests/reference/jinja_oracle.py)
  fortunes                                    # public-domain quotes: the quick start's text
  procps                                      # pgrep / pkill: the tests' clean-up of stray ranks
  time                                        # /usr/bin/time: peak RSS in benchmarks/recompute.sh
  clang-format                                # the format check (tests/format/check.sh)
  clang libclang-rt-14-dev libomp-dev         # the fuzz build (tests/fuzz/run.sh): clang, libFuzzer, OpenMP
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: these packages are missing and this is not root: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
