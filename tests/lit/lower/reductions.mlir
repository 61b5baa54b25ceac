// Softmax is max-reduce, exp-sum-reduce and a normalizing map in one kernel; reduce_mean
// divides by the element count read from the runtime dims.
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg | FileCheck %s

// CHECK-LABEL: func.func @g_k0_softmax(
// CHECK: %[[NEGINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK: linalg.fill ins(%[[NEGINF]] : f32)
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]
// CHECK: arith.maximumf
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]
// CHECK: math.floor
// CHECK: arith.addf
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]
// CHECK: math.floor
// CHECK: arith.divf
// CHECK-LABEL: func.func @g_k1_reduce_mean(
// CHECK-NOT: memref.subview
// CHECK: linalg.generic {{.*}}iterator_types = ["reduction", "parallel"]
// CHECK: tensor.dim
// CHECK: arith.sitofp %{{.*}} : i64 to f32
// CHECK: arith.divf
func.func @g(%x: tensor<?x10xf32>) -> (tensor<?x10xf32>, tensor<1x10xf32>) {
  %0 = "max.softmax"(%x) {axis = -1 : i64} : (tensor<?x10xf32>) -> tensor<?x10xf32>
  %1 = "max.reduce_mean"(%x) {axes = array<i64: 0>, keepdims = true} : (tensor<?x10xf32>) -> tensor<1x10xf32>
  func.return %0, %1 : tensor<?x10xf32>, tensor<1x10xf32>
}
