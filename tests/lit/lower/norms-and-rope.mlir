// rms_norm and layer_norm of f32 rows on a CPU run row by row in 16-lane vectors (softmax
// does too: reductions.mlir), here 40 columns: two vectors, then 8 scalar steps. As in
// llama.cpp, f32 terms are summed in f64 and each mean rounded to f32. rms_norm sums the
// squares, then scales each element by rsqrt(mean + eps) and the weight; layer_norm takes
// the mean, the variance from a second pass over x - mean, then
// (x - mean) * rsqrt(var + eps) * g + b. Other types keep the generic form, a
// sum-of-squares reduction and one normalizing map (f16 here). rope: one map that reads
// each element and its rotation partner (adjacent pairs here) with tensor.extract.
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg | FileCheck %s

// CHECK-LABEL: func.func @g_k0_rms_norm(
// CHECK: scf.for {{.*}} -> (tensor<?x4x40xf32>)
// CHECK: scf.for {{.*}} -> (tensor<?x4x40xf32>)
// CHECK: %[[SQ:.*]] = scf.for {{.*}} step %c16{{.*}} -> (vector<16xf64>)
// CHECK: arith.mulf %{{.*}} : vector<16xf32>
// CHECK: arith.extf %{{.*}} : vector<16xf32> to vector<16xf64>
// CHECK: vector.reduction <add>, %[[SQ]] : vector<16xf64> into f64
// CHECK: %[[SUM:.*]] = scf.for {{.*}} to %c40 step %c1{{.*}} -> (f64)
// CHECK: %[[MS64:.*]] = arith.divf %[[SUM]], %{{.*}} : f64
// CHECK: %[[MS:.*]] = arith.truncf %[[MS64]] : f64 to f32
// CHECK: %[[EPS:.*]] = arith.addf %[[MS]]
// CHECK: %[[R:.*]] = math.rsqrt %[[EPS]] : f32
// CHECK: %[[RV:.*]] = vector.broadcast %[[R]] : f32 to vector<16xf32>
// CHECK: scf.for {{.*}} step %c16{{.*}} -> (tensor<?x4x40xf32>)
// CHECK: %[[W:.*]] = vector.transfer_read %{{.*}} : tensor<40xf32>, vector<16xf32>
// CHECK: %[[Y:.*]] = arith.mulf %{{.*}}, %[[RV]] : vector<16xf32>
// CHECK: arith.mulf %[[Y]], %[[W]] : vector<16xf32>
// CHECK: vector.transfer_write
// CHECK: scf.for {{.*}} to %c40 step %c1{{.*}} -> (tensor<?x4x40xf32>)
// CHECK: tensor.insert
// CHECK-NOT: linalg.generic
// CHECK-LABEL: func.func @g_k1_layer_norm(
// CHECK: vector.reduction <add>, %{{.*}} : vector<16xf64> into f64
// CHECK: %[[MEAN:.*]] = arith.truncf
// CHECK: %[[MEANV:.*]] = vector.broadcast %[[MEAN]] : f32 to vector<16xf32>
// CHECK: arith.subf %{{.*}}, %[[MEANV]] : vector<16xf32>
// CHECK: vector.reduction <add>, %{{.*}} : vector<16xf64> into f64
// CHECK: math.rsqrt
// CHECK: scf.for {{.*}} step %c16{{.*}} -> (tensor<?x4x40xf32>)
// CHECK: arith.subf %{{.*}}, %[[MEANV]] : vector<16xf32>
// CHECK: arith.mulf
// CHECK: arith.mulf
// CHECK: arith.addf %{{.*}} : vector<16xf32>
// CHECK-NOT: linalg.generic
// CHECK-LABEL: func.func @g_k2_rms_norm(
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]
// CHECK: arith.mulf
// CHECK: arith.addf
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]
// CHECK: math.rsqrt
// CHECK-LABEL: func.func @g_k3_rope(
// CHECK: linalg.index 3 : index
// CHECK: arith.remui
// CHECK: tensor.extract %{{.*}} : tensor<?xi64>
// CHECK: math.cos {{.*}} : f64
// CHECK: math.sin {{.*}} : f64
// CHECK: tensor.extract
// CHECK: tensor.extract
// CHECK: arith.select
func.func @g(%x: tensor<?x4x40xf32>, %w: tensor<40xf32>, %b: tensor<40xf32>, %h: tensor<?x64xf16>, %hw: tensor<64xf16>, %q: tensor<2x?x4x16xf32>, %p: tensor<?xi64>) -> (tensor<?x4x40xf32>, tensor<?x4x40xf32>, tensor<?x64xf16>, tensor<2x?x4x16xf32>) {
  %0 = "max.rms_norm"(%x, %w) {epsilon = 1.0e-5 : f64} : (tensor<?x4x40xf32>, tensor<40xf32>) -> tensor<?x4x40xf32>
  %1 = "max.layer_norm"(%x, %w, %b) {epsilon = 1.0e-5 : f64} : (tensor<?x4x40xf32>, tensor<40xf32>, tensor<40xf32>) -> tensor<?x4x40xf32>
  %2 = "max.rms_norm"(%h, %hw) {epsilon = 1.0e-5 : f64} : (tensor<?x64xf16>, tensor<64xf16>) -> tensor<?x64xf16>
  %3 = "max.rope"(%q, %p) {base = 1.0e5 : f64, interleaved = true} : (tensor<2x?x4x16xf32>, tensor<?xi64>) -> tensor<2x?x4x16xf32>
  func.return %0, %1, %2, %3 : tensor<?x4x40xf32>, tensor<?x4x40xf32>, tensor<?x64xf16>, tensor<2x?x4x16xf32>
}
