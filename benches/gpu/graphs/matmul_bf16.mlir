// C = A @ B at 4096^3 in bf16 (f32 accumulation): the GPU matmul benchmark's graph.
func.func @matmul(%a: tensor<4096x4096xbf16> {max.name = "a"}, %b: tensor<4096x4096xbf16> {max.name = "b"}) -> tensor<4096x4096xbf16> {
  %c = "max.matmul"(%a, %b) : (tensor<4096x4096xbf16>, tensor<4096x4096xbf16>) -> tensor<4096x4096xbf16>
  func.return %c : tensor<4096x4096xbf16>
}
