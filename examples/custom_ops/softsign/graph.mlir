// y = softsign(x @ w) + 1: an MLIR-library custom op after a matmul, with a fused consumer.
func.func @g(%x: tensor<?x4xf32> {max.name = "x"}) -> tensor<?x4xf32> {
  %w = "max.constant"() {value = dense<[[1.0, 0.0, 0.0, 2.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, -3.0]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32>
  %h = "max.matmul"(%x, %w) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32>
  %s = "max.custom"(%h) {name = "softsign"} : (tensor<?x4xf32>) -> tensor<?x4xf32>
  %one = "max.constant"() {value = dense<1.0> : tensor<f32>} : () -> tensor<f32>
  %y = "max.add"(%s, %one) : (tensor<?x4xf32>, tensor<f32>) -> tensor<?x4xf32>
  func.return %y : tensor<?x4xf32>
}
