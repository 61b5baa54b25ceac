// f32 matmuls with a static result width >= 16 use the register-blocked micro-kernel:
// column panels outside, 6-row tiles inside, the accumulators loop-carried through k.
// A weight used only as such a right operand is stored pre-packed [n/16][k][16].
// With a packed weight and an elementwise epilogue, the kernel picks its split at run time:
// with at least 48 rows per workgroup it takes whole 6-row tiles of rows; with fewer, a
// run of weight panels and the matching result columns for all rows, so a one-row batch
// still spreads over every core. A row-wise consumer (softmax) splits rows; for few rows the
// dispatch has a column-split form too: the matmul over weight panels into a scratch, then
// the softmax over rows (see column-split.test for its numbers).
// The one-row tile's prefetches depend on the CPU (see `CpuTuning`): a portable target
// keeps them.
// RUN: maxc compile %s --emit linalg --target cpu=x86-64-v3 -o - | FileCheck %s
// RUN: env MAX_GEMV_PREFETCH=0 maxc compile %s --emit linalg --target cpu=x86-64-v3 -o - | FileCheck %s --check-prefix=NOPF
// With AVX-512F a tile row is one 512-bit vector (`CpuTuning::vector_lanes`); the panels
// stay 16 wide. MAX_MATMUL_LANES=8 keeps 256-bit vectors there.
// RUN: maxc compile %s --emit linalg --target cpu=x86-64-v4 -o - | FileCheck %s --check-prefix=ZMM
// RUN: env MAX_MATMUL_LANES=8 maxc compile %s --emit linalg --target cpu=x86-64-v4 -o - | FileCheck %s --check-prefix=YMM
// RUN: maxc compile %s -o %t.maxa
// RUN: maxc inspect %t.maxa | FileCheck %s --check-prefix=PACKED

// CHECK-LABEL: func.func @g_k0_matmul_relu(
// CHECK-SAME: %[[A:.*]]: memref<?x64xf32> {llvm.noalias}, %[[W:.*]]: memref<2x64x16xf32> {llvm.noalias}, %[[O:.*]]: memref<?x32xf32> {llvm.noalias}, %[[WG:.*]]: index, %[[NWG:.*]]: index)
// CHECK: %[[ROWS:.*]] = memref.dim %[[O]], %c0
// CHECK: %[[P:.*]] = memref.dim %[[W]], %c0
// CHECK: %[[ENOUGH:.*]] = arith.muli %[[NWG]], %c48
// CHECK: %[[BYROWS:.*]] = arith.cmpi uge, %[[ROWS]], %[[ENOUGH]]
// CHECK: arith.ceildivui %[[P]], %[[NWG]]
// CHECK: %[[R0:.*]] = arith.select %[[BYROWS]]
// CHECK: %[[RN:.*]] = arith.select %[[BYROWS]]
// CHECK: %[[P0:.*]] = arith.select %[[BYROWS]]
// CHECK: %[[PN:.*]] = arith.select %[[BYROWS]]
// CHECK: memref.subview %[[A]][%[[R0]], 0] [%[[RN]], 64] [1, 1] : memref<?x64xf32> to memref<?x64xf32, strided<[64, 1], offset: ?>>
// CHECK: memref.subview %[[W]][%[[P0]], 0, 0] [%[[PN]], 64, 16] [1, 1, 1] : memref<2x64x16xf32> to memref<?x64x16xf32, strided<[1024, 16, 1], offset: ?>>
// CHECK: memref.subview %[[O]][%[[R0]], {{.*}}] [%[[RN]], {{.*}}] [1, 1] : memref<?x32xf32> to memref<?x?xf32, strided<[32, 1], offset: ?>>
// CHECK: scf.for %{{.*}} step %c16{{.*}} iter_args({{.*}}) -> (tensor<?x?xf32>)
// CHECK: %[[WM:.*]] = bufferization.to_buffer %{{.*}} read_only : tensor<?x64x16xf32> to memref<?x64x16xf32, strided<[?, ?, ?], offset: ?>>
// The first row tile streams the panel from memory and prefetches it 128 rows (8 KiB) ahead ...
// CHECK: %[[FIRST:.*]] = arith.minui %c6{{.*}}, %{{.*}} : index
// CHECK: scf.for %{{.*}} = %c0{{.*}} to %[[FIRST]] step %c6{{.*}} iter_args({{.*}}) -> (tensor<?x?xf32>)
// CHECK: scf.for %[[K:[a-z0-9_]+]] = {{.*}} -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// CHECK: vector.transfer_read {{.*}} : tensor<?x64x16xf32>, vector<8xf32>
// CHECK: %[[AHEAD:.*]] = arith.addi %[[K]], %c128
// CHECK: memref.prefetch %[[WM]][%{{.*}}, %[[AHEAD]], %{{.*}}], read, locality<0>, data
// CHECK: vector.broadcast {{.*}} : f32 to vector<8xf32>
// CHECK-COUNT-12: vector.fma
// CHECK: vector.transfer_write
// ... the other 6-row tiles find it in cache.
// CHECK: scf.for %{{.*}} = %[[FIRST]] to %{{.*}} step %c6{{.*}} iter_args({{.*}}) -> (tensor<?x?xf32>)
// CHECK-NOT: memref.prefetch
// CHECK-COUNT-12: vector.fma
// CHECK: vector.transfer_write
// Leftover rows: one 4-row tile, one 2-row tile, then one row whose k loop splits four ways.
// Each may be the panel's first pass (fewer than 6 rows): they prefetch.
// CHECK: scf.for %{{.*}} step %c4{{.*}} iter_args({{.*}}) -> (tensor<?x?xf32>)
// CHECK: -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// CHECK: memref.prefetch %[[WM]]
// CHECK-COUNT-8: vector.fma
// CHECK: scf.for %{{.*}} step %c2{{.*}} iter_args({{.*}}) -> (tensor<?x?xf32>)
// CHECK: memref.prefetch %[[WM]]
// CHECK-COUNT-4: vector.fma
// CHECK: scf.for %{{.*}} step %c4{{.*}} -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// CHECK-COUNT-4: memref.prefetch %[[WM]]
// The fused relu follows the contraction.
// NOPF-LABEL: func.func @g_k0_matmul_relu(
// Where one-row tiles do not prefetch (znver4), the multi-row tiles still do.
// NOPF: scf.for %{{.*}} step %c2{{.*}} iter_args({{.*}}) -> (tensor<?x?xf32>)
// NOPF: memref.prefetch
// NOPF-COUNT-4: vector.fma
// NOPF: scf.for %{{.*}} step %c4{{.*}} -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// NOPF-NOT: memref.prefetch
// NOPF: linalg.generic
// CHECK: linalg.generic
// CHECK: arith.maximumf

