// Shape inference names dynamic dims by symbol and unifies them across ops.
// RUN: maxc opt %s --pass-pipeline=verify | FileCheck %s

// CHECK-LABEL: func.func @mlp(%v0: tensor<?x768xf32>)
// CHECK: "max.matmul"(%v0, %v{{[0-9]+}}) : (tensor<?x768xf32>, tensor<768x64xf32>) -> (tensor<?x64xf32>)
// CHECK: "max.reshape"({{.*}}) {shape = array<i64: -1, 4, 16>} : (tensor<?x64xf32>) -> (tensor<?x4x16xf32>)
// CHECK: "max.reduce_mean"({{.*}}) {axes = array<i64: -1>, keepdims = true} : (tensor<?x4x16xf32>) -> (tensor<?x4x1xf32>)
// CHECK: "max.concat"({{.*}}) {axis = 1 : i64} : (tensor<?x4x16xf32>, tensor<?x4x16xf32>) -> (tensor<?x8x16xf32>)
// CHECK: func.return {{.*}} : tensor<?x8x16xf32>, tensor<?x4x1xf32>
func.func @mlp(%x: tensor<?x768xf32> {max.name = "x", max.dims = ["batch", ""]}) -> (tensor<?x8x16xf32>, tensor<?x4x1xf32>) {
  %w = "max.weight"() {name = "w"} : () -> tensor<768x64xf32>
  %h = "max.matmul"(%x, %w) : (tensor<?x768xf32>, tensor<768x64xf32>) -> tensor<?x64xf32>
  %r = "max.reshape"(%h) {shape = array<i64: -1, 4, 16>} : (tensor<?x64xf32>) -> tensor<?x4x16xf32>
  %m = "max.reduce_mean"(%r) {axes = array<i64: -1>, keepdims = true} : (tensor<?x4x16xf32>) -> tensor<?x4x1xf32>
  %c = "max.concat"(%r, %r) {axis = 1 : i64} : (tensor<?x4x16xf32>, tensor<?x4x16xf32>) -> tensor<?x8x16xf32>
  func.return %c, %m : tensor<?x8x16xf32>, tensor<?x4x1xf32>
}
