// The loop and LLVM stages, run one after another like maxc compile does.
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg,bufferize,lower-to-loops | FileCheck %s --check-prefix=LOOPS
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg,bufferize,lower-to-loops,lower-to-llvm | FileCheck %s --check-prefix=LLVM

// LOOPS-LABEL: func.func @g_k0_tanh(
// LOOPS-NOT: linalg.
// LOOPS: scf.for
// LOOPS: memref.load
// LOOPS-NOT: math.tanh
// LOOPS: arith.divf
// LOOPS: memref.store

// The kernel takes each memref as (allocated, aligned, offset, sizes..., strides...) plus
// the workgroup id and count: the signature the ABI wrapper calls.
// LLVM-LABEL: llvm.func @g_k0_tanh(
// LLVM-SAME: %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: i64, %{{.*}}: i64, %{{.*}}: i64, %{{.*}}: i64, %{{.*}}: i64, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: i64, %{{.*}}: i64, %{{.*}}: i64, %{{.*}}: i64, %{{.*}}: i64, %{{.*}}: i64, %{{.*}}: i64)
// LLVM-NOT: func.func
// LLVM-NOT: memref.
// LLVM-NOT: scf.
func.func @g(%x: tensor<?x3xf32>) -> tensor<?x3xf32> {
  %0 = "max.tanh"(%x) : (tensor<?x3xf32>) -> tensor<?x3xf32>
  func.return %0 : tensor<?x3xf32>
}
