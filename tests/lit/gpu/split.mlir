// A split on the GPU is one launch, a thread per element of the operand, whatever the
// number of parts (the generic path launched a copy kernel per part): here a merged
// q/k/v-like projection split unevenly along its last axis, and a rank-3 split along a
// middle axis. The parts match the CPU's.
// RUN: maxc compile %s --target cuda:sm_90 --emit llvm-dialect | FileCheck %s
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=PTX
// RUN: %if ptxas %{ maxc compile %s --target cuda:sm_80 --emit ptx -o %t.80.ptx %}
// RUN: %if ptxas %{ %python %inputs/ptxas_each.py %ptxas sm_80 %t.80.ptx | FileCheck %s --check-prefix=PTXAS %}
// CHECK-LABEL: llvm.func @g_k0_split(
// CHECK: gpu.launch_func {{.*}}@g_k0_split_split::@split blocks
// CHECK-NOT: gpu.launch_func
// CHECK: llvm.return
// CHECK-LABEL: llvm.func @g_k1_split(
// CHECK: gpu.launch_func {{.*}}@g_k1_split_split::@split blocks
// CHECK-NOT: gpu.launch_func
// CHECK: llvm.return
// PTX: .entry split(
// PTXAS: module(s) assembled
func.func @g(%x: tensor<?x96xf32> {max.name = "x"}, %y: tensor<?x6x5xf16> {max.name = "y"}) -> (tensor<?x64xf32>, tensor<?x16xf32>, tensor<?x16xf32>, tensor<?x2x5xf16>, tensor<?x4x5xf16>) {
  %q, %k, %v = "max.split"(%x) {axis = 1 : i64, sizes = array<i64: 64, 16, 16>} : (tensor<?x96xf32>) -> (tensor<?x64xf32>, tensor<?x16xf32>, tensor<?x16xf32>)
  %a, %b = "max.split"(%y) {axis = -2 : i64, sizes = array<i64: 2, 4>} : (tensor<?x6x5xf16>) -> (tensor<?x2x5xf16>, tensor<?x4x5xf16>)
  func.return %q, %k, %v, %a, %b : tensor<?x64xf32>, tensor<?x16xf32>, tensor<?x16xf32>, tensor<?x2x5xf16>, tensor<?x4x5xf16>
}
