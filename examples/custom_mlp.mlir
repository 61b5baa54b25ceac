// The seed graph: y = softmax(relu(x @ W1) @ W2) over the last axis, batch dynamic.
// Weights come from seeded initializers so the example needs no data files; pass
// `--weights FILE.safetensors` with tensors "w1" and "w2" to use real ones.
func.func @custom_mlp(%x: tensor<?x768xf32> {max.name = "x", max.dims = ["batch", ""]}) -> tensor<?x768xf32> {
  %w1 = "max.weight"() {name = "w1", init = "normal", scale = 0.036 : f64, seed = 1 : i64} : () -> tensor<768x3072xf32>
  %w2 = "max.weight"() {name = "w2", init = "normal", scale = 0.018 : f64, seed = 2 : i64} : () -> tensor<3072x768xf32>
  %h = "max.matmul"(%x, %w1) : (tensor<?x768xf32>, tensor<768x3072xf32>) -> tensor<?x3072xf32>
  %r = "max.relu"(%h) : (tensor<?x3072xf32>) -> tensor<?x3072xf32>
  %o = "max.matmul"(%r, %w2) : (tensor<?x3072xf32>, tensor<3072x768xf32>) -> tensor<?x768xf32>
  %y = "max.softmax"(%o) {axis = -1 : i64} : (tensor<?x768xf32>) -> tensor<?x768xf32>
  func.return %y : tensor<?x768xf32>
}
