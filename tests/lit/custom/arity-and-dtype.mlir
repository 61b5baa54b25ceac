// Wrong operand count or dtype against the declaration, reported at the op.
// RUN: not maxc opt %s --split-input-file --pass-pipeline=verify 2>&1 | FileCheck %s
// (maxc opt has no --kernels, so these go through maxc compile below.)
// RUN: not maxc compile %s --kernels %examples/custom_ops/softsign -o %t.maxa 2>&1 | FileCheck %s --check-prefix=ARITY
// CHECK: unknown custom op 'softsign'
// ARITY: arity-and-dtype.mlir:[[@LINE+2]]:8: error: custom op 'softsign' takes 1 operand(s) (declared in {{.*}}kernels.toml), got 2
func.func @g(%x: tensor<4x4xf32>) -> tensor<4x4xf32> {
  %r = "max.custom"(%x, %x) {name = "softsign"} : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  func.return %r : tensor<4x4xf32>
}
