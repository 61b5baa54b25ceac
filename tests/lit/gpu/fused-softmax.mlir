// Elementwise chains and reductions: their loops become kernels (blocks x threads), math
// functions come from libdevice, and the host code launches them on the runtime's stream
// through the max_gpu_api table.
// REQUIRES: libdevice
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s
// CHECK: // ----- PTX module 0
// CHECK: .visible .entry g_k0_add_tanh_softmax_kernel(
// CHECK: mov.u32 {{.*}}%ctaid.x;
// CHECK: mov.u32 {{.*}}%tid.y;
// CHECK-NOT: .extern .func __nv_
// CHECK: // ----- PTX module 1
// RUN: maxc compile %s --target cuda:sm_90 --emit llvm-ir | FileCheck %s --check-prefix=HOST
// HOST-NOT: @llvm.global_ctors
// HOST-DAG: @max_gpu_api = {{.*}}global [18 x ptr]
// HOST-DAG: define {{.*}}i32 @max_kernel_g_k0_add_tanh_softmax(
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
