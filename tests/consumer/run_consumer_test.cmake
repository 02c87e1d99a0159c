# CTest test consumer_find_package: install the kat build into a scratch prefix, then configure,
# build and run tests/consumer against it, the way another CMake project uses the library.
#   cmake -DKAT_BUILD_DIR=build -DKAT_CONSUMER_SOURCE=tests/consumer -DWORK_DIR=<scratch>
#         [-DGENERATOR=Ninja] [-DCXX_COMPILER=g++] -P run_consumer_test.cmake
foreach(v KAT_BUILD_DIR KAT_CONSUMER_SOURCE WORK_DIR)
  if(NOT ${v})
    message(FATAL_ERROR "run_consumer_test.cmake: set ${v}")
  endif()
endforeach()
set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)
file(REMOVE_RECURSE ${WORK_DIR})

function(step name)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer test: ${name} failed (${rc}): ${ARGN}")
  endif()
endfunction()

step(install ${CMAKE_COMMAND} --install ${KAT_BUILD_DIR} --prefix ${prefix})
set(gen "")
if(GENERATOR)
  set(gen -G ${GENERATOR})
endif()
set(cxx "")
if(CXX_COMPILER)
  set(cxx -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()
# Only the install prefix: no path into the source or build tree of kat.
step(configure ${CMAKE_COMMAND} -S ${KAT_CONSUMER_SOURCE} -B ${build} ${gen} ${cxx}
     -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=${prefix})
step(build ${CMAKE_COMMAND} --build ${build})
# Run it from elsewhere, with KAT_CONFIG_DIR unset: the built-in config comes from the library.
unset(ENV{KAT_CONFIG_DIR})
step(run ${build}/kat_consumer WORKING_DIRECTORY ${WORK_DIR})
