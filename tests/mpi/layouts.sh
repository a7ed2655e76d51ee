#!/usr/bin/env bash
# The process grid end to end (DESIGN.md §2-§5): runs of `shardlora train` at several
# (tp, dp) layouts on tiny made models must compute the same step; the per-rank summaries
# must show the sharded frozen memory and adapter-sized gradient traffic; bad layouts are
# refused at once with one line. Comparisons and figures: tests/mpi/mpi_check.py.
# usage: layouts.sh SHARDLORA_BINARY WORK_DIR TEST
#   TEST: equivalence | init | memory | comm | bad-layouts | accumulation | clipping
# Every check runs (a failed run or comparison does not stop the others); exit 1 if any failed.
# Run helpers, tolerances and the layout comparisons: tests/mpi/common.sh.
set -uo pipefail
SL="$1"; TEST="$3"; W="$2/mpi/$TEST"
# shellcheck source=tests/mpi/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
REFUSE_TIMEOUT=30      # seconds a bad layout may take to be refused

# Pre-tokenised data: 7 rows (so the global batches wrap around the file), varied lengths
# (truncated and padded), masked prompts, one row with no counted label at all (a DP rank or
# micro-batch may count 0 tokens: the loss must be normalised by the global count) and one
# packed row (position_ids restart). VOCAB from the first argument.
data() {
  make_data "$W/data.jsonl" --seed 5 --rows 7 --len 8 28 --vocab "$1" --mask odd:1:5 --zero-and-split
}

# check_ref NAME DUMP [check_grads options]: the PyTorch reference on a dump
check_ref() { local n="$1" m="$2" d="$3"; shift 3; check "$n" "$PY" "$REF/check_grads.py" --model "$m" --dump "$d" "$@"; }

