# Multi-host tests (label multinode): two simulated hosts (network namespaces + veth, needs
# root), 2 ranks each, tp=2 inside a host and dp=2 across over TCP: the link's bytes per step vs
# the adapter gradient and the TP activations, kill -9 of a rank on one host, relaunch, the
# launcher; pipeline stages across the hosts (tp 2 in each x pp 2): the link's bytes per step
# against 2 x micro-batches x tokens x hidden x 4 and against tp 4 across the hosts, the
# adapter against 1 rank's, the launcher's default pp from the memory estimate.
# bash tests/multinode/run.sh SHARDLORA_BINARY WORK_DIR; exits 1 on a failure.
add_test(NAME multinode
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/multinode/run.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(multinode PROPERTIES LABELS multinode RUN_SERIAL TRUE TIMEOUT 600)
