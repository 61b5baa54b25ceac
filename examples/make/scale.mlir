// y = x * s, with s from scale.safetensors.
func.func @scale(%x: tensor<?x4xf32> {max.name = "x"}) -> tensor<?x4xf32> {
  %s = "max.weight"() {name = "s"} : () -> tensor<4xf32>
  %y = "max.mul"(%x, %s) : (tensor<?x4xf32>, tensor<4xf32>) -> tensor<?x4xf32>
  func.return %y : tensor<?x4xf32>
}
