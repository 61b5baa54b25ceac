// Verifier errors of the KV-cache and dequantize ops, with their locations.
// RUN: not maxc opt %s --pass-pipeline=verify --split-input-file 2>&1 | FileCheck %s

// CHECK: errors-kv-cache.mlir:[[@LINE+2]]:8: error: 'max.cache_write' layer 4 is out of range for a cache of 2 layers
func.func @g(%c: tensor<2x?x?x2x8xf16>, %n: tensor<?x2x8xf32>, %p: tensor<?xi32>, %s: tensor<?xi32>) -> tensor<2x?x?x2x8xf16> {
  %0 = "max.cache_write"(%c, %n, %p, %s) {layer = 4 : i64} : (tensor<2x?x?x2x8xf16>, tensor<?x2x8xf32>, tensor<?xi32>, tensor<?xi32>) -> tensor<2x?x?x2x8xf16>
  func.return %0 : tensor<2x?x?x2x8xf16>
}

// -----

// CHECK: errors-kv-cache.mlir:[[@LINE+2]]:8: error: 'max.cache_write' head counts of cache and new entries differ: 2 vs 3
func.func @g(%c: tensor<2x?x?x2x8xf16>, %n: tensor<?x3x8xf32>, %p: tensor<?xi32>, %s: tensor<?xi32>) -> tensor<2x?x?x2x8xf16> {
  %0 = "max.cache_write"(%c, %n, %p, %s) {layer = 0 : i64} : (tensor<2x?x?x2x8xf16>, tensor<?x3x8xf32>, tensor<?xi32>, tensor<?xi32>) -> tensor<2x?x?x2x8xf16>
  func.return %0 : tensor<2x?x?x2x8xf16>
}

// -----

// CHECK: errors-kv-cache.mlir:[[@LINE+2]]:8: error: 'max.cached_attention' slots must be a 1-D i32 tensor [batch], got [arg3.d0] i64
func.func @g(%q: tensor<?x4x8xf32>, %c: tensor<2x?x?x2x8xf16>, %p: tensor<?xi32>, %s: tensor<?xi64>) -> tensor<?x4x8xf32> {
  %0 = "max.cached_attention"(%q, %c, %c, %p, %s) {layer = 1 : i64} : (tensor<?x4x8xf32>, tensor<2x?x?x2x8xf16>, tensor<2x?x?x2x8xf16>, tensor<?xi32>, tensor<?xi64>) -> tensor<?x4x8xf32>
  func.return %0 : tensor<?x4x8xf32>
}

// -----

// CHECK: errors-kv-cache.mlir:[[@LINE+2]]:8: error: 'max.cached_attention' needs static heads, query heads a multiple of kv heads and a head dim that is a multiple of 8
func.func @g(%q: tensor<?x3x8xf32>, %c: tensor<2x?x?x2x8xf16>, %p: tensor<?xi32>, %s: tensor<?xi32>) -> tensor<?x3x8xf32> {
  %0 = "max.cached_attention"(%q, %c, %c, %p, %s) {layer = 1 : i64} : (tensor<?x3x8xf32>, tensor<2x?x?x2x8xf16>, tensor<2x?x?x2x8xf16>, tensor<?xi32>, tensor<?xi32>) -> tensor<?x3x8xf32>
  func.return %0 : tensor<?x3x8xf32>
}

// -----

// CHECK: errors-kv-cache.mlir:[[@LINE+2]]:8: error: 'max.dequantize' q8_0 takes i8 blocks with a static last dim that is a multiple of 34 bytes
func.func @g(%w: tensor<4x30xi8>) -> tensor<4x32xf32> {
  %0 = "max.dequantize"(%w) {format = "q8_0"} : (tensor<4x30xi8>) -> tensor<4x32xf32>
  func.return %0 : tensor<4x32xf32>
}
