// y = tanh(concat_cols(x, z)): the result's column count is 3 + b, where b is dynamic.
func.func @cat(%x: tensor<?x3xf32> {max.name = "x"}, %z: tensor<?x?xf32> {max.name = "z"}) -> tensor<?x?xf32> {
  %c = "max.custom"(%x, %z) {name = "concat_cols"} : (tensor<?x3xf32>, tensor<?x?xf32>) -> tensor<?x?xf32>
  %y = "max.tanh"(%c) : (tensor<?x?xf32>) -> tensor<?x?xf32>
  func.return %y : tensor<?x?xf32>
}
