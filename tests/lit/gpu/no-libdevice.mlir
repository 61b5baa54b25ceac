// A GPU compile without libdevice (no MAX_CUDA_TOOLKIT) whose kernels call CUDA math
// functions (here the quantized matmul's absolute values): the artifact is refused, since
// no driver would load its PTX, and `--emit ptx` prints the PTX with a warning.
// RUN: not env -u MAX_CUDA_TOOLKIT maxc compile %s --target cuda:sm_90 --sass never -o %t.maxa 2>&1 | FileCheck %s --check-prefix=ART
// RUN: env -u MAX_CUDA_TOOLKIT maxc compile %s --target cuda:sm_90 --emit ptx -o %t.ptx 2>&1 | FileCheck %s --check-prefix=WARN
// RUN: FileCheck %s --check-prefix=PTX < %t.ptx
// ART: error: code generation: GPU kernels call CUDA math functions (libdevice) but no libdevice was linked; run `source scripts/cuda-env.sh`
// WARN: WARN {{.*}}the PTX calls CUDA math functions (libdevice) that are not in it: no libdevice was linked
// PTX: .extern .func {{.*}}__nv_fabsf
func.func @g(%x: tensor<?x64xf32> {max.name = "x"}, %w: tensor<8x68xi8> {max.name = "w"}) -> tensor<?x8xf32> {
  %r = "max.qmatmul"(%x, %w) {format = "q8_0", quantize_input = true} : (tensor<?x64xf32>, tensor<8x68xi8>) -> tensor<?x8xf32>
  func.return %r : tensor<?x8xf32>
}
