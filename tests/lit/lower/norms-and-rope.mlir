// rms_norm: a sum-of-squares reduction and one normalizing map; rope: one map that reads
// each element and its rotation partner (adjacent pairs here) with tensor.extract.
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg | FileCheck %s

// CHECK-LABEL: func.func @g_k0_rms_norm(
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "reduction"]
// CHECK: arith.mulf
// CHECK: arith.addf
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "parallel"]
// CHECK: math.rsqrt
// CHECK-LABEL: func.func @g_k1_rope(
// CHECK: linalg.index 3 : index
// CHECK: arith.remui
// CHECK: tensor.extract %{{.*}} : tensor<?xi64>
// CHECK: math.cos {{.*}} : f64
// CHECK: math.sin {{.*}} : f64
// CHECK: tensor.extract
// CHECK: tensor.extract
// CHECK: arith.select
func.func @g(%x: tensor<?x4x64xf32>, %w: tensor<64xf32>, %q: tensor<2x?x4x16xf32>, %p: tensor<?xi64>) -> (tensor<?x4x64xf32>, tensor<2x?x4x16xf32>) {
  %0 = "max.rms_norm"(%x, %w) {epsilon = 1.0e-5 : f64} : (tensor<?x4x64xf32>, tensor<64xf32>) -> tensor<?x4x64xf32>
  %1 = "max.rope"(%q, %p) {base = 1.0e5 : f64, interleaved = true} : (tensor<2x?x4x16xf32>, tensor<?xi64>) -> tensor<2x?x4x16xf32>
  func.return %0, %1 : tensor<?x4x64xf32>, tensor<2x?x4x16xf32>
}
