// On a GPU attention over the KV cache takes a cast of its result as its consumer: the
// kernel stores its output converted (through attention's own dtype first), and a decode
// step loses a launch a layer (the cast before the output projection). The CPU's cache
// kernels take no consumers. A cast read through a reshape stays apart.
// RUN: maxc compile %s -o %t.maxa
// RUN: maxc inspect %t.maxa | FileCheck %s
// RUN: maxc compile %s --target cuda:sm_90 -o %t.gpu.maxa
// RUN: maxc inspect %t.gpu.maxa | FileCheck %s --check-prefix=GPU
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=PTX

// CHECK: dispatches 4
// CHECK: max_kernel_g_k0_cached_attention  bindings=[0, 3, 4, 1, 2, 6]
// CHECK: max_kernel_g_k1_cast  bindings=[6, 7]
// CHECK: max_kernel_g_k0_cached_attention  bindings=[5, 3, 4, 1, 2, 8]
// CHECK: max_kernel_g_k2_cast  bindings=[9, 10]

// GPU: dispatches 3
// GPU: max_kernel_g_k0_cached_attention_cast  bindings=[0, 3, 4, 1, 2, 6]
// GPU: max_kernel_g_k1_cached_attention  bindings=[5, 3, 4, 1, 2, 7]
// GPU: max_kernel_g_k2_cast  bindings=[8, 9]

// The bf16 output is stored as such: converted from f32 by the attention kernel.
// PTX: .entry attention(
// PTX: cvt.rn.bf16.f32
func.func @g(%q: tensor<?x8x128xf32> {max.name = "q"}, %st: tensor<?xi32> {max.name = "start"}, %sl: tensor<?xi32> {max.name = "slot"},
             %kc: tensor<1x?x?x2x128xf16> {max.name = "kc", max.dims = ["", "B", "T", "", ""]},
             %vc: tensor<1x?x?x2x128xf16> {max.name = "vc", max.dims = ["", "B", "T", "", ""]},
             %q2: tensor<?x8x128xf32> {max.name = "q2"}) -> (tensor<?x8x128xbf16>, tensor<?x1024xf16>) {
  %a = "max.cached_attention"(%q, %kc, %vc, %st, %sl) {layer = 0 : i64} : (tensor<?x8x128xf32>, tensor<1x?x?x2x128xf16>, tensor<1x?x?x2x128xf16>, tensor<?xi32>, tensor<?xi32>) -> tensor<?x8x128xf32>
  %h = "max.cast"(%a) : (tensor<?x8x128xf32>) -> tensor<?x8x128xbf16>
  %a2 = "max.cached_attention"(%q2, %kc, %vc, %st, %sl) {layer = 0 : i64} : (tensor<?x8x128xf32>, tensor<1x?x?x2x128xf16>, tensor<1x?x?x2x128xf16>, tensor<?xi32>, tensor<?xi32>) -> tensor<?x8x128xf32>
  %r = "max.reshape"(%a2) {shape = array<i64: -1, 1024>} : (tensor<?x8x128xf32>) -> tensor<?x1024xf32>
  %h2 = "max.cast"(%r) : (tensor<?x1024xf32>) -> tensor<?x1024xf16>
  func.return %h, %h2 : tensor<?x8x128xbf16>, tensor<?x1024xf16>
}
