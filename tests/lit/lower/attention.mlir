// attention: scores by a contraction reading kv heads through `floordiv` (grouped-query),
// scale and causal mask from the runtime sequence lengths, softmax over keys, weighted sum.
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg | FileCheck %s
// CHECK-DAG: affine_map<(d0, d1, d2, d3, d4) -> (d0, d3, d1 floordiv 3, d4)>
// CHECK-DAG: affine_map<(d0, d1, d2, d3, d4) -> (d0, d4, d2 floordiv 3, d3)>
// CHECK-LABEL: func.func @g_k0_attention(
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction"]
// CHECK: arith.cmpi sgt
// CHECK: arith.select {{.*}} : f32
// CHECK: math.floor
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction"]
func.func @g(%q: tensor<?x?x9x64xf32>, %k: tensor<?x?x3x64xf32>, %v: tensor<?x?x3x64xf32>) -> tensor<?x?x9x64xf32> {
  %0 = "max.attention"(%q, %k, %v) {causal = true} : (tensor<?x?x9x64xf32>, tensor<?x?x3x64xf32>, tensor<?x?x3x64xf32>) -> tensor<?x?x9x64xf32>
  func.return %0 : tensor<?x?x9x64xf32>
}