case "$TEST" in
equivalence)
  # GQA with kv-heads < tp at tp=4, tied embeddings, q/k/v bias, vocab 301 (uneven over tp);
  # global batch G=4 in micro-batches of 1, so (1,1) accumulates over 4 micro-batches and
  # (1,4) over 1. Step 1 (B = 0, so dA = 0 exactly) and step 5 (all gradients non-zero).
  model m --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 301 --tie --qkv-bias
  data 301
  COMMON=(--model "$W/m" --data "$W/data.jsonl" --no-shuffle --no-pack --seq-len 16 --threads 1 --peak-gflops 1
          --lora-r 4 --lora-alpha 8 --lr 5e-3 --seed 11 --log-every 100 --micro-batch 1 --global-batch 4)
  for drop in 0 0.1; do
    ok1=() ok5=() okr=() oks=()
    for L in 1x1 2x1 4x1 1x2 2x2 1x4; do
      tp=${L%x*}; dp=${L#*x}; n="d$drop-tp$tp-dp$dp"
      train "$n-s1" "$tp" "$dp" --lora-dropout "$drop" --steps 1 --dump-grads "$W/$n-s1.safetensors" \
        && ok1+=("$W/$n-s1.safetensors@${tp}x$dp")
      train "$n-s5" "$tp" "$dp" --lora-dropout "$drop" --steps 5 --dump-grads "$W/$n-s5.safetensors" \
        && { ok5+=("$W/$n-s5.safetensors@${tp}x$dp"); okr+=("$W/$n-s5"); }
      train "$n-sgd5" "$tp" "$dp" --lora-dropout "$drop" --steps 5 --optimizer sgd --lr 0.5 --momentum 0.9 \
        && oks+=("$W/$n-sgd5")
    done
    r="d$drop-tp1-dp1"
    # the noise floor of AdamW: the same layout as the reference with the other kernels
    train "$r-refkernels-s5" 1 1 --lora-dropout "$drop" --steps 5 --kernels reference && okr+=("$W/$r-refkernels-s5")
    if [ -f "$W/$r-s1.safetensors" ] && [ -f "$W/$r-s5.safetensors" ]; then
      check_ref "dropout $drop: (1,1) step-1 dump vs PyTorch (+ Philox init)" "$W/m" "$W/$r-s1.safetensors" --check-init
      check_ref "dropout $drop: (1,1) step-5 dump vs PyTorch" "$W/m" "$W/$r-s5.safetensors"
      check "dropout $drop: (1,1) 5 steps replayed by PyTorch" "$PY" "$REF/check_steps.py" --model "$W/m" \
        --dump "$W/$r-s1.safetensors" --data "$W/data.jsonl" --metrics "$W/$r-s5/metrics.jsonl" --steps 5
    else
      fail "dropout $drop: no (1,1) reference run; no layout compared"; continue
    fi
    check_layouts "dropout $drop: " "(1,1)" 5 ok1 ok5 okr
    [ ${#oks[@]} -gt 1 ] && [ "${oks[0]}" = "$W/$r-sgd5" ] && check "dropout $drop: adapter after 5 SGD steps (rel $SGD_TOL) and per-step metrics vs (1,1)" \
      "${CHECK[@]}" adapters --steps 5 --tol "$SGD_TOL" "${oks[0]}" "${oks[@]:1}"
  done
  ;;

init)
  # The adapter before the first update is the same bytes at tp = 1, 2, 4 (Philox keyed by
  # global coordinates, DESIGN.md §4) and is the Philox initialisation (PyTorch side).
  model m --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 301 --tie --qkv-bias
  data 301
  COMMON=(--model "$W/m" --data "$W/data.jsonl" --no-shuffle --no-pack --seq-len 16 --threads 1 --peak-gflops 1
          --lora-r 4 --lora-alpha 8 --seed 23 --log-every 100 --micro-batch 1 --global-batch 4 --steps 1)
  dumps=()
  for tp in 1 2 4; do
    train "init-tp$tp" "$tp" 1 --dump-grads "$W/init-tp$tp.safetensors" && dumps+=("$W/init-tp$tp.safetensors")
  done
  for d in "${dumps[@]}"; do
    check_ref "$(basename "$d"): adapter is the Philox init, gradients vs PyTorch" "$W/m" "$d" --check-init
  done
  if [ "${dumps[0]:-}" = "$W/init-tp1.safetensors" ] && [ ${#dumps[@]} -eq 3 ]; then
    check "step-1 adapters byte-identical at tp = 1, 2, 4" "${CHECK[@]}" identical "${dumps[@]}"
  else
    fail "byte comparison needs the tp = 1, 2, 4 dumps; have ${#dumps[@]}"
  fi
  ;;

memory)
  # Big matrices dominate (C 128, F 256, V 512); 8 heads / 4 kv heads so tp=4 replicates
  # no kv head: each rank must hold and read about a quarter of the frozen weights.
  model m --hidden 128 --ffn 256 --heads 8 --kv-heads 4 --vocab 512
  data 512
  COMMON=(--model "$W/m" --data "$W/data.jsonl" --no-shuffle --no-pack --seq-len 16 --threads 1 --peak-gflops 1
          --lora-r 4 --seed 11 --log-every 100 --micro-batch 1 --steps 1)
  train tp1 1 1 && train tp4 4 1 \
    && check "frozen bytes per rank at tp=4 vs tp=1" "${CHECK[@]}" memory --model "$W/m" --tp 4 "$W/tp1" "$W/tp4"
  ;;

comm)
  # Gradient traffic is the adapter's: (dp + world + kv) bytes per step = adapter_bytes on
  # every rank, < 10% of the model; tp traffic only when tp > 1, and no more per token than
  # the Megatron layout's all-reduces (LoRA adds none, DESIGN.md §4). kv-heads 2 < tp 4 at (4,1).
  model m --hidden 128 --ffn 256 --heads 4 --kv-heads 2 --vocab 512
  data 512
  COMMON=(--model "$W/m" --data "$W/data.jsonl" --no-shuffle --no-pack --seq-len 16 --threads 1 --peak-gflops 1
          --lora-r 4 --seed 11 --log-every 100 --micro-batch 1 --global-batch 4 --steps 3)
  runs=()
  for L in 1x2 2x1 2x2 4x1; do
    tp=${L%x*}; dp=${L#*x}
    train "tp$tp-dp$dp" "$tp" "$dp" && runs+=("$W/tp$tp-dp$dp:$((tp * dp)):$tp:3")
  done
  floats=0
  [ -f "$W/tp1-dp2/adapter/adapter_model.safetensors" ] \
    && floats=$("${CHECK[@]}" adapter-floats "$W/tp1-dp2/adapter/adapter_model.safetensors")
  [ "$floats" -gt 0 ] || fail "no adapter from the (1,2) run to size the gradient buffer"
  [ ${#runs[@]} -gt 0 ] && check "gradient and tp traffic per rank" "${CHECK[@]}" comm --adapter-floats "$floats" \
    --layers 2 --hidden 128 --seq-len 16 --global-batch 4 "${runs[@]}"
  ;;

bad-layouts)
  # Each refused on every rank: exit != 0 within REFUSE_TIMEOUT s, one line on stderr naming
  # the problem, no OUT directory. Each model breaks exactly one rule at the layout tried.
  model m --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 301 --tie --qkv-bias
  model heads4 --hidden 64 --ffn 96 --heads 4 --kv-heads 1 --vocab 300    # heads 4 % tp 3
  model heads6 --hidden 96 --ffn 192 --heads 6 --kv-heads 3 --vocab 300   # heads 6, kv 3 at tp 4
  model kv3 --hidden 96 --ffn 128 --heads 12 --kv-heads 3 --vocab 300     # only kv 3 vs tp 4
  model ffn130 --hidden 64 --ffn 130 --heads 4 --kv-heads 2 --vocab 300   # only ffn 130 % 4
  data 300
  refuse() {  # refuse NAME WORLD PATTERN MODEL train-options...
    local name="$1" world="$2" pat="$3" mdl="$4"; shift 4
    local out="$W/$name" t0=$SECONDS rc=0
    timeout "$REFUSE_TIMEOUT" mpiexec --oversubscribe -n "$world" "$SL" train --model "$W/$mdl" \
      --data "$W/data.jsonl" --out "$out" --seq-len 16 --threads 1 --peak-gflops 1 --steps 1 "$@" \
      > "$W/$name.stdout" 2> "$W/$name.stderr" || rc=$?
    local dt=$((SECONDS - t0))
    echo "== refused: $name (-n $world $*): exit $rc after ${dt} s"
    if [ "$rc" -eq 0 ]; then fail "$name: accepted (exit 0)"
    elif [ "$rc" -eq 124 ]; then fail "$name: not refused within ${REFUSE_TIMEOUT} s"; fi
    [ -e "$out" ] && fail "$name: created $out"
    "${CHECK[@]}" refusal --name "$name" --world "$world" --pattern "$pat" "$W/$name.stderr" || fail "$name: message"
  }
  refuse world-not-multiple-of-tp 2 '(?=.*(tp|tensor))(?=.*(world|rank|process|divid|multiple))' m --tp 3
  refuse heads-not-divisible 3 'head' heads4 --tp 3
  refuse heads6-kv3-at-tp4 4 'head' heads6 --tp 4
  refuse kv3-at-tp4 4 '(kv|key.value)' kv3 --tp 4
  refuse ffn-not-divisible 4 '(ffn|intermediate)' ffn130 --tp 4
  refuse global-batch-not-multiple 2 '(?=.*global.batch)(?=.*(multiple|divid))' m --tp 1 --micro-batch 1 --global-batch 3
  # Accepted: vocab 301 (uneven over tp) with kv-heads 2 < tp 4; and each model above at a
  # layout it fits (so the refusals are about the layout, not a broken model).
  accept() {  # accept NAME MODEL TP
    COMMON=(--model "$W/$2" --data "$W/data.jsonl" --no-shuffle --no-pack --seq-len 16 --threads 1 --peak-gflops 1 --steps 1 --log-every 100)
    train "accepted-$1" "$3" 1 && { [ -f "$W/accepted-$1/adapter/adapter_model.safetensors" ] \
                                   || fail "accepted-$1: no adapter written"; }
  }
  accept vocab301-tp2 m 2
  accept vocab301-kv2-tp4 m 4
  accept heads4-tp1 heads4 1
  accept heads6-kv3-tp3 heads6 3
  accept kv3-tp1 kv3 1
  accept ffn130-tp2 ffn130 2
  ;;

accumulation)
  # G = 4 as one micro-batch of 4, 2 of 2, 4 of 1, and over dp = 2 (B = 1) and tp x dp =
  # 2 x 2 (B = 1): the same loss, gradients and updates (LoRA dropout 0.1: masks keyed by
  # the global token, so they agree too).
  model m --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 301 --tie --qkv-bias
  data 301
  COMMON=(--model "$W/m" --data "$W/data.jsonl" --no-shuffle --no-pack --seq-len 16 --threads 1 --peak-gflops 1
          --lora-r 4 --lora-alpha 8 --lr 5e-3 --seed 11 --lora-dropout 0.1 --log-every 100 --global-batch 4)
  d1=() d3=() r3=() s3=()
  for L in 1x1x4 1x1x1 1x1x2 1x2x1 2x2x1; do
    IFS=x read -r tp dp b <<< "$L"; n="tp$tp-dp$dp-b$b"
    train "$n-s1" "$tp" "$dp" --micro-batch "$b" --steps 1 --dump-grads "$W/$n-s1.safetensors" \
      && d1+=("$W/$n-s1.safetensors@${tp}x$dp")
    train "$n-s3" "$tp" "$dp" --micro-batch "$b" --steps 3 --dump-grads "$W/$n-s3.safetensors" \
      && { d3+=("$W/$n-s3.safetensors@${tp}x$dp"); r3+=("$W/$n-s3"); }
    train "$n-sgd3" "$tp" "$dp" --micro-batch "$b" --steps 3 --optimizer sgd --lr 0.5 && s3+=("$W/$n-sgd3")
  done
  # the reference is (1,1) B=4 (no accumulation); whichever other runs succeeded are compared
  if [ "${r3[0]:-}" = "$W/tp1-dp1-b4-s3" ] && [ "${d1[0]:-}" = "$W/tp1-dp1-b4-s1.safetensors@1x1" ]; then
    check_layouts "" "(B=4, G=4)" 3 d1 d3 r3
    [ ${#s3[@]} -gt 1 ] && [ "${s3[0]}" = "$W/tp1-dp1-b4-sgd3" ] && check "adapter after 3 SGD steps (rel $SGD_TOL) and metrics vs (B=4, G=4)" \
      "${CHECK[@]}" adapters --steps 3 --tol "$SGD_TOL" "${s3[0]}" "${s3[@]:1}"
  else
    fail "accumulation: the reference runs (1,1) B=4 failed; nothing compared"
  fi
  if [ -f "$W/tp1-dp1-b1-s3.safetensors" ] && [ -f "$W/tp1-dp1-b1-s1.safetensors" ]; then
    check_ref "(1,1) B=1 G=4 step-3 dump vs PyTorch" "$W/m" "$W/tp1-dp1-b1-s3.safetensors"
    check "(1,1) B=1 G=4: 3 steps replayed by PyTorch" "$PY" "$REF/check_steps.py" --model "$W/m" \
      --dump "$W/tp1-dp1-b1-s1.safetensors" --data "$W/data.jsonl" --metrics "$W/tp1-dp1-b1-s3/metrics.jsonl" --steps 3
  fi
  ;;

clipping)
  # --max-grad-norm: metrics report the pre-clip global norm (= the norm of the dumped
  # gradients, every parameter once); (1,1) and (2,2) clip alike; PyTorch replays it.
  # AdamW at 1e-3 (the brief's case) and SGD (where a wrong clip moves the loss visibly).
  model m --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 301 --tie --qkv-bias
  data 301
  for opt in adamw sgd; do
    if [ "$opt" = adamw ]; then OPT=(--lr 5e-3); CLIP=1e-3; TOL=$ADAM_TOL; NTOL=(--norm-rel-tol "$ADAM_NORM_TOL")
    else OPT=(--optimizer sgd --lr 0.5); CLIP=0.02; TOL=$SGD_TOL; NTOL=(); fi
    COMMON=(--model "$W/m" --data "$W/data.jsonl" --no-shuffle --no-pack --seq-len 16 --threads 1 --peak-gflops 1
            --lora-r 4 --lora-alpha 8 --seed 11 --log-every 100 --micro-batch 1 --global-batch 4
            "${OPT[@]}" --max-grad-norm "$CLIP")
    good=()
    for L in 1x1 2x2; do
      tp=${L%x*}; dp=${L#*x}; n="$opt-tp$tp-dp$dp"
      train "$n-s1" "$tp" "$dp" --steps 1 --dump-grads "$W/$n-s1.safetensors" \
        && train "$n-s3" "$tp" "$dp" --steps 3 --dump-grads "$W/$n-s3.safetensors" && good+=("tp$tp-dp$dp")
    done
    for L in "${good[@]}"; do
      for s in 1 3; do
        check "$opt $L step $s: metrics grad_norm is the pre-clip norm" "${CHECK[@]}" gradnorm \
          --dump "$W/$opt-$L-s$s.safetensors" --metrics "$W/$opt-$L-s$s/metrics.jsonl" --max-norm "$CLIP"
      done
    done
    if [ ${#good[@]} -eq 2 ]; then
      check "$opt: step-3 dump (2,2) vs (1,1): gradients rel $LATE_GRAD_TOL, adapter rel $TOL" "${CHECK[@]}" dumps \
        --tol "$LATE_GRAD_TOL" --value-tol "$TOL" "$W/$opt-tp1-dp1-s3.safetensors" "$W/$opt-tp2-dp2-s3.safetensors@2x2"
      check "$opt: adapter after 3 clipped steps (2,2) vs (1,1), rel $TOL" "${CHECK[@]}" adapters --steps 3 \
        --tol "$TOL" "${NTOL[@]}" "$W/$opt-tp1-dp1-s3" "$W/$opt-tp2-dp2-s3"
    fi
    [ "${good[0]:-}" = tp1-dp1 ] && check "$opt: (1,1) 3 clipped steps replayed by PyTorch" "$PY" \
      "$REF/check_steps.py" --model "$W/m" --dump "$W/$opt-tp1-dp1-s1.safetensors" --data "$W/data.jsonl" \
      --metrics "$W/$opt-tp1-dp1-s3/metrics.jsonl" --steps 3
  done
  ;;

*) echo "layouts.sh: unknown test '$TEST'" >&2; exit 2 ;;
esac

mpi_finish "mpi $TEST"
