// Decode-shaped quantized matmuls (1 to 15 rows) run @qmatmul_few (1 or 2 rows, a row a
// block) or @qmatmul_few_rows (4 rows a block here): a block of 256 threads per (rows, 16
// columns) first rounds its rows of activations to 8 bits once, into shared memory (four
// quants to a 32-bit word, 16-byte aligned for vector loads: 256 bytes a row here), then
// each warp takes columns, a lane per 32-weight block: the weight quants unpacked four to a
// word (nibbles with 0x0f0f0f0f, Q5's fifth bits spread by one multiply, Q8_0's signed
// bytes as loaded) and multiplied into each row's activation words with dp4a.
// Blocks at 2-byte offsets (Q4_0, Q8_0, Q6_K) load their words as 16-bit halves. benches/gpu/prepare.sh checks the results against
// the CPU's (test_ops.py test_qmatmul_few_rows_wide and the other quantized cases).
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx -o %t.90.ptx
// RUN: FileCheck %s < %t.90.ptx
// RUN: maxc compile %s --target cuda:sm_80 --emit ptx | FileCheck %s
// RUN: %if ptxas %{ %python %inputs/ptxas_each.py %ptxas sm_90a %t.90.ptx | FileCheck %s --check-prefix=PTXAS %}
// RUN: %if ptxas %{ maxc compile %s --target cuda:sm_80 --emit ptx -o %t.80.ptx %}
// RUN: %if ptxas %{ %python %inputs/ptxas_each.py %ptxas sm_80 %t.80.ptx | FileCheck %s --check-prefix=PTXAS %}
// Q4_1 (module 0): unsigned nibble words against signed activation words.
// CHECK-LABEL: PTX module 0
// CHECK: .entry qmatmul_few(
// CHECK: .maxntid 256, 1, 1
// CHECK-DAG: .shared .align 16 .b8 __wg_qmatmul_few_0[256];
// CHECK-DAG: cvt.rzi.s32.f32
// CHECK-DAG: st.shared.b32
// CHECK-DAG: bar.sync 0;
// CHECK-DAG: ld.shared.v4.b32
// CHECK-DAG: and.b32 {{.*}}, 252645135;
// CHECK-DAG: dp4a.u32.s32
// CHECK: ret;
// CHECK: .entry qmatmul_few_rows(
// CHECK: .maxntid 256, 1, 1
// CHECK-DAG: .shared .align 16 .b8 __wg_qmatmul_few_rows_0[1024];
// CHECK-DAG: dp4a.u32.s32
// CHECK: ret;
// (Module 1: the Q4_1 matmul's tensor-core kernels, for 16 rows and more.)
// Q8_0 (module 2): signed weight bytes, words from 16-bit halves.
// CHECK-LABEL: PTX module 2
// CHECK: .entry qmatmul_few(
// CHECK-DAG: ld.global.b16
// CHECK-DAG: dp4a.s32.s32
// CHECK: ret;
// Q5_0 (module 4): the fifth bits, spread to their bytes by a multiply.
// CHECK-LABEL: PTX module 4
// CHECK: .entry qmatmul_few(
// CHECK-DAG: mul.lo.s32
// CHECK-DAG: dp4a.u32.s32
// CHECK: ret;
// Q6_K (module 6): signed 16-weight scales as bytes, the quants' two high bits.
// CHECK-LABEL: PTX module 6
// CHECK: .entry qmatmul_few(
// CHECK-DAG: ld.global.s8
// CHECK-DAG: dp4a.u32.s32
// CHECK: ret;
// PTXAS: module(s) assembled
func.func @g(%x: tensor<?x256xf32> {max.name = "x"}, %w41: tensor<24x160xi8> {max.name = "w41"}, %w80: tensor<24x272xi8> {max.name = "w80"},
             %w50: tensor<24x176xi8> {max.name = "w50"}, %w6k: tensor<24x210xi8> {max.name = "w6k"})
    -> (tensor<?x24xf32>, tensor<?x24xf32>, tensor<?x24xf32>, tensor<?x24xf32>) {
  %a = "max.qmatmul"(%x, %w41) {format = "q4_1", quantize_input = true} : (tensor<?x256xf32>, tensor<24x160xi8>) -> tensor<?x24xf32>
  %b = "max.qmatmul"(%x, %w80) {format = "q8_0", quantize_input = true} : (tensor<?x256xf32>, tensor<24x272xi8>) -> tensor<?x24xf32>
  %c = "max.qmatmul"(%x, %w50) {format = "q5_0", quantize_input = true} : (tensor<?x256xf32>, tensor<24x176xi8>) -> tensor<?x24xf32>
  %d = "max.qmatmul"(%x, %w6k) {format = "q6_k", quantize_input = true} : (tensor<?x256xf32>, tensor<24x210xi8>) -> tensor<?x24xf32>
  func.return %a, %b, %c, %d : tensor<?x24xf32>, tensor<?x24xf32>, tensor<?x24xf32>, tensor<?x24xf32>
}
