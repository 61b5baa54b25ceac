// Without a usable ptxas (none in $MAX_CUDA_TOOLKIT or on the PATH, or one too old),
// `--sass auto`, the default, ships PTX only and `--sass always` is an error. The PATH
// keeps the system's linker.
// UNSUPPORTED: system-ptxas
// RUN: env MAX_CUDA_TOOLKIT= PATH=%bin_dir:/usr/bin:/bin maxc compile %s --target cuda:sm_90 -o %t.maxa
// RUN: max inspect %t.maxa | FileCheck %s --check-prefix=AUTO
// AUTO: gpu modules:     1: PTX for sm_90 (1); no SASS (the driver compiles the PTX at a first load)
// RUN: env MAX_CUDA_TOOLKIT= PATH=%bin_dir:/usr/bin:/bin not maxc compile %s --target cuda:sm_90 --sass always -o %t.e.maxa 2>&1 | FileCheck %s --check-prefix=ALWAYS
// ALWAYS: maxc: error: code generation: --sass always needs NVIDIA's ptxas: run `source scripts/cuda-env.sh` or set MAX_CUDA_TOOLKIT (or put ptxas on the PATH)
//
// A ptxas older than CUDA 12.0 (no PTX ISA 8.0, no sm_90a) is passed over the same way.
// RUN: rm -rf %t.old && mkdir -p %t.old/bin
// RUN: printf '#!/bin/sh\necho "Cuda compilation tools, release 11.8, V11.8.89"\n' > %t.old/bin/ptxas
// RUN: chmod +x %t.old/bin/ptxas
// RUN: env MAX_CUDA_TOOLKIT=%t.old maxc compile %s --target cuda:sm_90 -o %t.maxa 2>&1 | FileCheck %s --check-prefix=OLD
// OLD: WARN {{.*}}bin/ptxas is CUDA 11.8's; SASS needs 12.0 or later: kernels ship as PTX only
// RUN: max inspect %t.maxa | FileCheck %s --check-prefix=AUTO
// RUN: env MAX_CUDA_TOOLKIT=%t.old not maxc compile %s --target cuda:sm_90 --sass always -o %t.e.maxa 2>&1 | FileCheck %s --check-prefix=OLDALWAYS
// OLDALWAYS: maxc: error: code generation: --sass always: {{.*}}bin/ptxas is CUDA 11.8's; SASS needs 12.0 or later
func.func @g(%x: tensor<?x64xf32>, %y: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %a = "max.add"(%x, %y) : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  %r = "max.relu"(%a) : (tensor<?x64xf32>) -> tensor<?x64xf32>
  func.return %r : tensor<?x64xf32>
}
