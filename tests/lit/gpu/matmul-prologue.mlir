// On sm_90, a projection whose A a kernel of its own computed is one dispatch: after an
// rms_norm (`cast(rms_norm(x, w)) @ b`, epilogue and all; @proj, and with static rows,
// @static_rows) or elementwise ops (`cast(silu(gate) * up) @ b`, the split of the merged
// gate/up read in place; @ffn). For 1-4 rows the matrix-vector kernels compute A themselves
// (A's chunk in shared memory); other row counts compute A into a temporary (the row
// kernel, or a thread per element), then run the matmul. sm_80 (no matrix-vector kernel)
// keeps A's own dispatch, as does an A that something else reads too (@shared). A quantized
// matmul rounding its activations takes a computed A on every chip (@quant: its few-rows
// kernel stages the block's row of A in shared memory), and its residual add as epilogue.
// benches/gpu/prepare.sh checks the results against the CPU's (test_ops.py
// test_rms_norm_into_matmul, test_silu_mul_into_matmul).
// RUN: maxc compile %s --target cuda:sm_90 --emit llvm-dialect | FileCheck %s
// RUN: maxc compile %s --target cuda:sm_90 -o %t.maxa && maxc inspect %t.maxa | FileCheck %s --check-prefix=ART
// RUN: maxc compile %s --target cuda:sm_80 -o %t.80.maxa && maxc inspect %t.80.maxa | FileCheck %s --check-prefix=SM80
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=PTX
// RUN: %if ptxas %{ maxc compile %s --target cuda:sm_90 --emit ptx -o %t.90.ptx %}
// RUN: %if ptxas %{ %python %inputs/ptxas_each.py %ptxas sm_90a %t.90.ptx | FileCheck %s --check-prefix=PTXAS %}
// CHECK-LABEL: llvm.func @proj_k0_rms_norm_cast_matmul_cast_add(
// CHECK: gpu.launch_func {{.*}}@proj_k0_rms_norm_cast_matmul_cast_add_llm::@gemv1 blocks
// CHECK: gpu.launch_func {{.*}}@proj_k0_rms_norm_cast_matmul_cast_add_llm::@gemv blocks
// CHECK: llvm.call @proj_k0_rms_norm_cast_matmul_cast_add_norm(
// CHECK: llvm.call @proj_k0_rms_norm_cast_matmul_cast_add_mm(
// CHECK: llvm.return
// CHECK-LABEL: llvm.func @proj_k0_rms_norm_cast_matmul_cast_add_norm(
// CHECK: gpu.launch_func {{.*}}::@rows blocks
// The matmul's own function has no matrix-vector path (the dispatch took 1-4 rows itself).
// CHECK-LABEL: llvm.func @proj_k0_rms_norm_cast_matmul_cast_add_mm(
// CHECK-NOT: ::@gemv
// CHECK: _mm_wgmma::@mm blocks
// CHECK-LABEL: llvm.func @ffn_k{{[0-9]+}}_split_silu_mul_cast_matmul_cast_add(
// CHECK: gpu.launch_func {{.*}}_llm::@gemv1 blocks
// CHECK: gpu.launch_func {{.*}}_llm::@gemv blocks
// CHECK: gpu.launch_func {{.*}}_llm::@compute_a blocks
// CHECK: llvm.call @ffn_k{{[0-9]+}}_split_silu_mul_cast_matmul_cast_add_mm(
// CHECK: llvm.return
// CHECK-LABEL: llvm.func @quant_k{{[0-9]+}}_rms_norm_qmatmul_add(
// CHECK: gpu.launch_func {{.*}}_llm::@qmatmul_few blocks
// CHECK: llvm.call @quant_k{{[0-9]+}}_rms_norm_qmatmul_add_norm(
// CHECK: llvm.call @quant_k{{[0-9]+}}_rms_norm_qmatmul_add_mm(
// CHECK: llvm.return
// PTX-DAG: .entry gemv1(
// Every workgroup buffer (the reduction slots, A's chunk, the norm's block slots) is
// 16-byte aligned: LLVM reads them as 16-byte vectors.
// PTX-DAG: .shared .align 16 .b8 __wg_gemv1_1[
// PTX-DAG: .shared .align 16 .b8 __wg_gemv1_2[
// PTX-DAG: .shared .align 16 .b8 __wg_gemv1_3[
// PTX-NOT: .shared .align 4 .b8
// PTX: bar.sync
// PTX: rsqrt.approx
// PTXAS: module(s) assembled
// ART: entry proj
// ART: dispatches 1
// ART-NEXT: _rms_norm_cast_matmul_cast_add  bindings=[0, 1, 2, 3, 4]
// ART: entry ffn
// ART: dispatches 1
// ART-NEXT: _split_silu_mul_cast_matmul_cast_add  bindings=[0, 1, 2, 3]
// ART: entry static_rows
// ART: dispatches 1
// ART-NEXT: _rms_norm_cast_matmul  bindings
// ART: entry quant
// ART: dispatches 1
// ART-NEXT: _rms_norm_qmatmul_add  bindings=[0, 1, 2, 3, 4]
// ART: entry shared
// ART: dispatches 2
// ART-NEXT: _rms_norm_cast  bindings
// ART-NEXT: _matmul  bindings
// SM80: entry proj
// SM80: dispatches 2
// SM80-NEXT: _rms_norm_cast  bindings
// SM80-NEXT: _matmul_cast_add  bindings
// SM80: entry quant
// SM80: dispatches 1
// SM80-NEXT: _rms_norm_qmatmul_add
module {
func.func @proj(%x: tensor<?x256xf32> {max.name = "x"}, %w: tensor<256xf32> {max.name = "w"}, %b: tensor<256x64xbf16> {max.name = "b"},
                %r: tensor<?x64xf32> {max.name = "r"}) -> (tensor<?x64xf32>) {
  %n = "max.rms_norm"(%x, %w) {epsilon = 1.0e-5 : f64} : (tensor<?x256xf32>, tensor<256xf32>) -> tensor<?x256xf32>
  %h = "max.cast"(%n) : (tensor<?x256xf32>) -> tensor<?x256xbf16>
  %y = "max.matmul"(%h, %b) : (tensor<?x256xbf16>, tensor<256x64xbf16>) -> tensor<?x64xbf16>
  %y32 = "max.cast"(%y) : (tensor<?x64xbf16>) -> tensor<?x64xf32>
  %o = "max.add"(%y32, %r) : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  func.return %o : tensor<?x64xf32>
}

func.func @ffn(%gu: tensor<?x512xf32> {max.name = "gu"}, %b: tensor<256x64xbf16> {max.name = "b"}, %r: tensor<?x64xf32> {max.name = "r"}) -> (tensor<?x64xf32>) {
  %g, %u = "max.split"(%gu) {axis = 1 : i64, sizes = array<i64: 256, 256>} : (tensor<?x512xf32>) -> (tensor<?x256xf32>, tensor<?x256xf32>)
  %s = "max.silu"(%g) : (tensor<?x256xf32>) -> tensor<?x256xf32>
  %m = "max.mul"(%s, %u) : (tensor<?x256xf32>, tensor<?x256xf32>) -> tensor<?x256xf32>
  %h = "max.cast"(%m) : (tensor<?x256xf32>) -> tensor<?x256xbf16>
  %y = "max.matmul"(%h, %b) : (tensor<?x256xbf16>, tensor<256x64xbf16>) -> tensor<?x64xbf16>
  %y32 = "max.cast"(%y) : (tensor<?x64xbf16>) -> tensor<?x64xf32>
  %o = "max.add"(%y32, %r) : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  func.return %o : tensor<?x64xf32>
}

func.func @static_rows(%x: tensor<2x256xf32> {max.name = "x"}, %w: tensor<256xf32> {max.name = "w"}, %b: tensor<256x64xbf16> {max.name = "b"}) -> (tensor<2x64xbf16>) {
  %n = "max.rms_norm"(%x, %w) {epsilon = 1.0e-5 : f64} : (tensor<2x256xf32>, tensor<256xf32>) -> tensor<2x256xf32>
  %h = "max.cast"(%n) : (tensor<2x256xf32>) -> tensor<2x256xbf16>
  %y = "max.matmul"(%h, %b) : (tensor<2x256xbf16>, tensor<256x64xbf16>) -> tensor<2x64xbf16>
  func.return %y : tensor<2x64xbf16>
}

func.func @quant(%x: tensor<?x256xf32> {max.name = "x"}, %g: tensor<256xf32> {max.name = "g"}, %w: tensor<30x160xi8> {max.name = "w"},
                 %r: tensor<?x30xf32> {max.name = "r"}) -> (tensor<?x30xf32>) {
  %n = "max.rms_norm"(%x, %g) {epsilon = 1.0e-5 : f64} : (tensor<?x256xf32>, tensor<256xf32>) -> tensor<?x256xf32>
  %q = "max.qmatmul"(%n, %w) {format = "q4_1", quantize_input = true} : (tensor<?x256xf32>, tensor<30x160xi8>) -> tensor<?x30xf32>
  %o = "max.add"(%r, %q) : (tensor<?x30xf32>, tensor<?x30xf32>) -> tensor<?x30xf32>
  func.return %o : tensor<?x30xf32>
}

func.func @shared(%x: tensor<?x256xf32> {max.name = "x"}, %w: tensor<256xf32> {max.name = "w"}, %b: tensor<256x64xbf16> {max.name = "b"}) -> (tensor<?x64xbf16>, tensor<?x256xbf16>) {
  %n = "max.rms_norm"(%x, %w) {epsilon = 1.0e-5 : f64} : (tensor<?x256xf32>, tensor<256xf32>) -> tensor<?x256xf32>
  %h = "max.cast"(%n) : (tensor<?x256xf32>) -> tensor<?x256xbf16>
  %y = "max.matmul"(%h, %b) : (tensor<?x256xbf16>, tensor<256x64xbf16>) -> tensor<?x64xbf16>
  func.return %y, %h : tensor<?x64xbf16>, tensor<?x256xbf16>
}
}
