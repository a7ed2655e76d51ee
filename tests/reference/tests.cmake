# Reference tests: our loss, gradients and optimizer steps against an independent PyTorch
# implementation (tests/reference/torch_llama.py on Debian's python3-torch).
set(SL_REF_DIR ${CMAKE_CURRENT_SOURCE_DIR}/reference)
add_test(NAME reference_selftest COMMAND ${SL_PYTHON3} ${SL_REF_DIR}/selftest.py)
set_tests_properties(reference_selftest PROPERTIES LABELS reference TIMEOUT 300)
foreach(case mha gqa qwen2-bias llama-attention-bias tied llama3-rope bf16 sharded head-dim
             packed rslora-subset adamw-decay sgd dropout dropout-gqa)
  add_test(NAME reference_${case}
           COMMAND bash ${SL_REF_DIR}/run_case.sh $<TARGET_FILE:shardlora>
                   ${CMAKE_BINARY_DIR}/test-work/reference ${case})
  set_tests_properties(reference_${case} PROPERTIES LABELS reference TIMEOUT 600)
endforeach()
