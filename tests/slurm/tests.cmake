# A real single-node Slurm (label slurm): munged, slurmctld and slurmd started by the test
# and stopped by pid; the sbatch template launch/slurm/train-1node.sbatch trains through
# launch/shardlora-run, then is sent USR1 mid-way, checkpoints, requeues, resumes and ends
# with the uninterrupted run's exact adapter. Needs root (apt-get, daemons).
# usage: bash tests/slurm/run.sh SHARDLORA_BINARY WORK_DIR
add_test(NAME slurm_train_requeue
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/slurm/run.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(slurm_train_requeue PROPERTIES LABELS slurm TIMEOUT 600 RUN_SERIAL TRUE)
