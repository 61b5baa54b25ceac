// A decode-shaped quantized matmul (Llama-3.1-8B's MLP up projection in Q4_K, as in a
// Q4_K_M file): m rows of 4096 f32 activations, rounded to 8 bits as llama.cpp's CPU
// backend rounds them, against 14336 x 4096 weights in GGUF Q4_K blocks (144 bytes per 256
// weights, 33 MB). Memory-bound at a few rows: its roofline is the weights' bytes over the
// device's copy bandwidth. Compiled with --external-weights; the check generates the
// weight bytes at load on the GPU machine (their values do not change the timing).
func.func @gemv(%x: tensor<?x4096xf32> {max.name = "x", max.dims = ["m", ""]}) -> tensor<?x14336xf32> {
  %w = "max.weight"() {name = "w_up"} : () -> tensor<14336x2304xi8>
  %y = "max.qmatmul"(%x, %w) {format = "q4_k", quantize_input = true} : (tensor<?x4096xf32>, tensor<14336x2304xi8>) -> tensor<?x14336xf32>
  func.return %y : tensor<?x14336xf32>
}
