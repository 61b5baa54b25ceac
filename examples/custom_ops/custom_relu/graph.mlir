// y = custom_relu(x) * 2: the native kernel between two compiled ones.
func.func @relu2(%x: tensor<?x8xf32> {max.name = "x"}) -> tensor<?x8xf32> {
  %n = "max.neg"(%x) : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %r = "max.custom"(%n) {name = "custom_relu"} : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %two = "max.constant"() {value = dense<2.0> : tensor<f32>} : () -> tensor<f32>
  %y = "max.mul"(%r, %two) : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  func.return %y : tensor<?x8xf32>
}
