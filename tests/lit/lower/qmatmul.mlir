// qmatmul keeps weights in GGUF blocks: the contraction's body decodes the f16 scale (two
// bytes, bitcast) and the 4-bit quant of each weight from the i8 block bytes.
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg | FileCheck %s
// CHECK-LABEL: func.func @g_k0_qmatmul(
// CHECK-SAME: memref<?x64xf32> {llvm.noalias}, %{{.*}}: memref<16x40xi8> {llvm.noalias}
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "reduction"]
// CHECK: linalg.index 2 : index
// CHECK: tensor.extract %{{.*}} : tensor<16x40xi8>
// CHECK: arith.bitcast %{{.*}} : i16 to f16
// CHECK: arith.shrui
// CHECK: arith.andi
func.func @g(%x: tensor<?x64xf32>, %w: tensor<16x40xi8>) -> tensor<?x16xf32> {
  %0 = "max.qmatmul"(%x, %w) {format = "q4_1"} : (tensor<?x64xf32>, tensor<16x40xi8>) -> tensor<?x16xf32>
  func.return %0 : tensor<?x16xf32>
}
