// y = gelu(x @ w + b): the graph embedded by the example binary.
func.func @gelu_mlp(%x: tensor<?x4xf32> {max.name = "x", max.dims = ["batch", ""]}) -> tensor<?x3xf32> {
  %w = "max.constant"() {value = dense<[[0.5, -1.0, 0.25], [1.5, 0.0, -0.5], [-2.0, 1.0, 0.75], [0.1, 0.2, 0.3]]> : tensor<4x3xf32>} : () -> tensor<4x3xf32>
  %b = "max.constant"() {value = dense<[0.1, -0.2, 0.3]> : tensor<3xf32>} : () -> tensor<3xf32>
  %h = "max.matmul"(%x, %w) : (tensor<?x4xf32>, tensor<4x3xf32>) -> tensor<?x3xf32>
  %a = "max.add"(%h, %b) : (tensor<?x3xf32>, tensor<3xf32>) -> tensor<?x3xf32>
  %y = "max.gelu"(%a) : (tensor<?x3xf32>) -> tensor<?x3xf32>
  func.return %y : tensor<?x3xf32>
}
