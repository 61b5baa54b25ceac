// Without ptxas (none in $MAX_CUDA_TOOLKIT or on the PATH), `--sass auto`, the default,
// ships PTX only and `--sass always` is an error. The PATH keeps the system's linker.
// UNSUPPORTED: system-ptxas
// RUN: env MAX_CUDA_TOOLKIT= PATH=%bin_dir:/usr/bin:/bin maxc compile %s --target cuda:sm_90 -o %t.maxa
// RUN: max inspect %t.maxa | FileCheck %s --check-prefix=AUTO
// AUTO: gpu modules:     1: PTX for sm_90 (1); no SASS (the driver compiles the PTX at a first load)
// RUN: env MAX_CUDA_TOOLKIT= PATH=%bin_dir:/usr/bin:/bin not maxc compile %s --target cuda:sm_90 --sass always -o %t.e.maxa 2>&1 | FileCheck %s --check-prefix=ALWAYS
// ALWAYS: maxc: error: code generation: --sass always needs NVIDIA's ptxas: run `source scripts/cuda-env.sh` or set MAX_CUDA_TOOLKIT (or put ptxas on the PATH)
func.func @g(%x: tensor<?x64xf32>, %y: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %a = "max.add"(%x, %y) : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  %r = "max.relu"(%a) : (tensor<?x64xf32>) -> tensor<?x64xf32>
  func.return %r : tensor<?x64xf32>
}
