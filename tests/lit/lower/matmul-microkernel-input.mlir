// With `b` an input rather than a weight, the micro-kernel copies each [k][16] column panel
// of `b` into contiguous memory first. Every row tile then reads that copy from cache, so,
// unlike a packed weight's panels (matmul-microkernel.mlir), nothing is prefetched.
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg | FileCheck %s

// Its workgroups split the rows, or with few rows b's 16-column stripes (decided at run
// time, as for a packed weight), so `b` and the result are seen through column subviews.
// CHECK-LABEL: func.func @g_k0_matmul(
// CHECK: arith.ceildivui %c48, %c16 : index
// CHECK: memref.subview %arg1[0, %{{.*}}] [64, %{{.*}}] [1, 1] : memref<64x48xf32> to memref<64x?xf32, strided<[48, 1], offset: ?>>
// CHECK: scf.for %{{.*}} step %c16{{.*}} iter_args({{.*}}) -> (tensor<?x?xf32>)
// CHECK: %[[S:.*]] = tensor.extract_slice %{{.*}}[0, %{{.*}}] [64, 16] [1, 1] : tensor<64x?xf32> to tensor<64x16xf32>
// CHECK: linalg.copy ins(%[[S]] : tensor<64x16xf32>)
// CHECK-NOT: memref.prefetch
// CHECK-NOT: bufferization.to_buffer
// CHECK-COUNT-12: vector.fma
// CHECK: return
func.func @g(%a: tensor<?x64xf32>, %b: tensor<64x48xf32>) -> tensor<?x48xf32> {
  %0 = "max.matmul"(%a, %b) : (tensor<?x64xf32>, tensor<64x48xf32>) -> tensor<?x48xf32>
  func.return %0 : tensor<?x48xf32>
}
