# MPI tests: the same step at every (tp, dp) layout, sharded memory, adapter-sized gradient
# traffic, refused bad layouts, gradient accumulation and clipping (tests/mpi/layouts.sh,
# comparisons in tests/mpi/mpi_check.py). Up to 4 ranks each, oversubscribed on small machines.
set(SL_MPI_DIR ${CMAKE_CURRENT_SOURCE_DIR}/mpi)
foreach(t equivalence init memory comm bad-layouts accumulation clipping)
  add_test(NAME mpi_${t}
           COMMAND bash ${SL_MPI_DIR}/layouts.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work ${t})
  set_tests_properties(mpi_${t} PROPERTIES LABELS mpi TIMEOUT 300 PROCESSORS 2)
endforeach()
# DoRA at (tp, dp) in {(1,1), (2,1), (4,1), (2,2)} with kv-heads < tp (tests/mpi/dora_layouts.sh).
add_test(NAME mpi_dora
         COMMAND bash ${SL_MPI_DIR}/dora_layouts.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(mpi_dora PROPERTIES LABELS "mpi;reference" TIMEOUT 600 PROCESSORS 2)
# VeRA / PiSSA at every (tp, dp) layout against the reference and tp=1 (issue 9).
foreach(kind vera pissa)
  add_test(NAME mpi_${kind}_layouts
           COMMAND bash ${SL_MPI_DIR}/vera_pissa_layouts.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work ${kind})
  set_tests_properties(mpi_${kind}_layouts PROPERTIES LABELS mpi TIMEOUT 300 PROCESSORS 2)
endforeach()
# LoRA-FA and LoRA+ (issue 9): equal across (tp, dp), resume bit-exact, optimizer memory
# halved, PEFT export / import with use_rslora (tests/mpi/variants_layouts.sh)
add_test(NAME mpi_variants_layouts
         COMMAND bash ${SL_MPI_DIR}/variants_layouts.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(mpi_variants_layouts PROPERTIES LABELS mpi TIMEOUT 600 PROCESSORS 2)
# parallel/grid and parallel/gsync on 4 ranks at tp=2 (a C program, tests/mpi/test_grid.c):
# communicators, every counted collective's values and byte / call counts, grid_agree(_code),
# grid_split_world, gradient buckets started out of order.
add_executable(test_grid ${SL_MPI_DIR}/test_grid.c)
target_link_libraries(test_grid PRIVATE sl_parallel)
add_test(NAME mpi_grid
         COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe ${MPIEXEC_NUMPROC_FLAG} 4 $<TARGET_FILE:test_grid>)
# Open MPI refuses root unless told (the scripts set this themselves; tests/run.sh does too).
set_tests_properties(mpi_grid PROPERTIES LABELS mpi TIMEOUT 120 PROCESSORS 2
                     ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
# Pipeline stages (issue 19, tests/mpi/pp_layouts.sh + pp_check.py): (tp, pp, dp) layouts vs
# pp = 1 (the same bits at the same tp x dp) and vs (1,1,1), DoRA, eval; checkpoints written
# at (2,2,1) resumed at (4,1,1), (1,1,1), (1,2,2); stage-boundary bytes, frozen bytes per
# stage and the bubble figures in the summaries; refused layouts.
foreach(t equivalence checkpoint summary bad-layouts)
  add_test(NAME mpi_pp_${t}
           COMMAND bash ${SL_MPI_DIR}/pp_layouts.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work ${t})
  set_tests_properties(mpi_pp_${t} PROPERTIES LABELS mpi TIMEOUT 300 PROCESSORS 2)
endforeach()
