// Softmax over the last axis on a CPU runs row by row in 16-lane vectors: the row's max,
// exp(x - max) written to the result while summed, then the result divided by the sum in
// place; the columns past the last whole vector (40 = 2 x 16 + 8) take scalar steps.
// Over another axis it is max-reduce, exp-sum-reduce and a normalizing map in one kernel.
// reduce_mean divides by the element count read from the runtime dims.
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg | FileCheck %s

// CHECK-LABEL: func.func @g_k0_softmax(
// CHECK: %[[MAIN:.+]] = arith.subi %c40, %{{.*}} : index
// CHECK: scf.for %[[ROW:[a-z0-9_]+]] = {{.*}} -> (tensor<?x40xf32>)
// CHECK: scf.for %[[J:[a-z0-9_]+]] = %{{.*}} to %[[MAIN]] step %c16{{.*}} -> (vector<16xf32>)
// CHECK: vector.transfer_read %{{.*}}[%[[ROW]], %[[J]]]
// CHECK: arith.maximumf %{{.*}} : vector<16xf32>
// CHECK: %[[VMAX:.+]] = vector.reduction <maximumf>
// CHECK: %[[MAX:.+]] = scf.for %{{.*}} = %[[MAIN]] to %c40 step %c1{{.*}} iter_args(%{{.*}} = %[[VMAX]]) -> (f32)
// CHECK: %[[MAXV:.+]] = vector.broadcast %[[MAX]] : f32 to vector<16xf32>
// CHECK: scf.for {{.*}} -> (vector<16xf32>, tensor<?x40xf32>)
// CHECK: arith.subf %{{.*}}, %[[MAXV]] : vector<16xf32>
// CHECK: math.floor %{{.*}} : vector<16xf32>
// CHECK: vector.transfer_write
// CHECK: arith.addf %{{.*}} : vector<16xf32>
// CHECK: %[[VSUM:.+]] = vector.reduction <add>
// CHECK: %[[SUM:.+]]:2 = scf.for %{{.*}} = %[[MAIN]] to %c40 {{.*}} iter_args(%{{.*}} = %[[VSUM]], %{{.*}}) -> (f32, tensor<?x40xf32>)
// CHECK: math.floor %{{.*}} : f32
// CHECK: tensor.insert
// CHECK: %[[SUMV:.+]] = vector.broadcast %[[SUM]]#0 : f32 to vector<16xf32>
// CHECK: arith.divf %{{.*}}, %[[SUMV]] : vector<16xf32>
// CHECK: arith.divf %{{.*}}, %[[SUM]]#0 : f32
// CHECK-NOT: linalg.generic
// CHECK: return
// CHECK-LABEL: func.func @g_k1_softmax(
// CHECK: %[[NEGINF:.+]] = arith.constant 0xFF800000 : f32
// CHECK: linalg.fill ins(%[[NEGINF]] : f32)
// CHECK: linalg.generic {{.*}}iterator_types = ["reduction", "parallel"]
// CHECK: arith.maximumf
// CHECK: linalg.generic {{.*}}iterator_types = ["reduction", "parallel"]
// CHECK: math.floor
// CHECK: arith.addf
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]
// CHECK: math.floor
// CHECK: arith.divf
// CHECK-LABEL: func.func @g_k2_reduce_mean(
// CHECK-NOT: memref.subview
// CHECK: linalg.generic {{.*}}iterator_types = ["reduction", "parallel"]
// CHECK: tensor.dim
// CHECK: arith.sitofp %{{.*}} : i64 to f32
// CHECK: arith.divf
func.func @g(%x: tensor<?x40xf32>) -> (tensor<?x40xf32>, tensor<?x40xf32>, tensor<1x40xf32>) {
  %0 = "max.softmax"(%x) {axis = -1 : i64} : (tensor<?x40xf32>) -> tensor<?x40xf32>
  %1 = "max.softmax"(%x) {axis = 0 : i64} : (tensor<?x40xf32>) -> tensor<?x40xf32>
  %2 = "max.reduce_mean"(%x) {axes = array<i64: 0>, keepdims = true} : (tensor<?x40xf32>) -> tensor<1x40xf32>
  func.return %0, %1, %2 : tensor<?x40xf32>, tensor<?x40xf32>, tensor<1x40xf32>
}
