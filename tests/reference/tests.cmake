# Reference tests: our loss, gradients and optimizer steps against an independent PyTorch
# implementation (tests/reference/torch_llama.py on Debian's python3-torch).
set(SL_REF_DIR ${CMAKE_CURRENT_SOURCE_DIR}/reference)
add_test(NAME reference_selftest COMMAND ${SL_PYTHON3} ${SL_REF_DIR}/selftest.py)
set_tests_properties(reference_selftest PROPERTIES LABELS reference TIMEOUT 300)
foreach(case mha gqa qwen2-bias llama-attention-bias tied llama3-rope bf16 sharded head-dim
             packed rslora-subset adamw-decay sgd dropout dropout-gqa recompute)
  add_test(NAME reference_${case}
           COMMAND bash ${SL_REF_DIR}/run_case.sh $<TARGET_FILE:shardlora>
                   ${CMAKE_BINARY_DIR}/test-work/reference ${case})
  set_tests_properties(reference_${case} PROPERTIES LABELS reference TIMEOUT 600)
endforeach()
# generate: greedy decoding with the KV cache against full recomputation in PyTorch, sampling,
# stop strings / EOS, adapters unmerged and merged in memory, pipeline stages (pp: bit for bit
# the pp = 1 output) (tests/reference/generate_case.sh)
foreach(case gqa kvrep qkv-bias tied sampling stop adapter adapter-bf16 pp)
  add_test(NAME reference_generate_${case}
           COMMAND bash ${SL_REF_DIR}/generate_case.sh $<TARGET_FILE:shardlora>
                   ${CMAKE_BINARY_DIR}/test-work/reference ${case})
  set_tests_properties(reference_generate_${case} PROPERTIES LABELS reference TIMEOUT 600 PROCESSORS 2)
