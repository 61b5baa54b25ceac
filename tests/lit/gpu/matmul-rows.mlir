// A matmul of a batch of rows, x[B, T, K] @ w[K, N], with a bias and a residual of the
// output's shape: the kernel views its 3-D operands as B * T rows and calls the 2-D matmul
// kernel (here the SIMT f32 kernel and its split-K reduction), not the generic loops.
// RUN: maxc compile %s --target cuda:sm_90 --emit llvm-dialect | FileCheck %s
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=PTX
// CHECK-LABEL: llvm.func @g_k0_matmul_add_add(
// CHECK: llvm.call @g_k0_matmul_add_add_flat(
// CHECK-LABEL: llvm.func @g_k0_matmul_add_add_flat(
// CHECK: gpu.launch_func {{.*}}@g_k0_matmul_add_add_flat_sgemm::@mm
// PTX-DAG: .entry mm(
// PTX-DAG: .entry partial(
// PTX-DAG: .entry reduce(
func.func @g(%x: tensor<?x?x384xf32> {max.name = "x"}, %w: tensor<384x512xf32> {max.name = "w"}, %b: tensor<512xf32> {max.name = "b"}, %r: tensor<?x?x512xf32> {max.name = "r"}) -> tensor<?x?x512xf32> {
  %m = "max.matmul"(%x, %w) : (tensor<?x?x384xf32>, tensor<384x512xf32>) -> tensor<?x?x512xf32>
  %a = "max.add"(%m, %b) : (tensor<?x?x512xf32>, tensor<512xf32>) -> tensor<?x?x512xf32>
  %y = "max.add"(%a, %r) : (tensor<?x?x512xf32>, tensor<?x?x512xf32>) -> tensor<?x?x512xf32>
  func.return %y : tensor<?x?x512xf32>
}
