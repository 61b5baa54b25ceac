// Verifier errors of concat, split, slice, gather, constants and weights.
// RUN: not maxc opt %s --split-input-file --pass-pipeline=verify 2>&1 | FileCheck %s

// CHECK: errors-data-ops.mlir:[[@LINE+2]]:8: error: 'max.concat' operand #1 has dim 4 on axis 1 but operand #0 has 3
func.func @g(%a: tensor<2x3xf32>, %b: tensor<2x4xf32>) -> tensor<4x3xf32> {
  %0 = "max.concat"(%a, %b) {axis = 0 : i64} : (tensor<2x3xf32>, tensor<2x4xf32>) -> tensor<4x3xf32>
  func.return %0 : tensor<4x3xf32>
}

// -----

// CHECK: errors-data-ops.mlir:[[@LINE+2]]:8: error: 'max.concat' operand #1 is [2, 3] i32 but operand #0 is [2, 3] f32
func.func @g(%a: tensor<2x3xf32>, %b: tensor<2x3xi32>) -> tensor<4x3xf32> {
  %0 = "max.concat"(%a, %b) {axis = 0 : i64} : (tensor<2x3xf32>, tensor<2x3xi32>) -> tensor<4x3xf32>
  func.return %0 : tensor<4x3xf32>
}

// -----

// CHECK: errors-data-ops.mlir:[[@LINE+2]]:12: error: 'max.split' sizes [2, 2] add up to 4 but axis 1 has size 5
func.func @g(%a: tensor<2x5xf32>) -> tensor<2x2xf32> {
  %0, %1 = "max.split"(%a) {axis = 1 : i64, sizes = array<i64: 2, 2>} : (tensor<2x5xf32>) -> (tensor<2x2xf32>, tensor<2x2xf32>)
  func.return %0 : tensor<2x2xf32>
}

// -----

// CHECK: errors-data-ops.mlir:[[@LINE+2]]:12: error: 'max.split' cannot split axis 1 of size 5 into 2 equal parts
func.func @g(%a: tensor<2x5xf32>) -> tensor<2x2xf32> {
  %0, %1 = "max.split"(%a) {axis = 1 : i64, num_splits = 2 : i64} : (tensor<2x5xf32>) -> (tensor<2x2xf32>, tensor<2x2xf32>)
  func.return %0 : tensor<2x2xf32>
}

// -----

// CHECK: errors-data-ops.mlir:[[@LINE+2]]:12: error: 'max.split' takes either 'sizes' or 'num_splits', not both
func.func @g(%a: tensor<2x4xf32>) -> tensor<2x2xf32> {
  %0, %1 = "max.split"(%a) {axis = 1 : i64, num_splits = 2 : i64, sizes = array<i64: 2, 2>} : (tensor<2x4xf32>) -> (tensor<2x2xf32>, tensor<2x2xf32>)
  func.return %0 : tensor<2x2xf32>
}

// -----

// CHECK: errors-data-ops.mlir:[[@LINE+2]]:8: error: 'max.slice' step 0 must be positive
func.func @g(%a: tensor<8xf32>) -> tensor<8xf32> {
  %0 = "max.slice"(%a) {starts = array<i64: 0>, ends = array<i64: 8>, steps = array<i64: 0>} : (tensor<8xf32>) -> tensor<8xf32>
  func.return %0 : tensor<8xf32>
}

// -----

// CHECK: errors-data-ops.mlir:[[@LINE+2]]:8: error: 'max.slice' starts, ends, axes and steps must have the same length
func.func @g(%a: tensor<8xf32>) -> tensor<8xf32> {
  %0 = "max.slice"(%a) {starts = array<i64: 0, 1>, ends = array<i64: 8>} : (tensor<8xf32>) -> tensor<8xf32>
  func.return %0 : tensor<8xf32>
}

// -----

// CHECK: errors-data-ops.mlir:[[@LINE+2]]:8: error: 'max.gather' indices must be i32 or i64, got f32
func.func @g(%a: tensor<8x2xf32>, %i: tensor<3xf32>) -> tensor<3x2xf32> {
  %0 = "max.gather"(%a, %i) {axis = 0 : i64} : (tensor<8x2xf32>, tensor<3xf32>) -> tensor<3x2xf32>
  func.return %0 : tensor<3x2xf32>
}

// -----

// CHECK: errors-data-ops.mlir:[[@LINE+2]]:8: error: weight "w" must have a static shape, got tensor<?x4xf32>
func.func @g() -> tensor<?x4xf32> {
  %0 = "max.weight"() {name = "w"} : () -> tensor<?x4xf32>
  func.return %0 : tensor<?x4xf32>
}

// -----

// CHECK: errors-data-ops.mlir:[[@LINE+2]]:8: error: 'max.weight' init must be "normal" or "uniform", got "zeros"
func.func @g() -> tensor<4xf32> {
  %0 = "max.weight"() {name = "w", init = "zeros"} : () -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}

// -----

// CHECK: errors-data-ops.mlir:[[@LINE+2]]:8: error: concat axis 2 is out of range for a tensor of rank 2
func.func @g(%a: tensor<2x3xf32>) -> tensor<2x6xf32> {
  %0 = "max.concat"(%a, %a) {axis = 2 : i64} : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x6xf32>
  func.return %0 : tensor<2x6xf32>
}

// -----

// CHECK: errors-data-ops.mlir:[[@LINE+2]]:12: error: 'max.split' sizes [5, -1] must not be negative
func.func @g(%a: tensor<2x4xf32>) -> tensor<2x5xf32> {
  %0, %1 = "max.split"(%a) {axis = 1 : i64, sizes = array<i64: 5, -1>} : (tensor<2x4xf32>) -> (tensor<2x5xf32>, tensor<2x1xf32>)
  func.return %0 : tensor<2x5xf32>
}

// -----

// CHECK: errors-data-ops.mlir:[[@LINE+2]]:8: error: slice axis 3 is out of range for a tensor of rank 1
func.func @g(%a: tensor<8xf32>) -> tensor<8xf32> {
  %0 = "max.slice"(%a) {starts = array<i64: 0>, ends = array<i64: 8>, axes = array<i64: 3>} : (tensor<8xf32>) -> tensor<8xf32>
  func.return %0 : tensor<8xf32>
}

// -----

// CHECK: errors-data-ops.mlir:[[@LINE+2]]:8: error: gather axis -3 is out of range for a tensor of rank 2
func.func @g(%a: tensor<8x2xf32>, %i: tensor<3xi32>) -> tensor<3x2xf32> {
  %0 = "max.gather"(%a, %i) {axis = -3 : i64} : (tensor<8x2xf32>, tensor<3xi32>) -> tensor<3x2xf32>
  func.return %0 : tensor<3x2xf32>
}

// -----

// (Weight data errors are in weights-errors.test.)
// CHECK: errors-data-ops.mlir:[[@LINE+2]]:12: error: 'max.split' num_splits must be positive, got 0
func.func @g(%a: tensor<2x4xf32>) -> tensor<2x4xf32> {
  %0, %1 = "max.split"(%a) {axis = 1 : i64, num_splits = 0 : i64} : (tensor<2x4xf32>) -> (tensor<2x2xf32>, tensor<2x2xf32>)
  func.return %a : tensor<2x4xf32>
}