endforeach()
# shardlora eval against the reference loss at tp=1, tp=2 and dp=2, with and without a PEFT
# adapter; train's own evaluation against eval of its adapter (issue 8).
add_test(NAME reference_peft_eval
         COMMAND ${SL_PYTHON3} ${SL_REF_DIR}/peft_eval.py $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(reference_peft_eval PROPERTIES LABELS "reference;e2e" TIMEOUT 600 PROCESSORS 2)
# DoRA (issue 9, model/dora.c) against the PEFT-formula reference: gradients at steps 1 and 5
# (with and without dropout; BF16), all-zero rows of W, export + merge = unmerged eval,
# checkpoint/resume byte-identical (tests/reference/dora_case.sh, dora_check.py).
foreach(case grads bf16 nf4 zero-row merge resume)
  add_test(NAME reference_dora_${case}
           COMMAND bash ${SL_REF_DIR}/dora_case.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work/reference ${case})
  set_tests_properties(reference_dora_${case} PROPERTIES LABELS reference TIMEOUT 600 PROCESSORS 2)
endforeach()
# VeRA and PiSSA (issue 9): against PyTorch references written from PEFT's formulas, PEFT
# export (VERA format; PiSSA converted to rank-2r LoRA on the original base), resume bit-exact.
add_test(NAME reference_vera
         COMMAND bash ${SL_REF_DIR}/vera_case.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work/reference)
set_tests_properties(reference_vera PROPERTIES LABELS "reference;mpi" TIMEOUT 600 PROCESSORS 2)
# VeRA adapters made as PEFT makes them (projections from torch's generator, saved or not):
# eval at tp=1/2, `shardlora merge` vs PEFT's formula, generate --merge-in-memory, refusals.
add_test(NAME reference_vera_peft
         COMMAND bash ${SL_REF_DIR}/vera_peft_case.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work/reference)
set_tests_properties(reference_vera_peft PROPERTIES LABELS "reference;mpi" TIMEOUT 600 PROCESSORS 2)
foreach(case plain rslora)
  add_test(NAME reference_pissa_${case}
           COMMAND bash ${SL_REF_DIR}/pissa_case.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work/reference ${case})
  set_tests_properties(reference_pissa_${case} PROPERTIES LABELS reference TIMEOUT 600)
endforeach()
# LoRA-FA and LoRA+ (issue 9): gradients and replayed steps against the reference with lora_A
# frozen / lora_B's lr x ratio (tests/reference/variants_case.sh, variants_check.py)
foreach(case lorafa lorafa-peft loraplus lorafa-loraplus-sgd)
  add_test(NAME reference_variants_${case}
           COMMAND bash ${SL_REF_DIR}/variants_case.sh $<TARGET_FILE:shardlora>
                   ${CMAKE_BINARY_DIR}/test-work/reference ${case})
  set_tests_properties(reference_variants_${case} PROPERTIES LABELS reference TIMEOUT 600)
endforeach()
# Frozen-base storage formats (issue 18, runtime/quant.c): int8 and NF4 codes, scales and
# dequantised values of a matrix with the edge cases, from F32 and BF16 rows, bit for bit
# against tests/reference/quant_ref.py (torch, written from the rules and bitsandbytes'
# algorithm); the reference's own known values.
add_executable(quant_dump unit/quant_dump.c)
target_link_libraries(quant_dump PRIVATE sl_runtime)
add_test(NAME reference_quant_selftest COMMAND ${SL_PYTHON3} ${SL_REF_DIR}/quant_ref.py --selftest)
add_test(NAME reference_quant
         COMMAND ${SL_PYTHON3} ${SL_REF_DIR}/quant_ref.py --check $<TARGET_FILE:quant_dump>
                 ${CMAKE_BINARY_DIR}/test-work/reference/quant)
set_tests_properties(reference_quant_selftest reference_quant PROPERTIES LABELS reference TIMEOUT 120)
# A quantised frozen base (--base-dtype int8 / nf4 / bf16) trains exactly the model quant_ref.py
# dequantises: gradients and steps against PyTorch at tp=1, tp=2, dp=2 (quant_case.sh).
foreach(case int8 nf4 bf16 nf4-tied)
  add_test(NAME reference_quant_${case}
           COMMAND bash ${SL_REF_DIR}/quant_case.sh $<TARGET_FILE:shardlora>
                   ${CMAKE_BINARY_DIR}/test-work/reference ${case})
  set_tests_properties(reference_quant_${case} PROPERTIES LABELS "reference;mpi" TIMEOUT 600 PROCESSORS 2)
endforeach()
# BF16 compute of the frozen base's products (issue 18, runtime/gemm.c + runtime/bmm.c): our
# Y = X W^T and dX = dY W with F32 / BF16 / INT8 / NF4 weights, emulated and (where the CPU has
# it) through oneDNN, against torch's F32 matmul on bfloat16 operands and its CPU
# autocast(bfloat16), with the tolerances tests/reference/gemm_bf16_ref.py derives.
add_executable(gemm_bf16_dump unit/gemm_bf16_dump.c)
target_link_libraries(gemm_bf16_dump PRIVATE sl_runtime)
add_test(NAME reference_gemm_bf16
         COMMAND ${SL_PYTHON3} ${SL_REF_DIR}/gemm_bf16_ref.py --check $<TARGET_FILE:gemm_bf16_dump>
                 ${CMAKE_BINARY_DIR}/test-work/reference/gemm_bf16)
set_tests_properties(reference_gemm_bf16 PROPERTIES LABELS reference TIMEOUT 120)
# --compute-dtype bf16 through training against PyTorch: shardlora's BF16 semantics, torch's CPU
# autocast(bfloat16) (documented tolerances) and not fp32, at tp=1, tp=2, dp=2 (bf16_case.sh).
add_test(NAME reference_bf16_compute
         COMMAND bash ${SL_REF_DIR}/bf16_case.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work/reference)
set_tests_properties(reference_bf16_compute PROPERTIES LABELS "reference;mpi" TIMEOUT 600 PROCESSORS 2)
