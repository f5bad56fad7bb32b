# Finds the PyTorch of the Python interpreter ${Python_EXECUTABLE} and defines
#   hvd_hier::torch         INTERFACE target: headers, libraries and ABI flag for an extension
#   HVD_HIER_TORCH_CUDA     the CUDA version torch was built with ("" for a CPU build)
#   HVD_HIER_TORCH_INCLUDE  torch's include directories (they also carry its pybind11 copy)
#   HVD_HIER_TORCH_PARALLEL_OPENMP  ON when ATen's parallel back end is OpenMP
#
# Asking Python rather than TorchConfig.cmake keeps a CPU wheel from looking for a CUDA
# toolkit and works the same for every wheel flavour.
include_guard(GLOBAL)

if(NOT Python_EXECUTABLE)
  message(FATAL_ERROR "HvdHierTorch: set Python_EXECUTABLE first")
endif()

execute_process(
  COMMAND "${Python_EXECUTABLE}" -c "
import torch, torch.utils.cpp_extension as ext
print('|'.join([','.join(ext.include_paths()), ','.join(ext.library_paths()), str(int(torch._C._GLIBCXX_USE_CXX11_ABI)), torch.version.cuda or 'none', torch.__version__]), end='')"
  OUTPUT_VARIABLE _hh_torch_out
  RESULT_VARIABLE _hh_torch_rc
  ERROR_VARIABLE _hh_torch_err
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _hh_torch_rc EQUAL 0)
  message(FATAL_ERROR "HvdHierTorch: `import torch` failed in ${Python_EXECUTABLE}:\n${_hh_torch_err}")
endif()

string(REPLACE "|" ";" _hh_fields "${_hh_torch_out}")
list(GET _hh_fields 0 HVD_HIER_TORCH_INCLUDE)
list(GET _hh_fields 1 HVD_HIER_TORCH_LIBDIR)
list(GET _hh_fields 2 HVD_HIER_TORCH_CXX11_ABI)
list(GET _hh_fields 3 HVD_HIER_TORCH_CUDA)
list(GET _hh_fields 4 HVD_HIER_TORCH_VERSION)
if(HVD_HIER_TORCH_CUDA STREQUAL "none")
  set(HVD_HIER_TORCH_CUDA "")
endif()
string(REPLACE "," ";" HVD_HIER_TORCH_INCLUDE "${HVD_HIER_TORCH_INCLUDE}")
string(REPLACE "," ";" HVD_HIER_TORCH_LIBDIR "${HVD_HIER_TORCH_LIBDIR}")

set(HVD_HIER_TORCH_PARALLEL_OPENMP OFF)
find_file(_hh_aten_config ATen/Config.h PATHS ${HVD_HIER_TORCH_INCLUDE} NO_DEFAULT_PATH)
if(_hh_aten_config)
  file(STRINGS "${_hh_aten_config}" _hh_openmp REGEX "^#define AT_PARALLEL_OPENMP 1")
  if(_hh_openmp)
    set(HVD_HIER_TORCH_PARALLEL_OPENMP ON)
  endif()
endif()

set(_hh_libs)
foreach(_lib c10 torch torch_cpu torch_python)
  find_library(_hh_lib_${_lib} NAMES ${_lib} PATHS ${HVD_HIER_TORCH_LIBDIR} NO_DEFAULT_PATH REQUIRED)
  list(APPEND _hh_libs ${_hh_lib_${_lib}})
endforeach()

add_library(hvd_hier_torch INTERFACE)
add_library(hvd_hier::torch ALIAS hvd_hier_torch)
target_include_directories(hvd_hier_torch SYSTEM BEFORE INTERFACE ${HVD_HIER_TORCH_INCLUDE})
target_compile_definitions(hvd_hier_torch INTERFACE
  _GLIBCXX_USE_CXX11_ABI=${HVD_HIER_TORCH_CXX11_ABI}
  TORCH_API_INCLUDE_EXTENSION_H
  TORCH_EXTENSION_NAME=_C)
target_link_libraries(hvd_hier_torch INTERFACE ${_hh_libs})

message(STATUS "hvd_hier: torch ${HVD_HIER_TORCH_VERSION} "
               "(CUDA: '${HVD_HIER_TORCH_CUDA}', OpenMP: ${HVD_HIER_TORCH_PARALLEL_OPENMP}) "
               "at ${HVD_HIER_TORCH_LIBDIR}")
