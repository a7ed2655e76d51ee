# Tests of launch/shardlora-run. launcher_plan (unit): the plan and command line derived from
# sample Slurm / Open MPI / PMIx / plain-machine environments (fixtures/: fake sysfs trees,
# cpuinfo files, a hostfile, --config files), host slots, the query of each node's CPU facts
# (stand-in mpirun/srun answering per host from its own fake sysfs), the refusals, rank
# mode's exec and signal forwarding to a stand-in launcher, --pp placement and the default pp
# from shardlora plan's memory estimate (the real binary, --dry-run); no MPI. launcher_real_run (e2e): 2 ranks through mpirun
# at tp=2 with the real binary, and SIGUSR1 to the launcher ending the run with a checkpoint
# and status 75.
set(SL_LAUNCHER_TEST_DIR ${CMAKE_CURRENT_SOURCE_DIR}/launcher)
add_test(NAME launcher_plan
         COMMAND bash ${SL_LAUNCHER_TEST_DIR}/plan.sh ${CMAKE_BINARY_DIR}/test-work $<TARGET_FILE:shardlora>)
set_tests_properties(launcher_plan PROPERTIES LABELS unit TIMEOUT 60)
add_test(NAME launcher_real_run
         COMMAND bash ${SL_LAUNCHER_TEST_DIR}/real_run.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(launcher_real_run PROPERTIES LABELS e2e TIMEOUT 300)
