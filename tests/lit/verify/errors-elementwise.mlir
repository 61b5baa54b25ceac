// Verifier errors of elementwise ops, each reported at the op's file:line:col.
// RUN: not maxc opt %s --split-input-file --pass-pipeline=verify 2>&1 | FileCheck %s

// CHECK: errors-elementwise.mlir:[[@LINE+2]]:8: error: cannot broadcast dimension 3 against 4 (axis 1 of the result)
func.func @g(%a: tensor<2x3xf32>, %b: tensor<2x4xf32>) -> tensor<2x3xf32> {
  %0 = "max.add"(%a, %b) : (tensor<2x3xf32>, tensor<2x4xf32>) -> tensor<2x3xf32>
  func.return %0 : tensor<2x3xf32>
}

// -----

// CHECK: errors-elementwise.mlir:[[@LINE+2]]:8: error: 'max.mul' operands have different dtypes: f32 and f16
func.func @g(%a: tensor<2xf32>, %b: tensor<2xf16>) -> tensor<2xf32> {
  %0 = "max.mul"(%a, %b) : (tensor<2xf32>, tensor<2xf16>) -> tensor<2xf32>
  func.return %0 : tensor<2xf32>
}

// -----

// CHECK: errors-elementwise.mlir:[[@LINE+2]]:8: error: 'max.exp' requires a floating-point operand, got i32
func.func @g(%a: tensor<2xi32>) -> tensor<2xi32> {
  %0 = "max.exp"(%a) : (tensor<2xi32>) -> tensor<2xi32>
  func.return %0 : tensor<2xi32>
}

// -----

// CHECK: errors-elementwise.mlir:[[@LINE+2]]:8: error: 'max.pow' requires a floating-point operand, got i64
func.func @g(%a: tensor<2xi64>) -> tensor<2xi64> {
  %0 = "max.pow"(%a, %a) : (tensor<2xi64>, tensor<2xi64>) -> tensor<2xi64>
  func.return %0 : tensor<2xi64>
}

// -----

// CHECK: errors-elementwise.mlir:[[@LINE+2]]:8: error: 'max.relu' result #0 is declared tensor<3xf32> but inferred as [2] f32
func.func @g(%a: tensor<2xf32>) -> tensor<3xf32> {
  %0 = "max.relu"(%a) : (tensor<2xf32>) -> tensor<3xf32>
  func.return %0 : tensor<3xf32>
}

// -----

// CHECK: errors-elementwise.mlir:[[@LINE+2]]:8: error: 'max.sub' result #0 is declared tensor<?x4xi32> but inferred as [s, 4] f32
func.func @g(%a: tensor<?x4xf32> {max.dims = ["s", ""]}) -> tensor<?x4xi32> {
  %0 = "max.sub"(%a, %a) : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xi32>
  func.return %0 : tensor<?x4xi32>
}

// -----

// A dynamic dim cannot be proven equal to a static one.
// CHECK: errors-elementwise.mlir:[[@LINE+2]]:8: error: cannot broadcast dimension batch against 4 (axis 0 of the result)
func.func @g(%a: tensor<?xf32> {max.dims = ["batch"]}, %b: tensor<4xf32>) -> tensor<?xf32> {
  %0 = "max.add"(%a, %b) : (tensor<?xf32>, tensor<4xf32>) -> tensor<?xf32>
  func.return %0 : tensor<?xf32>
}
