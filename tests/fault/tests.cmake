# Fault injection with real processes (label fault): kill -9 of a rank (also in each pipeline
# stage) and of the whole job during checkpoint writes, damaged checkpoints, a full filesystem
# (mounts a tmpfs: needs root), resharding on resume, SIGUSR1/SIGTERM checkpoint-and-exit, refused resumes.
# Each script: bash tests/fault/NAME.sh SHARDLORA_BINARY WORK_DIR; exits 1 on a failure.
set(SL_FAULT_DIR ${CMAKE_CURRENT_SOURCE_DIR}/fault)
foreach(t kill_rank kill_during_write corrupt disk_full reshard signals refuse timing)
  add_test(NAME fault_${t}
           COMMAND bash ${SL_FAULT_DIR}/${t}.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work/fault)
  set_tests_properties(fault_${t} PROPERTIES LABELS fault TIMEOUT 300)
endforeach()
# kill -9 of a rank in each pipeline stage (tp=2 pp=2), relaunch resumes (issue 19)
add_test(NAME fault_kill_rank_pp
         COMMAND bash ${SL_FAULT_DIR}/kill_rank.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work/fault pp)
set_tests_properties(fault_kill_rank_pp PROPERTIES LABELS fault TIMEOUT 300)
