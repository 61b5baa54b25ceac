// max -> linalg for elementwise ops: one linalg.generic per op, broadcast operands read
// through projected maps, the result computed in place in the output binding, and rows
// split over workgroups through subviews.
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg | FileCheck %s

// CHECK-DAG: #[[ID:.+]] = affine_map<(d0, d1) -> (d0, d1)>
// CHECK-DAG: #[[ROW:.+]] = affine_map<(d0, d1) -> (d1)>
// CHECK-LABEL: func.func @g_k0_add(
// CHECK-SAME: %[[X:[a-z0-9]+]]: memref<?x5xf32> {llvm.noalias}, %[[Y:[a-z0-9]+]]: memref<5xf32> {llvm.noalias}, %[[OUT:[a-z0-9]+]]: memref<?x5xf32> {llvm.noalias}, %[[WG:[a-z0-9]+]]: index, %[[NWG:[a-z0-9]+]]: index)
// CHECK: %[[ROWS:.+]] = memref.dim %[[OUT]]
// CHECK: %[[CHUNK:.+]] = arith.ceildivui %[[ROWS]], %[[NWG]]
// CHECK: %[[XV:.+]] = memref.subview %[[X]]
// CHECK: %[[OV:.+]] = memref.subview %[[OUT]]
// CHECK: %[[XT:.+]] = bufferization.to_tensor %[[XV]] restrict
// CHECK: %[[YT:.+]] = bufferization.to_tensor %[[Y]] restrict
// CHECK: %[[OT:.+]] = bufferization.to_tensor %[[OV]] restrict writable
// CHECK: %[[R:.+]] = linalg.generic {indexing_maps = [#[[ID]], #[[ROW]], #[[ID]]], iterator_types = ["parallel", "parallel"]} ins(%[[XT]], %[[YT]] : {{.*}}) outs(%[[OT]] : tensor<?x5xf32>)
// CHECK: arith.addf
// CHECK: bufferization.materialize_in_destination %[[R]] in restrict writable %[[OV]]

// f16 computes in f32 and rounds on store. GELU's erf is inline (a rational function on
// [-4, 4], no libm call), so the loop vectorizes.
// CHECK-LABEL: func.func @g_k1_gelu(
// CHECK: arith.extf %{{.*}} : f16 to f32
// CHECK-NOT: math.erf
// CHECK: arith.constant 4.000000e+00 : f32
// CHECK: math.fma
// CHECK: arith.divf
// CHECK: arith.truncf %{{.*}} : f32 to f16

// Integer division is guarded against traps.
// CHECK-LABEL: func.func @g_k2_div(
// CHECK: arith.cmpi eq
// CHECK: arith.select
// CHECK: arith.divsi
func.func @g(%x: tensor<?x5xf32>, %y: tensor<5xf32>, %h: tensor<4xf16>, %i: tensor<3xi32>) -> (tensor<?x5xf32>, tensor<4xf16>, tensor<3xi32>) {
  %0 = "max.add"(%x, %y) : (tensor<?x5xf32>, tensor<5xf32>) -> tensor<?x5xf32>
  %1 = "max.gelu"(%h) : (tensor<4xf16>) -> tensor<4xf16>
  %2 = "max.div"(%i, %i) : (tensor<3xi32>, tensor<3xi32>) -> tensor<3xi32>
  func.return %0, %1, %2 : tensor<?x5xf32>, tensor<4xf16>, tensor<3xi32>
}
