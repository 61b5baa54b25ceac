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

// CHECK: errors-llm-ops.mlir:[[@LINE+2]]:8: error: 'max.rope' positions must be an i32 or i64 tensor [seq] or [batch, seq], got [4] f32
func.func @g(%x: tensor<4x2x8xf32>, %p: tensor<4xf32>) -> tensor<4x2x8xf32> {
  %0 = "max.rope"(%x, %p) : (tensor<4x2x8xf32>, tensor<4xf32>) -> tensor<4x2x8xf32>
  func.return %0 : tensor<4x2x8xf32>
}

// -----

// CHECK: errors-llm-ops.mlir:[[@LINE+2]]:8: error: 'max.qmatmul' weight rows hold 64 weights (40 bytes of q4_1) but x has 32 columns
func.func @g(%x: tensor<2x32xf32>, %w: tensor<8x40xi8>) -> tensor<2x8xf32> {
  %0 = "max.qmatmul"(%x, %w) {format = "q4_1"} : (tensor<2x32xf32>, tensor<8x40xi8>) -> tensor<2x8xf32>
  func.return %0 : tensor<2x8xf32>
}

// -----

// CHECK: errors-llm-ops.mlir:[[@LINE+2]]:8: error: 'max.qmatmul' q8_0 rows must be a static multiple of 34 bytes, got 40
func.func @g(%x: tensor<2x32xf32>, %w: tensor<8x40xi8>) -> tensor<2x8xf32> {
  %0 = "max.qmatmul"(%x, %w) {format = "q8_0"} : (tensor<2x32xf32>, tensor<8x40xi8>) -> tensor<2x8xf32>
  func.return %0 : tensor<2x8xf32>
}

// -----

// CHECK: errors-llm-ops.mlir:[[@LINE+2]]:8: error: 'max.qmatmul' format must be "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k" or "q6_k", got "q5_k"
func.func @g(%x: tensor<2x32xf32>, %w: tensor<8x40xi8>) -> tensor<2x8xf32> {
  %0 = "max.qmatmul"(%x, %w) {format = "q5_k"} : (tensor<2x32xf32>, tensor<8x40xi8>) -> tensor<2x8xf32>
  func.return %0 : tensor<2x8xf32>
}

// -----

// CHECK: errors-llm-ops.mlir:[[@LINE+2]]:8: error: 'max.attention' query heads (9) must be a static multiple of key/value heads (2)
func.func @g(%q: tensor<1x4x9x8xf32>, %k: tensor<1x4x2x8xf32>) -> tensor<1x4x9x8xf32> {
  %0 = "max.attention"(%q, %k, %k) : (tensor<1x4x9x8xf32>, tensor<1x4x2x8xf32>, tensor<1x4x2x8xf32>) -> tensor<1x4x9x8xf32>
  func.return %0 : tensor<1x4x9x8xf32>
}

// -----

// CHECK: errors-llm-ops.mlir:[[@LINE+2]]:8: error: 'max.attention' query and key head dims differ: 8 vs 16
func.func @g(%q: tensor<1x4x2x8xf32>, %k: tensor<1x4x2x16xf32>) -> tensor<1x4x2x16xf32> {
  %0 = "max.attention"(%q, %k, %k) : (tensor<1x4x2x8xf32>, tensor<1x4x2x16xf32>, tensor<1x4x2x16xf32>) -> tensor<1x4x2x16xf32>
  func.return %0 : tensor<1x4x2x16xf32>
}
