// Matmuls outside the f32 micro-kernel's reach (here: result width 12 < 16, or batched)
// lower to a zero fill and a linalg.generic with loops (m, k, n): the reduction
// sits outside the contiguous n loop. Batch dims broadcast through constant-0 map results.
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg | FileCheck %s

// CHECK-DAG: #[[A:.+]] = affine_map<(d0, d1, d2) -> (d0, d1)>
// CHECK-DAG: #[[B:.+]] = affine_map<(d0, d1, d2) -> (d1, d2)>
// CHECK-DAG: #[[C:.+]] = affine_map<(d0, d1, d2) -> (d0, d2)>
// CHECK-DAG: #[[BA:.+]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2)>
// CHECK-DAG: #[[BB:.+]] = affine_map<(d0, d1, d2, d3) -> (0, d2, d3)>
// CHECK-LABEL: func.func @g_k0_matmul(
// CHECK: linalg.fill ins(%{{.*}} : f32)
// CHECK: linalg.generic {indexing_maps = [#[[A]], #[[B]], #[[C]]], iterator_types = ["parallel", "reduction", "parallel"]}
// CHECK: arith.mulf
// CHECK: arith.addf
// CHECK-LABEL: func.func @g_k1_matmul(
// CHECK: linalg.generic {indexing_maps = [#[[BA]], #[[BB]], {{.*}}], iterator_types = ["parallel", "parallel", "reduction", "parallel"]}
func.func @g(%a: tensor<?x8xf32>, %b: tensor<8x12xf32>, %c: tensor<3x?x8xf32>, %d: tensor<1x8x4xf32>) -> (tensor<?x12xf32>, tensor<3x?x4xf32>) {
  %0 = "max.matmul"(%a, %b) : (tensor<?x8xf32>, tensor<8x12xf32>) -> tensor<?x12xf32>
  %1 = "max.matmul"(%c, %d) : (tensor<3x?x8xf32>, tensor<1x8x4xf32>) -> tensor<3x?x4xf32>
  func.return %0, %1 : tensor<?x12xf32>, tensor<3x?x4xf32>
}