// ZMM-LABEL: func.func @g_k0_matmul_relu(
// The 6-row tile: 6 accumulators, one panel load and 6 FMAs per k.
// ZMM: scf.for %{{.*}} -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>)
// ZMM: vector.transfer_read {{.*}} : tensor<?x64x16xf32>, vector<16xf32>
// ZMM-NOT: vector.transfer_read
// ZMM-COUNT-6: vector.fma {{.*}} : vector<16xf32>
// ZMM-NOT: vector<8xf32>
// ZMM: linalg.generic
// YMM-LABEL: func.func @g_k0_matmul_relu(
// YMM: scf.for %{{.*}} -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// YMM-NOT: vector<16xf32>
// YMM: linalg.generic

// The softmax needs whole rows: the workgroups split rows, in whole 6-row tiles.
// CHECK-LABEL: func.func @g_k1_matmul_softmax(
// CHECK: arith.ceildivui
// CHECK: %[[T:.*]] = arith.ceildivui %{{.*}}, %c6
// CHECK: arith.muli %[[T]], %c6
// CHECK: memref.subview %{{.*}} : memref<?x64xf32> to memref<?x64xf32, strided<[64, 1], offset: ?>>
// CHECK-NOT: memref.subview %{{.*}} : memref<2x64x16xf32>
// Its column-split form: the matmul alone, split like the relu kernel, into the scratch ...
// CHECK-LABEL: func.func @g_k1_matmul_softmax_columns(
// CHECK-SAME: %[[A:.*]]: memref<?x64xf32> {llvm.noalias}, %[[W:.*]]: memref<2x64x16xf32> {llvm.noalias}, %[[S:.*]]: memref<?x32xf32> {llvm.noalias}, %{{.*}}: index, %{{.*}}: index)
// CHECK: memref.subview %[[W]]
// CHECK-NOT: linalg.softmax
// ... then the softmax over whole rows of the scratch.
// CHECK-LABEL: func.func @g_k1_matmul_softmax_finish(
// CHECK-SAME: %[[S:.*]]: memref<?x32xf32> {llvm.noalias}, %{{.*}}: memref<?x64xf32> {llvm.noalias}, %{{.*}}: memref<2x64x16xf32> {llvm.noalias}, %[[O:.*]]: memref<?x32xf32> {llvm.noalias}, %{{.*}}: index, %{{.*}}: index)
// CHECK: memref.subview %[[S]][%{{.*}}, 0] [%{{.*}}, 32] [1, 1]
// CHECK: memref.subview %[[O]][%{{.*}}, 0] [%{{.*}}, 32] [1, 1]
// CHECK-NOT: vector.fma

// PACKED: max_kernel_g_k1_matmul_softmax  bindings=[0, 3, 4]  workgroups<=arg0.d0
// PACKED-NEXT: below 48 rows per thread: max_kernel_g_k1_matmul_softmax_columns  bindings=[0, 3, 5]  workgroups<=2, then max_kernel_g_k1_matmul_softmax_finish  bindings=[5, 0, 3, 4]  workgroups<=arg0.d0
// PACKED: #1   weight:w:packed16
func.func @g(%x: tensor<?x64xf32>) -> (tensor<?x32xf32>, tensor<?x32xf32>) {
  %w = "max.weight"() {name = "w", init = "uniform", scale = 1.0 : f64, seed = 3 : i64} : () -> tensor<64x32xf32>
  %0 = "max.matmul"(%x, %w) : (tensor<?x64xf32>, tensor<64x32xf32>) -> tensor<?x32xf32>
  %1 = "max.relu"(%0) : (tensor<?x32xf32>) -> tensor<?x32xf32>
  %w2 = "max.weight"() {name = "w2", init = "uniform", scale = 1.0 : f64, seed = 4 : i64} : () -> tensor<64x32xf32>
  %2 = "max.matmul"(%x, %w2) : (tensor<?x64xf32>, tensor<64x32xf32>) -> tensor<?x32xf32>
  %3 = "max.softmax"(%2) {axis = -1 : i64} : (tensor<?x32xf32>) -> tensor<?x32xf32>
  func.return %1, %3 : tensor<?x32xf32>, tensor<?x32xf32>
}
