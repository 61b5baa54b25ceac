// Elementwise chains fuse into one kernel whose loops map onto blocks x threads, with math
// functions from libdevice; a row reduction (softmax) is one kernel, a block per row with
// warp-shuffle reductions. The host code launches both on the runtime's stream through
// the max_gpu_api table.
// REQUIRES: libdevice
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s
// CHECK: // ----- PTX module 0
// CHECK: .visible .entry g_k0_add_tanh_kernel(
// CHECK: mov.u32 {{.*}}%ctaid.x;
// CHECK: mov.u32 {{.*}}%tid.y;
// CHECK-NOT: .extern .func __nv_
// CHECK: // ----- PTX module 1
// CHECK: .visible .entry rows(
// CHECK: shfl.sync.bfly.b32 {{.*}}, 16, 31, -1;
// CHECK: bar.sync 0;
// CHECK-NOT: // ----- PTX module 2
// RUN: maxc compile %s --target cuda:sm_90 --emit llvm-ir | FileCheck %s --check-prefix=HOST
// HOST-NOT: @llvm.global_ctors
// HOST-DAG: @max_gpu_api = {{.*}}global [18 x ptr]
// HOST-DAG: define {{.*}}i32 @max_kernel_g_k0_add_tanh(
// HOST-DAG: define {{.*}}i32 @max_kernel_g_k1_softmax(
// HOST-DAG: define {{.*}}void @max_gpu_init()
// RUN: maxc compile %s --target cuda:sm_90 -o %t.maxa
// RUN: max inspect %t.maxa | FileCheck %s --check-prefix=INSPECT
// INSPECT: target: cuda-linux cpu=sm_90
// RUN: not max run %t.maxa 2>&1 | FileCheck %s --check-prefix=CPU
// CPU: this artifact was compiled for an NVIDIA GPU (sm_90); load it on a GPU
func.func @g(%x: tensor<?x64xf32>, %y: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %a = "max.add"(%x, %y) : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  %t = "max.tanh"(%a) : (tensor<?x64xf32>) -> tensor<?x64xf32>
  %s = "max.softmax"(%t) {axis = -1 : i64} : (tensor<?x64xf32>) -> tensor<?x64xf32>
  func.return %s : tensor<?x64xf32>
}
