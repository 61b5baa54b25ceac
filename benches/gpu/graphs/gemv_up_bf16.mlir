// A decode-shaped matmul (Llama-3.1-8B's MLP up projection): m rows (1 at batch 1) of 4096
// against 4096 x 14336 bf16 weights. Memory-bound: its roofline is the weights' bytes over
// the device's copy bandwidth. Compiled with --external-weights; the check generates the
// weights at load on the GPU machine.
func.func @gemv(%x: tensor<?x4096xbf16> {max.name = "x", max.dims = ["m", ""]}) -> tensor<?x14336xbf16> {
  %w = "max.weight"() {name = "w_up"} : () -> tensor<4096x14336xbf16>
  %y = "max.matmul"(%x, %w) : (tensor<?x4096xbf16>, tensor<4096x14336xbf16>) -> tensor<?x14336xbf16>
  func.return %y : tensor<?x14336xbf16>
}
