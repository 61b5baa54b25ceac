// A decode-shaped quantized matmul (Llama-3.1-8B's MLP down projection in Q4_K): m rows of
// 14336 f32 activations, rounded to 8 bits, against 4096 x 14336 weights in GGUF Q4_K
// blocks (33 MB). As gemv_up_q4k.mlir, the other way round: few, long weight rows.
func.func @gemv(%x: tensor<?x14336xf32> {max.name = "x", max.dims = ["m", ""]}) -> tensor<?x4096xf32> {
  %w = "max.weight"() {name = "w_down"} : () -> tensor<4096x8064xi8>
  %y = "max.qmatmul"(%x, %w) {format = "q4_k", quantize_input = true} : (tensor<?x14336xf32>, tensor<4096x8064xi8>) -> tensor<?x4096xf32>
  func.return %y : tensor<?x4096xf32>
}
