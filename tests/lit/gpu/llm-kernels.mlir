// The LLM kernels on the GPU: quantized matmuls (a quantizer, then a warp per column
// decoding blocks in registers), RoPE, the in-place KV-cache write and attention over the
// cache (a block per query and head, or per split of its keys; an online softmax per warp,
// warps combined through shared memory). Each is one module with its launches; every
// module assembles with ptxas for each chip. (RoPE calls libdevice's cos/sin.)
// REQUIRES: libdevice
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx -o %t.90.ptx
// RUN: FileCheck %s < %t.90.ptx
// RUN: maxc compile %s --target cuda:sm_90 -o %t.maxa && maxc inspect %t.maxa | FileCheck %s --check-prefix=ART
// CHECK-DAG: .entry quantize(
// CHECK-DAG: .entry qmatmul(
// CHECK-DAG: .entry qmatmul_few(
// CHECK-DAG: shfl.sync.bfly
// CHECK-DAG: .entry rope(
// CHECK-DAG: .entry cache_write(
// CHECK-DAG: .entry attention(
// Many (query, head) rows (prefill) take 128-thread blocks, a block a row. Each warp's
// values meet the others' in 16-byte aligned shared memory (4 or 16 warps x 64 f32), and
// a tile's scores reach their lanes by shuffles.
// CHECK-DAG: .entry attention_rows(
// CHECK-DAG: .shared .align 16 .b8 __wg_attention_rows_0[1024]
// CHECK-DAG: .shared .align 16 .b8 __wg_attention_0[4096]
// CHECK-DAG: shfl.sync.idx
// CHECK-DAG: bar.sync
// Prefill over an f16 cache (16 tokens a batch row and more) runs on the tensor cores: key
// rows by ldmatrix as the B of Q K^T, value rows by ldmatrix.trans as the B of P V, both
// staged in shared memory padded to 72 halves a row (64 keys x 72 x 2 bytes).
// CHECK-DAG: .entry attention_mma(
// CHECK-DAG: mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32
// CHECK-DAG: ldmatrix.sync.aligned.m8n8.x2.shared.b16
// CHECK-DAG: ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16
// CHECK-DAG: .shared .align 16 .b8 __wg_attention_mma_0[9216]
// Attention splits a decode step's keys over blocks (grid z); the last split of a row,
// counted in a module global, combines them from the module's scratch rows (128 splits x
// (64 values, max, sum) f32).
// CHECK-DAG: .global .align 4 .b8 attention_arrivals[512];
// CHECK-DAG: .global .align 4 .b8 attention_parts[33792];
// CHECK-DAG: %nctaid.z
// CHECK-DAG: atom{{.*}}.global.add.u32
// ART: target:          cuda-linux cpu=sm_90
// ART: qmatmul
// ART: rope
// ART: cache_write
// ART: cached_attention
// RUN: %if ptxas %{ maxc compile %s --target cuda:sm_80 --emit ptx -o %t.80.ptx %}
// RUN: %if ptxas %{ %python %inputs/ptxas_each.py %ptxas sm_80 %t.80.ptx | FileCheck %s --check-prefix=PTXAS %}
// RUN: %if ptxas %{ maxc compile %s --target cuda:sm_89 --emit ptx -o %t.89.ptx %}
// RUN: %if ptxas %{ %python %inputs/ptxas_each.py %ptxas sm_89 %t.89.ptx | FileCheck %s --check-prefix=PTXAS %}
// RUN: %if ptxas %{ %python %inputs/ptxas_each.py %ptxas sm_90a %t.90.ptx | FileCheck %s --check-prefix=PTXAS %}
// PTXAS: module(s) assembled
func.func @g(%x: tensor<?x64xf32> {max.name = "x"}, %wq: tensor<256x40xi8> {max.name = "wq"}, %wk: tensor<128x68xi8> {max.name = "wk"},
             %w4: tensor<8x144xi8> {max.name = "w4"}, %y: tensor<?x256xf32> {max.name = "y"}, %pos: tensor<?xi32> {max.name = "positions"},
             %st: tensor<?xi32> {max.name = "start"}, %sl: tensor<?xi32> {max.name = "slot"},
             %kc: tensor<2x?x?x2x64xf16> {max.name = "kc", max.dims = ["", "B", "T", "", ""]},
             %vc: tensor<2x?x?x2x64xf16> {max.name = "vc", max.dims = ["", "B", "T", "", ""]}) -> (tensor<?x4x64xf32>, tensor<?x8xf32>) {
  %q = "max.qmatmul"(%x, %wq) {format = "q4_1", quantize_input = true} : (tensor<?x64xf32>, tensor<256x40xi8>) -> tensor<?x256xf32>
  %k = "max.qmatmul"(%x, %wk) {format = "q8_0", quantize_input = true} : (tensor<?x64xf32>, tensor<128x68xi8>) -> tensor<?x128xf32>
  %q3 = "max.reshape"(%q) {shape = array<i64: -1, 4, 64>} : (tensor<?x256xf32>) -> tensor<?x4x64xf32>
  %k3 = "max.reshape"(%k) {shape = array<i64: -1, 2, 64>} : (tensor<?x128xf32>) -> tensor<?x2x64xf32>
  %qr = "max.rope"(%q3, %pos) {base = 1.0e4 : f64, interleaved = true} : (tensor<?x4x64xf32>, tensor<?xi32>) -> tensor<?x4x64xf32>
  %kr = "max.rope"(%k3, %pos) {base = 1.0e4 : f64, interleaved = false} : (tensor<?x2x64xf32>, tensor<?xi32>) -> tensor<?x2x64xf32>
  %kc2 = "max.cache_write"(%kc, %kr, %st, %sl) {layer = 1 : i64} : (tensor<2x?x?x2x64xf16>, tensor<?x2x64xf32>, tensor<?xi32>, tensor<?xi32>) -> tensor<2x?x?x2x64xf16>
  %a = "max.cached_attention"(%qr, %kc2, %vc, %st, %sl) {layer = 1 : i64} : (tensor<?x4x64xf32>, tensor<2x?x?x2x64xf16>, tensor<2x?x?x2x64xf16>, tensor<?xi32>, tensor<?xi32>) -> tensor<?x4x64xf32>
  %o4 = "max.qmatmul"(%y, %w4) {format = "q4_k"} : (tensor<?x256xf32>, tensor<8x144xi8>) -> tensor<?x8xf32>
  func.return %a, %o4 : tensor<?x4x64xf32>, tensor<?x8xf32>
}
