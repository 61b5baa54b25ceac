// qmatmul keeps weights in GGUF blocks.
//
// With f32 activations it is the quantized micro-kernel: each block of 32 weights is one
// byte-vector load whose nibbles are widened to a vector<32xf32> and scaled (q * d + m,
// d and m the block's two f16s); many rows take the panel path, which decodes 16 columns
// into an f32 scratch panel once and runs a register-blocked kernel over it.
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg --split-input-file | FileCheck %s
// CHECK-LABEL: func.func @g_k0_qmatmul(
// CHECK-SAME: memref<?x64xf32>, %{{.*}}: memref<16x40xi8>
// CHECK: scf.if
// CHECK: memref.alloca() : memref<64x16xf32>
// CHECK: vector.bitcast %{{.*}} : vector<4xi8> to vector<2xf16>
// CHECK: arith.andi
// CHECK: arith.shrui
// CHECK: arith.uitofp %{{.*}} : vector<32xi8> to vector<32xf32>
// CHECK: vector.fma
// CHECK: } else {
// CHECK: vector.reduction <add>
func.func @g(%x: tensor<?x64xf32>, %w: tensor<16x40xi8>) -> tensor<?x16xf32> {
  %0 = "max.qmatmul"(%x, %w) {format = "q4_1"} : (tensor<?x64xf32>, tensor<16x40xi8>) -> tensor<?x16xf32>
  func.return %0 : tensor<?x16xf32>
}

// -----

// Other activation types take the generic contraction, whose body decodes the f16 scale
// (two bytes, bitcast) and the 4-bit quant of each weight from the i8 block bytes.
// CHECK-LABEL: func.func @h_k0_qmatmul(
// CHECK-SAME: memref<?x64xf16> {llvm.noalias}, %{{.*}}: memref<16x40xi8> {llvm.noalias}
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "reduction"]
// CHECK: linalg.index 2 : index
// CHECK: tensor.extract %{{.*}} : tensor<16x40xi8>
// CHECK: arith.bitcast %{{.*}} : i16 to f16
// CHECK: arith.shrui
// CHECK: arith.andi
func.func @h(%x: tensor<?x64xf16>, %w: tensor<16x40xi8>) -> tensor<?x16xf16> {
  %0 = "max.qmatmul"(%x, %w) {format = "q4_1"} : (tensor<?x64xf16>, tensor<16x40xi8>) -> tensor<?x16xf16>
  func.return %0 : tensor<?x16xf16>
}

// -----

// Q4_K: the kernels walk 32-weight sub-blocks; sub-block k lives in super-block k / 8
// (144 bytes), whose f16 d and dmin and eight 6-bit scale/min pairs (decoded together as
// vector<8xi32>) give its scale and min; its 32 quants are the low or high nibbles of 32
// bytes at 16 + 32 * ((k % 8) / 2).
// CHECK: #[[BASE:.*]] = affine_map<(d0) -> ((d0 floordiv 8) * 144)>
// CHECK-LABEL: func.func @q4k_k0_qmatmul(
// CHECK-SAME: memref<?x512xf32>, %{{.*}}: memref<16x288xi8>
// CHECK: arith.constant 16 : index
// CHECK: affine.apply #[[BASE]]
// CHECK: vector.bitcast %{{.*}} : vector<4xi8> to vector<2xf16>
// CHECK: arith.select %{{.*}} : vector<8xi1>, vector<8xi32>
// CHECK: vector.extract %{{.*}}[%{{.*}}] : i32 from vector<8xi32>
// CHECK: vector.load %{{.*}} : memref<16x288xi8>, vector<32xi8>
// CHECK: arith.shrui %{{.*}} : vector<32xi8>
// CHECK: arith.uitofp %{{.*}} : vector<32xi8> to vector<32xf32>
// CHECK: vector.fma
func.func @q4k(%x: tensor<?x512xf32>, %w: tensor<16x288xi8>) -> tensor<?x16xf32> {
  %0 = "max.qmatmul"(%x, %w) {format = "q4_k"} : (tensor<?x512xf32>, tensor<16x288xi8>) -> tensor<?x16xf32>
  func.return %0 : tensor<?x16xf32>
}

// -----

