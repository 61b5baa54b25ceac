// f32 matmuls use TF32 tensor cores only when allowed; otherwise a plain f32 kernel. On
// sm_90 TF32 takes wgmma, whose TF32 operands must both be K-major in shared memory: B
// (N-major in memory) is transposed into a temporary by a tiled kernel first, then read as
// K-major lines like A, 16 bytes a copy.
// RUN: maxc compile %s --target cuda:sm_90 --allow-tf32 --emit ptx | FileCheck %s --check-prefix=SM90
// SM90: .visible .entry transpose(
// SM90: .visible .entry mm(
// SM90-NOT: cp.async.ca.shared.global
// SM90: wgmma.mma_async.sync.aligned.m64n256k8.f32.tf32.tf32
// RUN: maxc compile %s --target cuda:sm_90 --allow-tf32 --emit llvm-dialect | FileCheck %s --check-prefix=HOST
// HOST: llvm.call @mgpuMemAlloc
// HOST: gpu.launch_func {{.*}}::@transpose
// HOST: gpu.launch_func {{.*}}::@mm
// HOST: llvm.call @mgpuMemFree
// The A/B for benchmarks: each K slice of B transposed as it is copied, by 4-byte cp.async
// copies into the swizzled K-major lines, with no temporary and no kernel of its own.
// RUN: env MAX_GPU_WGMMA=tf32_transpose=0 maxc compile %s --target cuda:sm_90 --allow-tf32 --emit ptx | FileCheck %s --check-prefix=COPY
// COPY-NOT: .entry transpose(
// COPY: .visible .entry mm(
// COPY: cp.async.cg.shared.global [%{{.*}}], [%{{.*}}], 16,
// COPY: cp.async.ca.shared.global [%{{.*}}], [%{{.*}}], 4,
// COPY: wgmma.mma_async.sync.aligned.m64n256k8.f32.tf32.tf32
// RUN: env MAX_GPU_WGMMA=tf32_transpose=0 maxc compile %s --target cuda:sm_90 --allow-tf32 --emit llvm-dialect | FileCheck %s --check-prefix=COPYHOST
// COPYHOST-NOT: ::@transpose
// COPYHOST: gpu.launch_func {{.*}}::@mm
// RUN: maxc compile %s --target cuda:sm_80 --allow-tf32 --emit ptx | FileCheck %s --check-prefix=SM80
// SM80: mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=F32
// F32-NOT: mma.sync
// F32-NOT: wgmma
// F32: fma.rn.f32
// RUN: not maxc compile %s --allow-tf32 -o %t.maxa 2>&1 | FileCheck %s --check-prefix=CPU
// CPU: --allow-tf32 applies to cuda targets only
func.func @g(%a: tensor<?x256xf32>, %b: tensor<256x384xf32>) -> tensor<?x384xf32> {
  %c = "max.matmul"(%a, %b) : (tensor<?x256xf32>, tensor<256x384xf32>) -> tensor<?x384xf32>
  func.return %c : tensor<?x384xf32>
}
