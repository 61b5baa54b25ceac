// Verifier errors of rms_norm, layer_norm and rope.
// RUN: not maxc opt %s --split-input-file --pass-pipeline=verify 2>&1 | FileCheck %s

// CHECK: errors-llm-ops.mlir:[[@LINE+2]]:8: error: 'max.rms_norm' weight has 32 elements but the normalized axis has 64
func.func @g(%x: tensor<2x64xf32>, %w: tensor<32xf32>) -> tensor<2x64xf32> {
  %0 = "max.rms_norm"(%x, %w) : (tensor<2x64xf32>, tensor<32xf32>) -> tensor<2x64xf32>
  func.return %0 : tensor<2x64xf32>
}

// -----

// CHECK: errors-llm-ops.mlir:[[@LINE+2]]:8: error: 'max.layer_norm' beta must be a 1-D f32 tensor, got [2, 64] f32
func.func @g(%x: tensor<2x64xf32>, %w: tensor<64xf32>) -> tensor<2x64xf32> {
  %0 = "max.layer_norm"(%x, %w, %x) : (tensor<2x64xf32>, tensor<64xf32>, tensor<2x64xf32>) -> tensor<2x64xf32>
  func.return %0 : tensor<2x64xf32>
}

// -----

// CHECK: errors-llm-ops.mlir:[[@LINE+2]]:8: error: 'max.rope' head_dim must be static and even, got 7
func.func @g(%x: tensor<4x2x7xf32>, %p: tensor<4xi64>) -> tensor<4x2x7xf32> {
  %0 = "max.rope"(%x, %p) : (tensor<4x2x7xf32>, tensor<4xi64>) -> tensor<4x2x7xf32>
  func.return %0 : tensor<4x2x7xf32>
}

// -----

// CHECK: errors-llm-ops.mlir:[[@LINE+2]]:8: error: 'max.rope' has 5 positions for a sequence of 4
func.func @g(%x: tensor<4x2x8xf32>, %p: tensor<5xi64>) -> tensor<4x2x8xf32> {
  %0 = "max.rope"(%x, %p) : (tensor<4x2x8xf32>, tensor<5xi64>) -> tensor<4x2x8xf32>
  func.return %0 : tensor<4x2x8xf32>
}

// -----

// CHECK: errors-llm-ops.mlir:[[@LINE+2]]:8: error: 'max.rope' positions must be a 1-D i32 or i64 tensor, got [4] f32
func.func @g(%x: tensor<4x2x8xf32>, %p: tensor<4xf32>) -> tensor<4x2x8xf32> {
  %0 = "max.rope"(%x, %p) : (tensor<4x2x8xf32>, tensor<4xf32>) -> tensor<4x2x8xf32>
  func.return %0 : tensor<4x2x8xf32>
}
