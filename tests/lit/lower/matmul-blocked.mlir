// f32 matmuls deep enough (k >= 256, static) carry a cache-blocked path for their whole
// 6-row tiles, taken at run time when the workgroup's rows of `a` are 2.5 MiB or more: row
// blocks of 192, k-slices of 512, each block's rows packed tile by tile ([tile][k][row]),
// then every column panel's k-slice run by all of the block's tiles, which resume from the
// partial sums in the result after the first slice. Smaller `a` (and all rows from the
// gate's row count on) take the unblocked tiles (matmul-microkernel.mlir). Whether a CPU
// takes blocked tiles at all is its tuning (`CpuTuning`: znver4 does not): a portable
// target does, and MAX_BLOCKED_MIN_A_BYTES=0 makes its gate zero.
// RUN: maxc compile %s --emit linalg --target cpu=x86-64-v3 -o - | FileCheck %s
// RUN: env MAX_BLOCKED_MIN_A_BYTES=0 maxc compile %s --emit linalg --target cpu=x86-64-v3 -o - | FileCheck %s --check-prefix=ZERO
// RUN: maxc compile %s -o %t.maxa

// CHECK-LABEL: func.func @g_k0_matmul(
// CHECK: %[[AF:.*]] = arith.muli %{{.*}}, %c600 : index
// CHECK: %[[BIG:.*]] = arith.cmpi uge, %[[AF]], %c655360 : index
// ZERO-LABEL: func.func @g_k0_matmul(
// ZERO: %[[AF:.*]] = arith.muli %{{.*}}, %c600 : index
// ZERO: arith.cmpi uge, %[[AF]], %c0{{.*}} : index
// CHECK: %[[MBLK:.*]] = arith.select %[[BIG]], %{{.*}}, %c0{{.*}} : index
// CHECK: %[[AP:.*]] = tensor.empty() : tensor<32x512x6xf32>
// CHECK: scf.for %{{.*}} = %c0{{.*}} to %[[MBLK]] step %c192
// CHECK: scf.for %[[KB:.*]] = %c0{{.*}} to %c600 step %c512
// Pack the block's tiles for this k-slice: six rows per k.
// CHECK: scf.for {{.*}} iter_args(%{{.*}} = %[[AP]]) -> (tensor<32x512x6xf32>)
// CHECK-COUNT-6: tensor.insert {{.*}} : tensor<32x512x6xf32>
// CHECK: %[[FIRSTK:.*]] = arith.cmpi eq, %[[KB]], %c0
// CHECK: scf.for %{{.*}} step %c16{{.*}} -> (tensor<?x?xf32>)
// The first tile of a panel starts from zeros or from the partial sums ...
// CHECK: scf.if %[[FIRSTK]] -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// CHECK: } else {
// CHECK-COUNT-12: vector.transfer_read %{{.*}} : tensor<?x?xf32>, vector<8xf32>
// ... and, streaming this panel's k-slice, prefetches the next panel's.
// CHECK: memref.prefetch %{{.*}}, read, locality<3>, data : memref<?x600x16xf32
// CHECK: tensor.extract %{{.*}} : tensor<32x512x6xf32>
// CHECK-COUNT-12: vector.fma
// CHECK-COUNT-12: vector.transfer_write
// The other tiles find the slice in cache.
// CHECK: scf.if %[[FIRSTK]]
// CHECK-NOT: memref.prefetch
// CHECK-COUNT-12: vector.fma
// Then the unblocked 6-row tiles from the gate's row count, and the leftover rows.
// CHECK: scf.for %{{.*}} = %[[MBLK]] to %{{.*}} step %c6

// An activation right operand: the workgroups split b's 16-column stripes instead of the
// rows when a workgroup's share of the rows would take the blocked tiles and b is at least
// as wide as a is tall (each workgroup then packs only its stripe of b), or when the rows
// are few.
// CHECK-LABEL: func.func @g_k1_matmul(
// CHECK: %[[FEW:.*]] = arith.cmpi uge, %[[M:.*]], %{{.*}} : index
// CHECK: %[[SHARE:.*]] = arith.ceildivui %[[M]], %arg4 : index
// CHECK: %[[AE:.*]] = arith.muli %[[SHARE]], %c600 : index
// CHECK: %[[ABIG:.*]] = arith.cmpi uge, %[[AE]], %c655360 : index
// CHECK: %[[WIDE:.*]] = arith.cmpi uge, %c40, %[[M]] : index
// CHECK: %[[COLSPLIT:.*]] = arith.andi %[[ABIG]], %[[WIDE]] : i1
// CHECK: %[[NOTCOL:.*]] = arith.xori %[[COLSPLIT]], %true : i1
// CHECK: %[[BYROWS:.*]] = arith.andi %[[FEW]], %[[NOTCOL]] : i1
// CHECK: arith.select %[[BYROWS]]
// CHECK: memref.subview %arg1[0, %{{.*}}] [600, %{{.*}}] [1, 1] : memref<600x40xf32> to memref<600x?xf32, strided<[40, 1], offset: ?>>
// Its stripe is packed into panels, read row by row, when the blocked tiles run (else into
// no panels); the unblocked tiles copy one column panel at a time, and the stripe's
// columns past its whole panels take the generic contraction.
// CHECK: %[[BIG1:.*]] = arith.cmpi uge, %{{.*}}, %c655360{{.*}} : index
// CHECK: arith.select %[[BIG1]], %{{.*}}, %c0{{.*}} : index
// CHECK: %[[COLS:.*]] = arith.select %[[BIG1]], %{{.*}}, %c0{{.*}} : index
// CHECK: %[[NP:.*]] = arith.divui %[[COLS]], %c16{{.*}} : index
// CHECK: %[[BP:.*]] = tensor.empty(%[[NP]]) : tensor<?x600x16xf32>
// CHECK: scf.for %{{.*}} = %c0{{.*}} to %c600{{.*}} step %c1{{.*}} iter_args(%{{.*}} = %[[BP]])
// CHECK-COUNT-2: vector.transfer_write {{.*}} : vector<8xf32>, tensor<?x600x16xf32>
// CHECK: tensor<32x512x6xf32>
// CHECK: linalg.copy
// CHECK: linalg.generic
func.func @g(%x: tensor<?x600xf32>, %b: tensor<600x40xf32>) -> (tensor<?x32xf32>, tensor<?x40xf32>) {
  %w = "max.weight"() {name = "w", init = "uniform", scale = 1.0 : f64, seed = 3 : i64} : () -> tensor<600x32xf32>
  %0 = "max.matmul"(%x, %w) : (tensor<?x600xf32>, tensor<600x32xf32>) -> tensor<?x32xf32>
  %1 = "max.matmul"(%x, %b) : (tensor<?x600xf32>, tensor<600x40xf32>) -> tensor<?x40xf32>
  func.return %0, %1 : tensor<?x32xf32>, tensor<?x40xf32>
}
