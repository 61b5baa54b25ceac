// The same weight with a row-wise epilogue: the kernel cannot be viewed as 2-D, so it runs
// the packed matmul one batch at a time.
func.func @scores(%x: tensor<?x?x37xf32> {max.name = "x"}) -> tensor<?x?x48xf32> {
  %w = "max.weight"() {name = "w"} : () -> tensor<37x48xf32>
  %0 = "max.matmul"(%x, %w) : (tensor<?x?x37xf32>, tensor<37x48xf32>) -> tensor<?x?x48xf32>
  %1 = "max.softmax"(%0) {axis = -1 : i64} : (tensor<?x?x48xf32>) -> tensor<?x?x48xf32>
  func.return %1 : tensor<?x?x48xf32>
}
