// Elementwise consumers of a matmul fuse into its kernel's epilogue on the GPU: one
// dispatch, the bias read with its row broadcast and the residual at the element, for the
// wgmma (sm_90), mma.sync (sm_80) and f32 SIMT kernels.
// REQUIRES: libdevice
// RUN: maxc compile %s --target cuda:sm_90 -o %t.90.maxa
// RUN: max inspect %t.90.maxa | FileCheck %s --check-prefix=ONE
// RUN: maxc compile %s --target cuda:sm_80 -o %t.80.maxa
// RUN: max inspect %t.80.maxa | FileCheck %s --check-prefix=ONE
// ONE: max_kernel_g_k0_matmul_add_tanh_mul  bindings=[0, 1, 2, 3, 4]
// ONE-NOT: max_kernel_g_k1
// GPU artifacts are deterministic too (same input and flags, same bytes).
// RUN: maxc compile %s --target cuda:sm_90 -o %t.90b.maxa
// RUN: cmp %t.90.maxa %t.90b.maxa
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=PTX
// PTX: // ----- PTX module 0
// PTX: .visible .entry mm(
// PTX: wgmma.mma_async
// PTX-NOT: // ----- PTX module 1
func.func @g(%x: tensor<?x256xf16>, %w: tensor<256x384xf16>, %b: tensor<384xf16>, %r: tensor<?x384xf16>) -> tensor<?x384xf16> {
  %m = "max.matmul"(%x, %w) : (tensor<?x256xf16>, tensor<256x384xf16>) -> tensor<?x384xf16>
  %a = "max.add"(%m, %b) : (tensor<?x384xf16>, tensor<384xf16>) -> tensor<?x384xf16>
  %t = "max.tanh"(%a) : (tensor<?x384xf16>) -> tensor<?x384xf16>
  %o = "max.mul"(%t, %r) : (tensor<?x384xf16>, tensor<?x384xf16>) -> tensor<?x384xf16>
  func.return %o : tensor<?x384xf16>
}
