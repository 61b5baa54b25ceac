// Dispatch-region formation: a root op and the chain of elementwise/softmax consumers of
// its result become one kernel.
// RUN: maxc compile %s -o %t.maxa
// RUN: maxc inspect %t.maxa | FileCheck %s
// RUN: maxc compile %s --no-fusion -o %t.unfused.maxa
// RUN: maxc inspect %t.unfused.maxa | FileCheck %s --check-prefix=UNFUSED
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg,fuse-linalg | FileCheck %s --check-prefix=LINALG

// CHECK: buffers 9  dispatches 6
// matmul + bias + gelu: one kernel; the bias is read whole by every workgroup.
// CHECK: max_kernel_g_k0_matmul_add_gelu  bindings=[0, 1, 2, 3]  workgroups<=n
// An elementwise chain is one kernel; %x is read by two ops of it.
// CHECK: max_kernel_g_k1_sigmoid_mul_exp  bindings=[0, 4]  workgroups<=n
// %s feeds two consumers, so it is materialized and each consumer starts a region.
// CHECK: max_kernel_g_k2_tanh  bindings=[0, 5]
// CHECK: max_kernel_g_k3_neg  bindings=[5, 6]
// CHECK: max_kernel_g_k4_abs  bindings=[5, 7]
// A reduction is a root too; its consumer keeps the reduced shape, so it joins.
// CHECK: max_kernel_g_k5_reduce_sum_sqrt  bindings=[0, 8]
// UNFUSED: buffers 14  dispatches 11

// After fuse-linalg the elementwise chain is a single linalg.generic.
// LINALG-LABEL: func.func @g_k1_sigmoid_mul_exp(
// LINALG: linalg.generic
// LINALG: math.floor
// LINALG: arith.mulf
// LINALG: math.floor
// LINALG-NOT: linalg.generic
// LINALG: return
func.func @g(%x: tensor<?x8xf32> {max.name = "x", max.dims = ["n", ""]}, %w: tensor<8x8xf32>, %b: tensor<8xf32>)
    -> (tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?xf32>) {
  %0 = "max.matmul"(%x, %w) : (tensor<?x8xf32>, tensor<8x8xf32>) -> tensor<?x8xf32>
  %1 = "max.add"(%0, %b) : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
  %2 = "max.gelu"(%1) : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %3 = "max.sigmoid"(%x) : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %4 = "max.mul"(%x, %3) : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<?x8xf32>
  %5 = "max.exp"(%4) : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %s = "max.tanh"(%x) : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %6 = "max.neg"(%s) : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %7 = "max.abs"(%s) : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %8 = "max.reduce_sum"(%x) {axes = array<i64: 1>} : (tensor<?x8xf32>) -> tensor<?xf32>
  %9 = "max.sqrt"(%8) : (tensor<?xf32>) -> tensor<?xf32>
  func.return %2, %5, %6, %7, %9 : tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?xf32>
}
