// transpose permutes the input map; concat copies operands into slices of the result;
// slice and split extract and copy; gather reads with tensor.extract at clamped indices.
// reshape has no kernel: it is an alias of its operand's buffer.
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg | FileCheck %s

// CHECK-DAG: #[[T:.+]] = affine_map<(d0, d1, d2) -> (d2, d0, d1)>
// CHECK-LABEL: func.func @g_k0_transpose(
// CHECK: linalg.generic {indexing_maps = [#[[T]], {{.*}}]
// CHECK-LABEL: func.func @g_k1_concat(
// CHECK: tensor.extract_slice
// CHECK: linalg.copy
// CHECK: tensor.insert_slice
// CHECK: tensor.extract_slice
// CHECK: linalg.copy
// CHECK: tensor.insert_slice
// CHECK-LABEL: func.func @g_k2_slice(
// CHECK: arith.maxsi
// CHECK: tensor.extract_slice %{{.*}}[%{{.*}}, 0] [%{{.*}}, 4] [2, 1]
// CHECK: linalg.copy
// CHECK-LABEL: func.func @g_k3_gather(
// CHECK: arith.index_cast %{{.*}} : i64 to index
// CHECK: arith.minsi
// CHECK: tensor.extract
// CHECK-NOT: func.func @g_k4_reshape
func.func @g(%x: tensor<4x?x2xf32>, %y: tensor<?x4xf32>, %t: tensor<10x4xf32>, %i: tensor<?xi64>) -> (tensor<?x2x4xf32>, tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x2xf32>) {
  %0 = "max.transpose"(%x) {perm = array<i64: 1, 2, 0>} : (tensor<4x?x2xf32>) -> tensor<?x2x4xf32>
  %1 = "max.concat"(%y, %y) {axis = 0 : i64} : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
  %2 = "max.slice"(%y) {starts = array<i64: -5>, ends = array<i64: 1000>, steps = array<i64: 2>} : (tensor<?x4xf32>) -> tensor<?x4xf32>
  %3 = "max.gather"(%t, %i) {axis = 0 : i64} : (tensor<10x4xf32>, tensor<?xi64>) -> tensor<?x4xf32>
  %4 = "max.reshape"(%y) {shape = array<i64: -1, 2>} : (tensor<?x4xf32>) -> tensor<?x2xf32>
  func.return %0, %1, %2, %3, %4 : tensor<?x2x4xf32>, tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x2xf32>
}
