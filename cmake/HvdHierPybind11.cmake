# Finds pybind11's CMake package through the pybind11 Python module of ${Python_EXECUTABLE}
# and provides pybind11_add_module. The extension is compiled against the pybind11 headers
# bundled with torch (HvdHierTorch puts them first on the include path), so that the module
# and torch agree on pybind11's internals; the pip package supplies the build logic.
include_guard(GLOBAL)

if(NOT pybind11_DIR)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -m pybind11 --cmakedir
    OUTPUT_VARIABLE pybind11_DIR
    RESULT_VARIABLE _hh_pb_rc
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _hh_pb_rc EQUAL 0)
    message(FATAL_ERROR "HvdHierPybind11: `${Python_EXECUTABLE} -m pybind11` failed; "
                        "install it with `pip install pybind11`")
  endif()
endif()
find_package(pybind11 CONFIG REQUIRED)
message(STATUS "hvd_hier: pybind11 ${pybind11_VERSION} (CMake logic) at ${pybind11_DIR}")
