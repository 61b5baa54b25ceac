// --emit stops at each stage, like IREE's --compile-to.
// RUN: maxc compile %s --emit max | FileCheck %s --check-prefix=MAX
// RUN: maxc compile %s --emit llvm-dialect | FileCheck %s --check-prefix=LLVMD
// RUN: maxc compile %s --emit llvm-ir | FileCheck %s --check-prefix=IR
// RUN: maxc compile %s --emit asm --target cpu=x86-64-v3 | FileCheck %s --check-prefix=AVX2
// RUN: maxc compile %s --emit asm --target cpu=x86-64-v2 | FileCheck %s --check-prefix=SSE
// RUN: maxc compile %s --emit obj -o %t.o
// RUN: llvm-readelf --syms %t.o | FileCheck %s --check-prefix=OBJ

// MAX: func.func @g(%v0: tensor<?x64xf32>, %v1: tensor<64x32xf32>) -> (tensor<?x32xf32>)
// MAX: "max.matmul"(%v0, %v1) : (tensor<?x64xf32>, tensor<64x32xf32>) -> (tensor<?x32xf32>) loc("{{.*}}emit-stages.mlir":[[@LINE+20]]:8)

// LLVMD: llvm.func @g_k0_matmul(

// The ABI wrapper loads bindings and push constants and calls the kernel.
// IR: @max_abi_version = {{.*}}constant i32 2
// IR: define {{.*}}i32 @max_kernel_g_k0_matmul(ptr {{.*}}%bind, ptr {{.*}}%pc, i64 %wg, i64 %nwg)

// The matmul's contiguous inner loop is vectorized with FMA at x86-64-v3 and not at v2.
// AVX2: g_k0_matmul:
// AVX2: vfmadd{{[0-9]+}}ps {{.*}}%ymm
// SSE: g_k0_matmul:
// SSE-NOT: vfmadd
// SSE-NOT: %ymm
// SSE: max_kernel_g_k0_matmul:

// OBJ-DAG: max_abi_version
// OBJ-DAG: max_kernel_g_k0_matmul

func.func @g(%a: tensor<?x64xf32>, %b: tensor<64x32xf32>) -> tensor<?x32xf32> {
  %0 = "max.matmul"(%a, %b) : (tensor<?x64xf32>, tensor<64x32xf32>) -> tensor<?x32xf32>
  func.return %0 : tensor<?x32xf32>
}
