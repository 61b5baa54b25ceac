// Uses custom_relu on f32, for the error tests.
func.func @g(%x: tensor<?x4xf32> {max.name = "x"}) -> tensor<?x4xf32> {
  %r = "max.custom"(%x) {name = "custom_relu"} : (tensor<?x4xf32>) -> tensor<?x4xf32>
  func.return %r : tensor<?x4xf32>
}
