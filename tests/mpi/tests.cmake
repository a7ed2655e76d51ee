# MPI tests: the same step at every (tp, dp) layout, sharded memory, adapter-sized gradient
# traffic, refused bad layouts, gradient accumulation and clipping (tests/mpi/layouts.sh,
# comparisons in tests/mpi/mpi_check.py). Up to 4 ranks each, oversubscribed on small machines.
set(SL_MPI_DIR ${CMAKE_CURRENT_SOURCE_DIR}/mpi)
foreach(t equivalence init memory comm bad-layouts accumulation clipping)
  add_test(NAME mpi_${t}
           COMMAND bash ${SL_MPI_DIR}/layouts.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work ${t})
  set_tests_properties(mpi_${t} PROPERTIES LABELS mpi TIMEOUT 300 PROCESSORS 2)
endforeach()
