// Bufferization writes straight into the ABI's buffers: no tensors, no result
// allocations, no copies of whole outputs, and no strided memref.copy (which would need
// MLIR's C runner library at run time).
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg,bufferize | FileCheck %s

// CHECK-LABEL: func.func @g_k0_exp(
// CHECK-NOT: bufferization.to_tensor
// CHECK-NOT: memref.alloc
// CHECK-NOT: memref.copy
// CHECK: linalg.generic {{.*}} ins(%{{.*}} : memref<?x8xf32, strided<[8, 1], offset: ?>>) outs(%{{.*}} : memref<?x8xf32, strided<[8, 1], offset: ?>>)
// CHECK: math.floor
// CHECK-LABEL: func.func @g_k1_concat(
// CHECK-NOT: memref.copy
// CHECK: memref.subview
// CHECK: linalg.copy
// Softmax over the last axis keeps its row statistics in registers; over another axis they
// are temporaries, allocated and freed inside the kernel.
// CHECK-LABEL: func.func @g_k2_softmax(
// CHECK-NOT: memref.alloc
// CHECK: vector.reduction <maximumf>
// CHECK-NOT: memref.alloc
// CHECK: return
// CHECK-LABEL: func.func @g_k3_softmax(
// CHECK: memref.alloc
// CHECK: memref.dealloc
func.func @g(%x: tensor<?x8xf32>) -> (tensor<?x8xf32>, tensor<?x16xf32>, tensor<?x8xf32>, tensor<?x8xf32>) {
  %0 = "max.exp"(%x) : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %1 = "max.concat"(%x, %0) {axis = 1 : i64} : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<?x16xf32>
  %2 = "max.softmax"(%x) {axis = 1 : i64} : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %3 = "max.softmax"(%x) {axis = 0 : i64} : (tensor<?x8xf32>) -> tensor<?x8xf32>
  func.return %0, %1, %2, %3 : tensor<?x8xf32>, tensor<?x16xf32>, tensor<?x8xf32>, tensor<?x8xf32>
}
