# End-to-end tests through the shardlora binary.
set(SL_E2E_DIR ${CMAKE_CURRENT_SOURCE_DIR}/e2e)
add_test(NAME e2e_bad_input
         COMMAND bash ${SL_E2E_DIR}/bad_input.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(e2e_bad_input PROPERTIES LABELS e2e TIMEOUT 600)
add_test(NAME e2e_train_cli
         COMMAND bash ${SL_E2E_DIR}/train_cli.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(e2e_train_cli PROPERTIES LABELS e2e TIMEOUT 600)
add_test(NAME e2e_quickstart
         COMMAND bash ${SL_E2E_DIR}/quickstart.sh ${CMAKE_BINARY_DIR} ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(e2e_quickstart PROPERTIES LABELS e2e TIMEOUT 600 RUN_SERIAL TRUE)
add_test(NAME e2e_plot
         COMMAND bash ${SL_E2E_DIR}/plot.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(e2e_plot PROPERTIES LABELS e2e TIMEOUT 120)
add_test(NAME e2e_data_pipeline
         COMMAND bash ${SL_E2E_DIR}/data_pipeline.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(e2e_data_pipeline PROPERTIES LABELS e2e TIMEOUT 600)
add_test(NAME e2e_merge
         COMMAND bash ${SL_E2E_DIR}/merge.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(e2e_merge PROPERTIES LABELS e2e TIMEOUT 900 RUN_SERIAL TRUE)
# PEFT adapters in and out (issue 8): export / import / bad adapters, checked against the
# PEFT formula on the PyTorch reference model (tests/reference/peft_check.py).
foreach(t export import bad)
  add_test(NAME e2e_peft_${t}
           COMMAND bash ${SL_E2E_DIR}/peft_adapters.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work ${t})
  set_tests_properties(e2e_peft_${t} PROPERTIES LABELS "e2e;reference" TIMEOUT 600 PROCESSORS 2)
endforeach()
add_test(NAME e2e_generate_cli
         COMMAND bash ${SL_E2E_DIR}/generate_cli.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(e2e_generate_cli PROPERTIES LABELS e2e TIMEOUT 600 PROCESSORS 2)
# eval / generate on non-finite numbers (exit 5, --out untouched), the adapter kinds they
# name, the PiSSA card's r / lora_alpha.
add_test(NAME e2e_eval_generate_inputs
         COMMAND bash ${SL_E2E_DIR}/eval_generate_inputs.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(e2e_eval_generate_inputs PROPERTIES LABELS e2e TIMEOUT 600 PROCESSORS 2)
# train's edges: --epochs resumes at another global batch, row-stream refusals, strict
# metrics JSON, flag ranges, --config edge cases, quoted paths, cleanup of refused runs
add_test(NAME e2e_train_inputs
         COMMAND bash ${SL_E2E_DIR}/train_inputs.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(e2e_train_inputs PROPERTIES LABELS e2e TIMEOUT 600 PROCESSORS 2)
