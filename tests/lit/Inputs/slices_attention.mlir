// Attention written out as graph ops, plus a rank-3 batched matmul of width known only at
// run time: the inputs of batch-slices.test.
func.func @attn(%q: tensor<?x3x?x24xf32> {max.name = "q"}, %kt: tensor<?x3x24x?xf32> {max.name = "kt"}, %v: tensor<?x3x?x24xf32> {max.name = "v"},
                %bias: tensor<?x1x1x?xf32> {max.name = "bias"}, %hbias: tensor<3x1x?xf32> {max.name = "hbias"},
                %x: tensor<?x?x20xf32> {max.name = "x"}, %y: tensor<?x20x?xf32> {max.name = "y"})
    -> (tensor<?x3x?x?xf32>, tensor<?x3x?x24xf32>, tensor<?x?x?xf32>) {
  %s = "max.matmul"(%q, %kt) : (tensor<?x3x?x24xf32>, tensor<?x3x24x?xf32>) -> tensor<?x3x?x?xf32>
  %c = "max.constant"() {value = dense<0.2> : tensor<1xf32>} : () -> tensor<1xf32>
  %m = "max.mul"(%s, %c) : (tensor<?x3x?x?xf32>, tensor<1xf32>) -> tensor<?x3x?x?xf32>
  %a = "max.add"(%m, %bias) : (tensor<?x3x?x?xf32>, tensor<?x1x1x?xf32>) -> tensor<?x3x?x?xf32>
  %h = "max.add"(%a, %hbias) : (tensor<?x3x?x?xf32>, tensor<3x1x?xf32>) -> tensor<?x3x?x?xf32>
  %p = "max.softmax"(%h) {axis = 3 : i64} : (tensor<?x3x?x?xf32>) -> tensor<?x3x?x?xf32>
  %o = "max.matmul"(%p, %v) : (tensor<?x3x?x?xf32>, tensor<?x3x?x24xf32>) -> tensor<?x3x?x24xf32>
  %r = "max.matmul"(%x, %y) : (tensor<?x?x20xf32>, tensor<?x20x?xf32>) -> tensor<?x?x?xf32>
  func.return %p, %o, %r : tensor<?x3x?x?xf32>, tensor<?x3x?x24xf32>, tensor<?x?x?xf32>
}