// With quantize_input (llama.cpp's arithmetic): each 32-block of x is rounded to i8 with an
// f16 scale (and, for Q4_1, the block sum), then each output sums integer block products
// (AVX2 byte multiply-adds). A lone row (decode) keeps its accumulators in registers and
// prefetches the weight stream 1024 bytes ahead. A block of rows goes in register tiles of
// 8 rows of one column: 8 lane accumulators and one vector of the rows' mins are loop
// values over the weight blocks, each block is decoded once for the 8 rows, and the rows'
// scales and sums are one vector load each (the scratch is [block][row]). Rows past whole tiles share
// each decoded block through a scratch of accumulators.
// CHECK-LABEL: func.func @q8_k0_qmatmul(
// CHECK: math.roundeven %{{.*}} : vector<32xf32>
// CHECK: vector.reduction <add>, %{{.*}} : vector<32xi32> into i32
// CHECK: arith.truncf %{{.*}} : f32 to f16
// CHECK: scf.if
// CHECK: arith.constant 1024 : index
// CHECK: memref.prefetch %{{.*}}, read, locality<0>, data : memref<24x60xi8>
// CHECK: func.call @max_x86_pmaddubsw
// CHECK: vector.fma
// CHECK: scf.yield
// CHECK: } else {
// CHECK-NOT: memref.prefetch
// CHECK: scf.for %{{.*}} step %c8
// CHECK: scf.for {{.*}} iter_args({{.*}}) -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// CHECK: arith.shrui
// CHECK: vector.load %{{.*}} : memref<3x64xf32>, vector<8xf32>
// CHECK-COUNT-8: func.call @max_x86_pmaddubsw
// CHECK: vector.load %{{.*}} : memref<3x64xf32>, vector<8xf32>
// CHECK: scf.yield
// CHECK-COUNT-8: memref.store %{{.*}} : memref<?x24xf32>
// CHECK: vector.load %{{.*}} : memref<16x8xf32>, vector<8xf32>
// CHECK: func.call @max_x86_pmaddubsw
// CHECK: vector.store %{{.*}} : memref<16x8xf32>, vector<8xf32>
func.func @q8(%x: tensor<?x96xf32>, %w: tensor<24x60xi8>) -> tensor<?x24xf32> {
  %0 = "max.qmatmul"(%x, %w) {format = "q4_1", quantize_input = true} : (tensor<?x96xf32>, tensor<24x60xi8>) -> tensor<?x24xf32>
  func.return %0 : tensor<?x24xf32>
}

// -----

// K-quants with quantize_input walk super-blocks: a lone row prefetches each super-block's
// lines 1024 bytes ahead, then its eight sub-blocks are loops of one trip each (inlined with
// constant sub-block indices by canonicalization, so that scale lanes and shifts fold),
// chaining the accumulators. A block of rows goes in register tiles of 8 rows there too:
// the super-block loop and each of its sub-block loops carry the 8 lane accumulators and
// the rows' mins (9 values).
// CHECK-LABEL: func.func @q4kq_k0_qmatmul(
// CHECK: scf.if
// CHECK: arith.constant 1024 : index
// CHECK: memref.prefetch
// CHECK: arith.constant 1088 : index
// CHECK: memref.prefetch
// CHECK: arith.constant 1152 : index
// CHECK: memref.prefetch
// CHECK: %[[S0:.*]]:2 = scf.for %{{.*}} = %[[C0:.*]] to %[[C1:.*]] step %{{.*}} iter_args(
// CHECK: func.call @max_x86_pmaddubsw
// CHECK: %[[S1:.*]]:2 = scf.for %{{.*}} = %[[C1]] to %{{.*}} step %{{.*}} iter_args(%{{.*}} = %[[S0]]#0, %{{.*}} = %[[S0]]#1)
// CHECK-COUNT-6: scf.for
// CHECK: } else {
// CHECK: scf.for %{{.*}} step %c8
// CHECK: %[[T:.*]]:9 = scf.for {{.*}} -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// CHECK: %[[U0:.*]]:9 = scf.for %{{.*}} = %[[D0:.*]] to %[[D1:.*]] step %{{.*}} iter_args(
// CHECK-COUNT-8: func.call @max_x86_pmaddubsw
// CHECK: %[[U1:.*]]:9 = scf.for %{{.*}} = %[[D1]] to %{{.*}} step %{{.*}} iter_args(%{{.*}} = %[[U0]]#0,
// CHECK-COUNT-8: func.call @max_x86_pmaddubsw
// CHECK-COUNT-6: scf.for
// CHECK: vector.extract %[[T]]#8[7] : f32 from vector<8xf32>
func.func @q4kq(%x: tensor<?x512xf32>, %w: tensor<16x288xi8>) -> tensor<?x16xf32> {
  %0 = "max.qmatmul"(%x, %w) {format = "q4_k", quantize_input = true} : (tensor<?x512xf32>, tensor<16x288xi8>) -> tensor<?x16xf32>
  func.return %0 : tensor<?x16xf32>
}
