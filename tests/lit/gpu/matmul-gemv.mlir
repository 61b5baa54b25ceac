// Decode-sized bf16 matmuls (1 to 4 rows) take the matrix-vector kernels: the host launches
// @gemv1 for one row and @gemv for 2 to 4, each into split-K partial sums (in the module's
// global @gemv_partials: no allocation) that the last block of each column block to arrive
// (counted in @gemv_arrivals) adds up, with the epilogue: one launch, no @reduce. Other row
// counts take the tensor-core kernels, whose split-K path allocates its partial sums and
// reduces them in @reduce. The chunk of K per
// block is computed at run time and passed to the kernel. Every shape of the kernel that
// MAX_GPU_GEMV selects compiles (tests/lit/gpu/ptxas.mlir assembles the default).
// RUN: maxc compile %s --target cuda:sm_90 --emit llvm-dialect | FileCheck %s
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefixes=PTX,ALIGN
// RUN: env MAX_GPU_GEMV=lanes=1,ahead=8,blocks=1320 maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=PTX
// RUN: env MAX_GPU_GEMV=lanes=2,ahead=4 maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=PTX
// CHECK-LABEL: llvm.func @g_k0_matmul_add(
// CHECK-NOT: @mgpuMemAlloc
// CHECK: gpu.launch_func {{.*}}@g_k0_matmul_add_wgmma::@gemv1 blocks
// CHECK-NOT: @reduce
// CHECK-NOT: @mgpuMemAlloc
// CHECK: gpu.launch_func {{.*}}@g_k0_matmul_add_wgmma::@gemv blocks
// CHECK-NOT: @reduce
// CHECK: llvm.call @mgpuMemAlloc
// CHECK: gpu.launch_func {{.*}}@g_k0_matmul_add_wgmma::@partial
// CHECK: gpu.launch_func {{.*}}@g_k0_matmul_add_wgmma::@reduce
// PTX-DAG: .entry gemv1(
// PTX-DAG: .entry gemv(
// PTX-DAG: .entry reduce(
// PTX-DAG: ld.global.v4.b32
// The reduction slots are read and written as 16-byte vectors, so they must be aligned to 16
// (a `misaligned address` fault on the GPU otherwise; ptxas placed them after the flag).
// Lanes of 1 have none.
// ALIGN-DAG: .shared .align 16 .b8 __wg_gemv1_1[
// ALIGN-DAG: .shared .align 16 .b8 __wg_gemv_1[
// PTX-DAG: .global .align 4 .b8 gemv_arrivals[{{[0-9]+}}];
// PTX-DAG: .global .align 4 .b8 gemv_partials[{{[0-9]+}}];
// PTX-DAG: atom{{.*}}.global.add.u32
// PTX-DAG: fence.acq_rel.gpu;
func.func @g(%x: tensor<?x512xbf16> {max.name = "x"}, %w: tensor<512x1024xbf16> {max.name = "w"}, %b: tensor<1024xbf16> {max.name = "b"}) -> tensor<?x1024xbf16> {
  %m = "max.matmul"(%x, %w) : (tensor<?x512xbf16>, tensor<512x1024xbf16>) -> tensor<?x1024xbf16>
  %y = "max.add"(%m, %b) : (tensor<?x1024xbf16>, tensor<1024xbf16>) -> tensor<?x1024xbf16>
  func.return %y : tensor<?x1024xbf16>
}
