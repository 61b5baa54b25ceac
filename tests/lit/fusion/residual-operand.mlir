// `x + x @ w`: on the CPU the add is the matmul's epilogue, reading the matmul's own left
// operand; on a GPU a matmul's epilogue reads only operands of its own, so the add stays a
// kernel of its own and the matmul keeps its tensor-core / SIMT kernel.
// RUN: maxc compile %s -o %t.maxa
// RUN: maxc inspect %t.maxa | FileCheck %s
// RUN: maxc compile %s --target cuda:sm_90 -o %t.gpu.maxa
// RUN: maxc inspect %t.gpu.maxa | FileCheck %s --check-prefix=GPU
// CHECK: dispatches 1
// CHECK: max_kernel_g_k0_matmul_add  bindings=[0, 1, 2]
// GPU: dispatches 2
// GPU: max_kernel_g_k0_matmul  bindings=[0, 1, 2]
// GPU: max_kernel_g_k1_add  bindings=[0, 2, 3]
func.func @g(%x: tensor<?x64xf32> {max.name = "x"}, %w: tensor<64x64xf32> {max.name = "w"}) -> tensor<?x64xf32> {
  %m = "max.matmul"(%x, %w) : (tensor<?x64xf32>, tensor<64x64xf32>) -> tensor<?x64xf32>
  %r = "max.add"(%x, %m) : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  func.return %r : tensor<?x64xf32>
}
