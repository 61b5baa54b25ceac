// f32 matmuls with a static result width >= 16 use the register-blocked micro-kernel:
// column panels outside, 6-row tiles inside, the accumulators loop-carried through k.
// A weight used only as such a right operand is stored pre-packed [n/16][k][16].
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg | FileCheck %s
// RUN: maxc compile %s -o %t.maxa
// RUN: maxc inspect %t.maxa | FileCheck %s --check-prefix=PACKED

// CHECK-LABEL: func.func @g_k0_matmul_relu(
// CHECK-SAME: memref<?x64xf32> {llvm.noalias}, %{{.*}}: memref<2x64x16xf32> {llvm.noalias}
// CHECK: scf.for %{{.*}} step %c16{{.*}} iter_args({{.*}}) -> (tensor<?x32xf32>)
// CHECK: scf.for %{{.*}} step %c6{{.*}} iter_args({{.*}}) -> (tensor<?x32xf32>)
// CHECK: scf.for {{.*}} -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// CHECK: vector.transfer_read {{.*}} : tensor<2x64x16xf32>, vector<8xf32>
// CHECK: vector.broadcast {{.*}} : f32 to vector<8xf32>
// CHECK-COUNT-12: vector.fma
// CHECK: vector.transfer_write
// The one-row tile for leftover rows splits k four ways.
// CHECK: scf.for %{{.*}} step %c4{{.*}} -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// The fused relu follows the contraction.
// CHECK: linalg.generic
// CHECK: arith.maximumf

// PACKED: #1   weight:w:packed16
func.func @g(%x: tensor<?x64xf32>) -> tensor<?x32xf32> {
  %w = "max.weight"() {name = "w", init = "uniform", scale = 1.0 : f64, seed = 3 : i64} : () -> tensor<64x32xf32>
  %0 = "max.matmul"(%x, %w) : (tensor<?x64xf32>, tensor<64x32xf32>) -> tensor<?x32xf32>
  %1 = "max.relu"(%0) : (tensor<?x32xf32>) -> tensor<?x32xf32>
  func.return %1 : tensor<?x32xf32>
}
