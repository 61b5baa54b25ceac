// On a GPU a consumer joins the region of the input only it reads, even when its other
// input comes from a region that is still open: that value is read by others too, so it is
// in memory whatever this consumer does (a transformer's `x + matmul(norm(x))` residual
// becomes the matmul's epilogue), and a row reduction takes a cast as its only consumer.
// The CPU keeps such an add out of the matmul: there the row ops after it would join too
// and split the matmul's rows by their partition.
// RUN: maxc compile %s -o %t.maxa
// RUN: maxc inspect %t.maxa | FileCheck %s
// RUN: maxc compile %s --target cuda:sm_90 -o %t.gpu.maxa
// RUN: maxc inspect %t.gpu.maxa | FileCheck %s --check-prefix=GPU

// CHECK: dispatches 4
// CHECK: max_kernel_g_k0_tanh  bindings=[0, 4]
// CHECK: max_kernel_g_k1_sigmoid  bindings=[4, 5]
// CHECK: max_kernel_g_k2_matmul  bindings=[5, 1, 6]
// CHECK: max_kernel_g_k3_add_rms_norm_cast_mul  bindings=[4, 6, 2, 3, 7]

// GPU: dispatches 5
// GPU: max_kernel_g_k0_tanh  bindings=[0, 4]
// GPU: max_kernel_g_k1_sigmoid  bindings=[4, 5]
// GPU: max_kernel_g_k2_matmul_add  bindings=[5, 1, 4, 6]
// GPU: max_kernel_g_k3_rms_norm_cast  bindings=[6, 2, 7]
// GPU: max_kernel_g_k4_mul  bindings=[7, 3, 8]
func.func @g(%x: tensor<?x64xf32> {max.name = "x"}, %w: tensor<64x64xf32> {max.name = "w"}, %s: tensor<64xf32> {max.name = "s"}, %e: tensor<64xf16> {max.name = "e"}) -> tensor<?x64xf16> {
  %h = "max.tanh"(%x) : (tensor<?x64xf32>) -> tensor<?x64xf32>
  %a = "max.sigmoid"(%h) : (tensor<?x64xf32>) -> tensor<?x64xf32>
  %m = "max.matmul"(%a, %w) : (tensor<?x64xf32>, tensor<64x64xf32>) -> tensor<?x64xf32>
  %r = "max.add"(%h, %m) : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  %n = "max.rms_norm"(%r, %s) {epsilon = 1.0e-5 : f64} : (tensor<?x64xf32>, tensor<64xf32>) -> tensor<?x64xf32>
  %c = "max.cast"(%n) : (tensor<?x64xf32>) -> tensor<?x64xf16>
  %y = "max.mul"(%c, %e) : (tensor<?x64xf16>, tensor<64xf16>) -> tensor<?x64xf16>
  func.return %y : tensor<?x64xf16>
}
