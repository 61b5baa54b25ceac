// A split along a non-leading axis moves into the elementwise region that alone reads its
// results: its parts are slices of its operand read in place, so a merged gate/up
// projection's `silu(gate) * up` is one kernel (one launch on a GPU, where the split was a
// kernel of its own with a launch per part). A split whose part is read elsewhere too (here
// a graph output), or one along the rows, stays a kernel of its own. Outputs match the
// unfused graph's on the CPU.
// RUN: maxc compile %s -o %t.maxa
// RUN: maxc inspect %t.maxa | FileCheck %s
// RUN: maxc compile %s --target cuda:sm_90 -o %t.gpu.maxa
// RUN: maxc inspect %t.gpu.maxa | FileCheck %s --check-prefix=GPU
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg | FileCheck %s --check-prefix=LINALG
// RUN: maxc compile %s --no-fusion -o %t.unfused.maxa
// RUN: %python %inputs/npy.py random %t.x.npy 37,64 float32 3
// RUN: %python %inputs/npy.py random %t.z.npy 4,8 float32 4
// RUN: max run %t.maxa --input x=%t.x.npy --input z=%t.z.npy --output %t.y0.npy --output %t.y1.npy --output %t.y2.npy --output %t.y3.npy
// RUN: max run %t.unfused.maxa --input x=%t.x.npy --input z=%t.z.npy --output %t.u0.npy --output %t.u1.npy --output %t.u2.npy --output %t.u3.npy
// RUN: %python %inputs/npy.py close %t.y0.npy %t.u0.npy
// RUN: %python %inputs/npy.py close %t.y1.npy %t.u1.npy
// RUN: %python %inputs/npy.py close %t.y2.npy %t.u2.npy
// RUN: %python %inputs/npy.py close %t.y3.npy %t.u3.npy

// CHECK: dispatches 5
// CHECK: max_kernel_g_k0_split_silu_mul  bindings=[0, 2]  workgroups<=x.d0
// CHECK: max_kernel_g_k1_split  bindings=[0, 3, 4]
// CHECK: max_kernel_g_k2_tanh  bindings=[3, 5]
// CHECK: max_kernel_g_k3_split  bindings=[1, 6, 7]
// CHECK: max_kernel_g_k4_sub  bindings=[6, 7, 8]

// GPU: dispatches 5
// GPU: max_kernel_g_k0_split_silu_mul  bindings=[0, 2]
// GPU: max_kernel_g_k1_split  bindings=[0, 3, 4]

// The absorbed split's parts are slices of the operand feeding the elementwise ops, with
// no copy between.
// LINALG-LABEL: func.func @g_k0_split_silu_mul(
// LINALG-NOT: linalg.copy
// LINALG: tensor.extract_slice
// LINALG: tensor.extract_slice
// LINALG-NOT: linalg.copy
// LINALG: linalg.generic
// LINALG-LABEL: func.func @g_k1_split(
// LINALG: linalg.copy
func.func @g(%x: tensor<?x64xf32> {max.name = "x"}, %z: tensor<4x8xf32> {max.name = "z"}) -> (tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>, tensor<2x8xf32>) {
  %a, %b = "max.split"(%x) {axis = 1 : i64, num_splits = 2 : i64} : (tensor<?x64xf32>) -> (tensor<?x32xf32>, tensor<?x32xf32>)
  %s = "max.silu"(%a) : (tensor<?x32xf32>) -> tensor<?x32xf32>
  %y = "max.mul"(%s, %b) : (tensor<?x32xf32>, tensor<?x32xf32>) -> tensor<?x32xf32>
  %c, %d = "max.split"(%x) {axis = -1 : i64, sizes = array<i64: 32, 32>} : (tensor<?x64xf32>) -> (tensor<?x32xf32>, tensor<?x32xf32>)
  %t = "max.tanh"(%c) : (tensor<?x32xf32>) -> tensor<?x32xf32>
  %e, %f = "max.split"(%z) {axis = 0 : i64, num_splits = 2 : i64} : (tensor<4x8xf32>) -> (tensor<2x8xf32>, tensor<2x8xf32>)
  %g = "max.sub"(%e, %f) : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  func.return %y, %t, %c, %g : tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>, tensor<2x8xf32>
}
