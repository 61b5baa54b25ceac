// A matmul whose left operand is a relu's output, on a packed weight, counts the nonzeros
// of a one-row `a` (16 lanes at a time) and, when at least a quarter of the row is zeros,
// gathers them (column and value, branch-free) and runs each column panel over that list:
// the panel rows that zeros would multiply are never read. More rows, or a denser row,
// take the dense tiles. Other matmuls, and MAX_ZERO_SKIP=0, keep the dense path only.
// The prefetches follow the CPU's GEMV tuning (`CpuTuning::gemv_prefetch`): a portable
// target takes them.
// RUN: maxc compile %s --emit linalg --target cpu=x86-64-v3 -o - | FileCheck %s
// RUN: env MAX_ZERO_SKIP=0 maxc compile %s --emit linalg --target cpu=x86-64-v3 -o - | FileCheck %s --check-prefix=OFF

// CHECK-LABEL: func.func @after_relu_k1_matmul(
// The count runs only for one row: its trip count is k when m == 1, else 0.
// CHECK: %[[ONE:.*]] = arith.cmpi eq, %{{.*}}, %{{.*}} : index
// CHECK: %[[ROW:.*]] = arith.select %[[ONE]], %c64, %{{.*}} : index
// CHECK: scf.for {{.*}} -> (vector<16xi32>)
// CHECK: arith.cmpf une, %{{.*}} : vector<16xf32>
// CHECK: vector.reduction <add>
// CHECK: %[[NZ:.*]] = scf.for %{{.*}} to %[[ROW]] {{.*}} -> (index)
// Taken when count * 4 <= k * 3 and m == 1; the lists are k long then, else empty.
// CHECK: arith.muli %[[NZ]], %c4
// CHECK: %[[FEW:.*]] = arith.cmpi ule
// CHECK: %[[TAKE:.*]] = arith.andi %[[ONE]], %[[FEW]] : i1
// CHECK: %[[END:.*]] = arith.select %[[TAKE]], %c64, %{{.*}} : index
// CHECK: tensor.empty(%[[END]]) : tensor<?xi32>
// CHECK: tensor.empty(%[[END]]) : tensor<?xf32>
// CHECK: %[[LIST:.*]]:3 = scf.for %{{.*}} to %[[END]] {{.*}} -> (tensor<?xi32>, tensor<?xf32>, index)
// CHECK: tensor.insert %{{.*}} : tensor<?xi32>
// CHECK: tensor.insert %{{.*}} : tensor<?xf32>
// CHECK: arith.cmpf une
// CHECK: scf.if %[[TAKE]]
// Per entry: its column and value, two FMAs on the panel row it names, and a prefetch of
// the row of the entry 128 places on (clamped to the last).
// CHECK: scf.for {{.*}} -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// CHECK: %[[COL:.*]] = tensor.extract %[[LIST]]#0[
// CHECK: %[[C:.*]] = arith.index_cast %[[COL]] : i32 to index
// CHECK: tensor.extract %[[LIST]]#1[
// CHECK: vector.transfer_read %{{.*}}[%{{.*}}, %[[C]], %{{.*}}]
// CHECK: vector.fma
// CHECK: vector.transfer_read %{{.*}}[%{{.*}}, %[[C]], %{{.*}}]
// CHECK: vector.fma
// CHECK: arith.addi %{{.*}}, %c128
// CHECK: arith.minui
// CHECK: memref.prefetch
// The dense tiles, for everything else.
// CHECK: } else {
// CHECK: return

// CHECK-LABEL: func.func @dense_k2_matmul(
// CHECK-NOT: xi32
// CHECK: return

// OFF-LABEL: func.func @after_relu_k1_matmul(
// OFF-NOT: xi32
// OFF: return

module {
  func.func @after_relu(%x: tensor<?x64xf32> {max.name = "x"}) -> tensor<?x32xf32> {
    %w = "max.weight"() {name = "w", init = "normal", scale = 0.1 : f64, seed = 1 : i64} : () -> tensor<64x32xf32>
    %r = "max.relu"(%x) : (tensor<?x64xf32>) -> tensor<?x64xf32>
    %y = "max.matmul"(%r, %w) : (tensor<?x64xf32>, tensor<64x32xf32>) -> tensor<?x32xf32>
    func.return %y : tensor<?x32xf32>
  }

  func.func @dense(%x: tensor<?x64xf32> {max.name = "x"}) -> tensor<?x32xf32> {
    %w = "max.weight"() {name = "w2", init = "normal", scale = 0.1 : f64, seed = 2 : i64} : () -> tensor<64x32xf32>
    %y = "max.matmul"(%x, %w) : (tensor<?x64xf32>, tensor<64x32xf32>) -> tensor<?x32xf32>
    func.return %y : tensor<?x32xf32>
  }
}
