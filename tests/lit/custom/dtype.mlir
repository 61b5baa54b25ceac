// RUN: not maxc compile %s --kernels %examples/custom_ops/softsign -o %t.maxa 2>&1 | FileCheck %s
// CHECK: dtype.mlir:[[@LINE+2]]:8: error: custom op 'softsign' operand #0 must be f32 (declared in {{.*}}kernels.toml), got [4, 4] i32
func.func @g(%x: tensor<4x4xi32>) -> tensor<4x4xi32> {
  %r = "max.custom"(%x) {name = "softsign"} : (tensor<4x4xi32>) -> tensor<4x4xi32>
  func.return %r : tensor<4x4xi32>
}
