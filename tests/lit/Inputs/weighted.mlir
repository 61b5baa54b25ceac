// A graph with one weight, for weights-errors.test.
func.func @g(%x: tensor<?x4xf32>) -> tensor<?x3xf32> {
  %w = "max.weight"() {name = "w"} : () -> tensor<4x3xf32>
  %0 = "max.matmul"(%x, %w) : (tensor<?x4xf32>, tensor<4x3xf32>) -> tensor<?x3xf32>
  func.return %0 : tensor<?x3xf32>
}
