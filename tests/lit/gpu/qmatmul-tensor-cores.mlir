// A quantized matmul of 16 rows or more (prefill, a serving batch) runs on the tensor cores: the
// activations are rounded to 8 bits as the quantized kernels round them, then to f16
// (@to_half, a block per row: a row reaching 2^15 is divided by a power of two first, so
// it fits f16), the weights decoded from their GGUF blocks to an f16 [K, N] copy
// (@dequantize), then an f16 matmul that multiplies each row back by its scale before the
// quantized matmul's epilogue (here the residual add): wgmma on sm_90 for N a multiple of
// 8, mma.sync otherwise and on sm_80.
// Fewer rows keep the quantized kernels (@qmatmul_few, @quantize + @qmatmul).
// benches/gpu/prepare.sh checks the results against the CPU's (test_ops.py
// test_qmatmul_tensor_cores).
// RUN: maxc compile %s --target cuda:sm_90 --emit llvm-dialect | FileCheck %s
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=PTX
// RUN: maxc compile %s --target cuda:sm_80 --emit ptx | FileCheck %s --check-prefix=SM80
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=HALF
// RUN: %if ptxas %{ maxc compile %s --target cuda:sm_90 --emit ptx -o %t.90.ptx %}
// RUN: %if ptxas %{ %python %inputs/ptxas_each.py %ptxas sm_90a %t.90.ptx | FileCheck %s --check-prefix=PTXAS %}
// RUN: %if ptxas %{ maxc compile %s --target cuda:sm_80 --emit ptx -o %t.80.ptx %}
// RUN: %if ptxas %{ %python %inputs/ptxas_each.py %ptxas sm_80 %t.80.ptx | FileCheck %s --check-prefix=PTXAS %}
// CHECK-LABEL: llvm.func @g_k0_qmatmul_add(
// CHECK: gpu.launch_func {{.*}}_llm::@qmatmul_few blocks
// CHECK: llvm.icmp "uge" {{.*}}
// CHECK: gpu.launch_func {{.*}}_llm::@to_half blocks in ([[M:%[0-9]+]], {{.*}}, [[M]] : i64)
// CHECK: gpu.launch_func {{.*}}_llm::@dequantize blocks
// CHECK: llvm.call @g_k0_qmatmul_add_tc(
// CHECK: gpu.launch_func {{.*}}_llm::@quantize blocks
// CHECK: gpu.launch_func {{.*}}_llm::@qmatmul blocks
// CHECK-LABEL: llvm.func @g_k0_qmatmul_add_tc(
// CHECK: _tc_wgmma::@mm blocks
// PTX-DAG: .entry to_half(
// PTX-DAG: .entry dequantize(
// PTX-DAG: cvt.rn.f16.f32
// PTX-DAG: wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16
// SM80-DAG: .entry to_half(
// SM80-DAG: .entry dequantize(
// SM80-DAG: mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32
// SM80-NOT: wgmma
// @to_half: a block per row (here 8 32-blocks: one warp), the row's 16-byte vectors (two a
// thread) loaded once and kept in registers; its largest magnitude over the block
// (shuffles, then the warps' slots); the scale's biased exponent (at least 127 + 14: rows
// under 2^15 keep a scale of 1), stored by one thread; each 32-block's largest magnitude
// over its 8 lanes; values times the scale's inverse, rounded to f16 in pairs, 8 bytes a
// lane.
// HALF-LABEL: .entry to_half(
// HALF: .maxntid 32, 1, 1
// HALF-COUNT-2: ld.global.v4.b32
// HALF: shfl.sync.bfly.b32 {{%r[0-9]+}}, {{%r[0-9]+}}, 16, 31, -1;
// HALF: bar.sync
// HALF: max.u32 {{%r[0-9]+}}, {{%r[0-9]+}}, 141;
// HALF: st.global.b32
// HALF: rcp.rn.f32
// HALF: shfl.sync.bfly.b32 {{%r[0-9]+}}, {{%r[0-9]+}}, 4, 31, -1;
// HALF: cvt.rn.f16x2.f32
// HALF: st.global.v2.b32
// HALF-NOT: ld.global
// HALF-LABEL: .entry dequantize(
// PTXAS: module(s) assembled
func.func @g(%x: tensor<?x256xf32> {max.name = "x"}, %w: tensor<64x160xi8> {max.name = "w"},
             %r: tensor<?x64xf32> {max.name = "r"}) -> tensor<?x64xf32> {
  %q = "max.qmatmul"(%x, %w) {format = "q4_1", quantize_input = true} : (tensor<?x256xf32>, tensor<64x160xi8>) -> tensor<?x64xf32>
  %y = "max.add"(%r, %q) : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  func.return %y : tensor<?x64xf32>
}
