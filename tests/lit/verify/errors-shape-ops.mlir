// Verifier errors of matmul, transpose, reductions, softmax and reshape.
// RUN: not maxc opt %s --split-input-file --pass-pipeline=verify 2>&1 | FileCheck %s

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.matmul' contraction dims differ: lhs [2, 3] f32 has 3 columns, rhs [4, 5] f32 has 4 rows
func.func @g(%a: tensor<2x3xf32>, %b: tensor<4x5xf32>) -> tensor<2x5xf32> {
  %0 = "max.matmul"(%a, %b) : (tensor<2x3xf32>, tensor<4x5xf32>) -> tensor<2x5xf32>
  func.return %0 : tensor<2x5xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.matmul' needs operands of rank >= 2, got ranks 1 and 2
func.func @g(%a: tensor<3xf32>, %b: tensor<3x5xf32>) -> tensor<5xf32> {
  %0 = "max.matmul"(%a, %b) : (tensor<3xf32>, tensor<3x5xf32>) -> tensor<5xf32>
  func.return %0 : tensor<5xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.matmul' operands have different dtypes: f32 and bf16
func.func @g(%a: tensor<2x3xf32>, %b: tensor<3x5xbf16>) -> tensor<2x5xf32> {
  %0 = "max.matmul"(%a, %b) : (tensor<2x3xf32>, tensor<3x5xbf16>) -> tensor<2x5xf32>
  func.return %0 : tensor<2x5xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: cannot broadcast dimension 2 against 3 (axis 0 of the result)
func.func @g(%a: tensor<2x4x3xf32>, %b: tensor<3x3x5xf32>) -> tensor<2x4x5xf32> {
  %0 = "max.matmul"(%a, %b) : (tensor<2x4x3xf32>, tensor<3x3x5xf32>) -> tensor<2x4x5xf32>
  func.return %0 : tensor<2x4x5xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.transpose' perm [0, 0] is not a permutation
func.func @g(%a: tensor<2x3xf32>) -> tensor<2x2xf32> {
  %0 = "max.transpose"(%a) {perm = array<i64: 0, 0>} : (tensor<2x3xf32>) -> tensor<2x2xf32>
  func.return %0 : tensor<2x2xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.transpose' perm has 3 entries but the operand has rank 2
func.func @g(%a: tensor<2x3xf32>) -> tensor<3x2xf32> {
  %0 = "max.transpose"(%a) {perm = array<i64: 1, 0, 2>} : (tensor<2x3xf32>) -> tensor<3x2xf32>
  func.return %0 : tensor<3x2xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: reduction axis 2 is out of range for a tensor of rank 2
func.func @g(%a: tensor<2x3xf32>) -> tensor<2xf32> {
  %0 = "max.reduce_sum"(%a) {axes = array<i64: 2>} : (tensor<2x3xf32>) -> tensor<2xf32>
  func.return %0 : tensor<2xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.reduce_max' axes [1, -1] repeat an axis
func.func @g(%a: tensor<2x3xf32>) -> tensor<2xf32> {
  %0 = "max.reduce_max"(%a) {axes = array<i64: 1, -1>} : (tensor<2x3xf32>) -> tensor<2xf32>
  func.return %0 : tensor<2xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: softmax axis -3 is out of range for a tensor of rank 2
func.func @g(%a: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %0 = "max.softmax"(%a) {axis = -3 : i64} : (tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %0 : tensor<2x3xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.reshape' changes the element count from 6 ([2, 3] f32) to 8
func.func @g(%a: tensor<2x3xf32>) -> tensor<2x4xf32> {
  %0 = "max.reshape"(%a) {shape = array<i64: 2, 4>} : (tensor<2x3xf32>) -> tensor<2x4xf32>
  func.return %0 : tensor<2x4xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.reshape' cannot infer -1: 30 elements are not divisible by 4
func.func @g(%a: tensor<3x10xf32>) -> tensor<?x4xf32> {
  %0 = "max.reshape"(%a) {shape = array<i64: -1, 4>} : (tensor<3x10xf32>) -> tensor<?x4xf32>
  func.return %0 : tensor<?x4xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.reshape' shape may contain at most one -1
func.func @g(%a: tensor<2x3xf32>) -> tensor<?x?xf32> {
  %0 = "max.reshape"(%a) {shape = array<i64: -1, -1>} : (tensor<2x3xf32>) -> tensor<?x?xf32>
  func.return %0 : tensor<?x?xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.broadcast_to' cannot broadcast dimension 3 to 4
func.func @g(%a: tensor<2x3xf32>) -> tensor<2x4xf32> {
  %0 = "max.broadcast_to"(%a) {shape = array<i64: 2, 4>} : (tensor<2x3xf32>) -> tensor<2x4xf32>
  func.return %0 : tensor<2x4xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.broadcast_to' target rank 1 is below the operand rank 2
func.func @g(%a: tensor<2x3xf32>) -> tensor<6xf32> {
  %0 = "max.broadcast_to"(%a) {shape = array<i64: 6>} : (tensor<2x3xf32>) -> tensor<6xf32>
  func.return %0 : tensor<6xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: perm entry 5 is out of range for a tensor of rank 2
func.func @g(%a: tensor<2x3xf32>) -> tensor<3x2xf32> {
  %0 = "max.transpose"(%a) {perm = array<i64: 5, 0>} : (tensor<2x3xf32>) -> tensor<3x2xf32>
  func.return %0 : tensor<3x2xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.reduce_mean' requires a floating-point operand, got i32
func.func @g(%a: tensor<2x3xi32>) -> tensor<2xi32> {
  %0 = "max.reduce_mean"(%a) {axes = array<i64: 1>} : (tensor<2x3xi32>) -> tensor<2xi32>
  func.return %0 : tensor<2xi32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.reshape' shape entry 2 is 0 (copy) but the operand has rank 2
func.func @g(%a: tensor<2x3xf32>) -> tensor<6x1x1xf32> {
  %0 = "max.reshape"(%a) {shape = array<i64: 6, 1, 0>} : (tensor<2x3xf32>) -> tensor<6x1x1xf32>
  func.return %0 : tensor<6x1x1xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.reshape' shape entry -2 is invalid (use -1 once, or 0 to copy a dim)
func.func @g(%a: tensor<2x3xf32>) -> tensor<6xf32> {
  %0 = "max.reshape"(%a) {shape = array<i64: -2>} : (tensor<2x3xf32>) -> tensor<6xf32>
  func.return %0 : tensor<6xf32>
}

// -----

// CHECK: errors-shape-ops.mlir:[[@LINE+2]]:8: error: 'max.broadcast_to' shape entry 0 is -1 but there is no operand dim to keep
func.func @g(%a: tensor<3xf32>) -> tensor<2x3xf32> {
  %0 = "max.broadcast_to"(%a) {shape = array<i64: -1, 3>} : (tensor<3xf32>) -> tensor<2x3xf32>
  func.return %0 : tensor<2x3xf32>
}
