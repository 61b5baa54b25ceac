// A decode-shaped matmul (Llama-3.1-8B's MLP down projection): m rows of 14336 against
// 14336 x 4096 bf16 weights (external; generated at load by the check).
func.func @gemv(%x: tensor<?x14336xbf16> {max.name = "x", max.dims = ["m", ""]}) -> tensor<?x4096xbf16> {
  %w = "max.weight"() {name = "w_down"} : () -> tensor<14336x4096xbf16>
  %y = "max.matmul"(%x, %w) : (tensor<?x14336xbf16>, tensor<14336x4096xbf16>) -> tensor<?x4096xbf16>
  func.return %y : tensor<?x4096xbf16>
}
