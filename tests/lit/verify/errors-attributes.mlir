// Malformed attributes, unknown ops, foreign ops and unsupported types.
// RUN: not maxc opt %s --split-input-file --pass-pipeline=verify 2>&1 | FileCheck %s

// CHECK: errors-attributes.mlir:[[@LINE+2]]:8: error: 'max.transpose' attribute 'perm' must be array<i64: ...>, got integer
func.func @g(%a: tensor<2x3xf32>) -> tensor<3x2xf32> {
  %0 = "max.transpose"(%a) {perm = 1 : i64} : (tensor<2x3xf32>) -> tensor<3x2xf32>
  func.return %0 : tensor<3x2xf32>
}

// -----

// IRDL checks required attributes before the Rust verifier runs.
// CHECK: errors-attributes.mlir:[[@LINE+2]]:8: error: 'max.softmax' op attribute "axis" is expected but not provided
func.func @g(%a: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %0 = "max.softmax"(%a) : (tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %0 : tensor<2x3xf32>
}

// -----

// CHECK: errors-attributes.mlir:[[@LINE+2]]:8: error: unregistered operation 'max.frobnicate' found in dialect ('max') that does not allow unknown operations
func.func @g(%a: tensor<2xf32>) -> tensor<2xf32> {
  %0 = "max.frobnicate"(%a) : (tensor<2xf32>) -> tensor<2xf32>
  func.return %0 : tensor<2xf32>
}

// -----

// CHECK: errors-attributes.mlir:[[@LINE+2]]:8: error: op expects exactly 1 operands, but got 2
func.func @g(%a: tensor<2xf32>) -> tensor<2xf32> {
  %0 = "max.exp"(%a, %a) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  func.return %0 : tensor<2xf32>
}

// -----

// CHECK: errors-attributes.mlir:[[@LINE+2]]:8: error: op 'arith.addf' is not part of the max dialect; graphs are built from max ops only
func.func @g(%a: tensor<4xf32>) -> tensor<4xf32> {
  %0 = arith.addf %a, %a : tensor<4xf32>
  func.return %0 : tensor<4xf32>
}

// -----

// CHECK: errors-attributes.mlir:[[@LINE+1]]:1: error: argument #0 of @g has type tensor<4xf64>; inputs must be ranked tensors of f32, f16, bf16, i32 or i64
func.func @g(%a: tensor<4xf64>) -> tensor<4xf64> {
  func.return %a : tensor<4xf64>
}

// -----

// CHECK: errors-attributes.mlir:[[@LINE+1]]:1: error: graph 'g' has no outputs
func.func @g(%a: tensor<4xf32>) {
  func.return
}

// -----

// Malformed MLIR: the parser's own diagnostic, with its location.
// CHECK: errors-attributes.mlir:[[@LINE+2]]:23: error: expected '{' to begin a region
func.func @g(%a: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "max.exp"(%a) (tensor<4xf32>) -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}
