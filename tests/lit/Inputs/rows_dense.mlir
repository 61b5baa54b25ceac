// A dense layer on [B, T, K] rows with an elementwise epilogue: bias, GELU, then a residual
// of the result's full shape. Runs as one 2-D kernel over the B*T rows (see flatten.rs).
func.func @dense(%x: tensor<?x?x37xf32> {max.name = "x"}, %r: tensor<?x?x48xf32> {max.name = "r"}) -> tensor<?x?x48xf32> {
  %w = "max.weight"() {name = "w"} : () -> tensor<37x48xf32>
  %b = "max.weight"() {name = "b"} : () -> tensor<48xf32>
  %0 = "max.matmul"(%x, %w) : (tensor<?x?x37xf32>, tensor<37x48xf32>) -> tensor<?x?x48xf32>
  %1 = "max.add"(%0, %b) : (tensor<?x?x48xf32>, tensor<48xf32>) -> tensor<?x?x48xf32>
  %2 = "max.gelu"(%1) : (tensor<?x?x48xf32>) -> tensor<?x?x48xf32>
  %3 = "max.add"(%2, %r) : (tensor<?x?x48xf32>, tensor<?x?x48xf32>) -> tensor<?x?x48xf32>
  func.return %3 : tensor<?x?x48xf32>
}
