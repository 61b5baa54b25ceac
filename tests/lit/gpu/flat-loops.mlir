// Generic GPU kernels of rank > 2 (BERT's head transposes and batched attention products):
// the loop nest is flattened into blocks of 256 threads, one element each, not one block
// per index of the first dimension with the third and later ones looped in every thread.
// RUN: maxc compile %s --target cuda:sm_90 --emit llvm-dialect | FileCheck %s
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=PTX
// CHECK-LABEL: llvm.func @g_k0_transpose(
// CHECK: %[[BS:.*]] = llvm.mlir.constant(256 : index) : i64
// CHECK: llvm.udiv %{{.*}}, %[[BS]] : i64
// CHECK: gpu.launch_func {{.*}}@g_k0_transpose_kernel blocks in (%{{.*}}, %[[ONE:.*]], %[[ONE]]) threads in (%[[ONE]], %[[BS]], %[[ONE]])
// CHECK-LABEL: llvm.func @g_k2_matmul(
// CHECK: %[[BS2:.*]] = llvm.mlir.constant(256 : index) : i64
// CHECK: gpu.launch_func {{.*}}@g_k2_matmul_kernel blocks in (%{{.*}}, %[[ONE2:.*]], %[[ONE2]]) threads in (%[[ONE2]], %[[BS2]], %[[ONE2]])
// Each thread recovers its element's indices by division.
// PTX-LABEL: .entry g_k0_transpose_kernel(
// PTX: div.u64
func.func @g(%x: tensor<?x?x12x32xf32> {max.name = "x"}, %k: tensor<?x12x?x32xf32> {max.name = "k"}) -> (tensor<?x12x?x32xf32>, tensor<?x12x?x?xf32>) {
  %t = "max.transpose"(%x) {perm = [0, 2, 1, 3]} : (tensor<?x?x12x32xf32>) -> tensor<?x12x?x32xf32>
  %kt = "max.transpose"(%k) {perm = [0, 1, 3, 2]} : (tensor<?x12x?x32xf32>) -> tensor<?x12x32x?xf32>
  %s = "max.matmul"(%t, %kt) : (tensor<?x12x?x32xf32>, tensor<?x12x32x?xf32>) -> tensor<?x12x?x?xf32>
  func.return %t, %s : tensor<?x12x?x32xf32>, tensor<?x12x?x?xf32>
}
