// C = A @ B at 4096^3 in f32 (f32 accumulation): the GPU matmul benchmark's graph.
func.func @matmul(%a: tensor<4096x4096xf32> {max.name = "a"}, %b: tensor<4096x4096xf32> {max.name = "b"}) -> tensor<4096x4096xf32> {
  %c = "max.matmul"(%a, %b) : (tensor<4096x4096xf32>, tensor<4096x4096xf32>) -> tensor<4096x4096xf32>
  func.return %c : tensor<4096x4096xf32>
}
