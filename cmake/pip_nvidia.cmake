# Where pip puts NVIDIA's libraries (nvidia-nccl-cu13, nvidia-nvjpeg, nvidia-cudnn-cu13,
# nvidia-cudnn-frontend, ...): python3's site-packages folders, under nvidia/<package>/ (nvidia is a
# namespace package that may be spread over several of them). One description, used by the NCCL,
# nvJPEG and cuDNN probes (CMakeLists.txt, cmake/nvjpeg.cmake, cmake/cudnn.cmake) as search hints.

# kat_python_site_dirs(<out>): python3's site-packages folders (purelib, the global ones, the
# user's), without repeats; empty without python3.
function(kat_python_site_dirs out)
  execute_process(
    COMMAND python3 -c "import site, sysconfig; p = [sysconfig.get_paths()['purelib']] + site.getsitepackages() + [site.getusersitepackages()]; print(';'.join(dict.fromkeys(p)))"
    OUTPUT_VARIABLE dirs OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  set(${out} ${dirs} PARENT_SCOPE)
endfunction()

# kat_pip_nvidia_dirs(<out> <package>...): <site>/nvidia/<package> for every site-packages folder and
# every package named (e.g. nccl, cudnn, cu13), whether or not it exists (find_* skips the missing).
function(kat_pip_nvidia_dirs out)
  kat_python_site_dirs(sites)
  set(dirs "")
  foreach(site ${sites})
    foreach(package ${ARGN})
      list(APPEND dirs ${site}/nvidia/${package})
    endforeach()
  endforeach()
  set(${out} ${dirs} PARENT_SCOPE)
endfunction()
