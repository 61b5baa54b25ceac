// y = gpu_vector_add(x, relu(x)) * 2: the custom kernel between compiled ones.
func.func @vadd(%x: tensor<?x8xf32> {max.name = "x"}, %z: tensor<?x8xf32> {max.name = "z"}) -> tensor<?x8xf32> {
  %r = "max.relu"(%z) : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %s = "max.custom"(%x, %r) {name = "gpu_vector_add"} : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<?x8xf32>
  %two = "max.constant"() {value = dense<2.0> : tensor<f32>} : () -> tensor<f32>
  %y = "max.mul"(%s, %two) : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  func.return %y : tensor<?x8xf32>
}
