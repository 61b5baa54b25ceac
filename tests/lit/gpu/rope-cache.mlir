// On a GPU, the RoPE of q and k and the K/V cache writes that an attention reads are one
// kernel (one launch), reading q, k and v where they are: column slices of a merged q/k/v
// projection (layer 0; the split is never stored) or separate projections (layer 1). The
// CPU keeps its kernels. A rotated k that something else reads stays apart (@kept), and so
// does an attention reading one cache as both K and V (@same_cache).
// benches/gpu/prepare.sh checks the kernel's results against the CPU's (case rope_cache).
// REQUIRES: libdevice
// RUN: maxc compile %s --target cuda:sm_90 --emit llvm-dialect | FileCheck %s
// RUN: maxc compile %s --target cuda:sm_90 -o %t.maxa && maxc inspect %t.maxa | FileCheck %s --check-prefix=ART
// RUN: maxc compile %s -o %t.cpu.maxa && maxc inspect %t.cpu.maxa | FileCheck %s --check-prefix=CPU
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=PTX
// The later entries run on the CPU (RoPE's workgroup count is in their own dims; an
// attention reading one cache twice binds it twice).
// RUN: %python %inputs/npy.py random %t.q.npy 2,4,64 float32
// RUN: %python %inputs/npy.py random %t.k.npy 2,2,64 float32 1
// RUN: %python %inputs/npy.py values %t.pos.npy 3,4 int32
// RUN: %python %inputs/npy.py values %t.start.npy 3 int32
// RUN: %python %inputs/npy.py values %t.slot.npy 0 int32
// RUN: %python %inputs/npy.py zeros %t.kc.npy 2,1,8,2,64 float16
// RUN: max run %t.cpu.maxa --entry same_cache --input q=%t.q.npy --input k=%t.k.npy --input positions=%t.pos.npy --input start=%t.start.npy --input slot=%t.slot.npy --input kc=%t.kc.npy --output %t.out.npy
// RUN: %if ptxas %{ maxc compile %s --target cuda:sm_80 --emit ptx -o %t.80.ptx %}
// RUN: %if ptxas %{ %python %inputs/ptxas_each.py %ptxas sm_80 %t.80.ptx | FileCheck %s --check-prefix=PTXAS %}
// CHECK-LABEL: llvm.func @layers_k1_split_rope_rope_cache_write_cache_write(
// CHECK: gpu.launch_func {{.*}}@layers_k1_split_rope_rope_cache_write_cache_write_llm::@rope_cache blocks
// CHECK-NOT: gpu.launch_func
// CHECK: llvm.return
// CHECK-LABEL: llvm.func @layers_k{{[0-9]+}}_rope_rope_cache_write_cache_write(
// CHECK: gpu.launch_func {{.*}}::@rope_cache blocks
// CHECK-NOT: gpu.launch_func
// CHECK: llvm.return
// PTX: .entry rope_cache(
// PTXAS: module(s) assembled
// ART: entry layers
// ART: buffers {{[0-9]+}}  dispatches 8
// ART-NEXT: _matmul
// ART-NEXT: _split_rope_rope_cache_write_cache_write  bindings
// ART-NEXT: _cached_attention
// ART-NEXT: _matmul
// ART-NEXT: _matmul
// ART-NEXT: _matmul
// ART-NEXT: _rope_rope_cache_write_cache_write  bindings
// ART-NEXT: _cached_attention
// ART: entry kept
// ART: dispatches 6
// ART-NEXT: _split
// ART-NEXT: _rope
// ART-NEXT: _rope
// ART-NEXT: _cache_write
// ART-NEXT: _cache_write
// ART: entry same_cache
// ART: dispatches 4
// ART-NEXT: _rope
// ART-NEXT: _rope
// ART-NEXT: _cache_write
// ART-NEXT: _cached_attention  bindings=[[[B:[0-9]+]], [[C:[0-9]+]], [[C]],
// CPU: entry layers
// CPU: dispatches 15
// CPU-NOT: rope_rope
module {
func.func @layers(%x: tensor<?x64xf32> {max.name = "x"}, %w0: tensor<64x512xf32> {max.name = "w0"},
                  %wq: tensor<64x256xf32> {max.name = "wq"}, %wk: tensor<64x128xf32> {max.name = "wk"}, %wv: tensor<64x128xf32> {max.name = "wv"},
                  %pos: tensor<?xi32> {max.name = "positions"}, %st: tensor<?xi32> {max.name = "start"}, %sl: tensor<?xi32> {max.name = "slot"},
                  %kc: tensor<2x?x?x2x64xf16> {max.name = "kc", max.dims = ["", "B", "T", "", ""]},
                  %vc: tensor<2x?x?x2x64xf16> {max.name = "vc", max.dims = ["", "B", "T", "", ""]}) -> (tensor<?x4x64xf32>, tensor<?x4x64xf32>) {
  %qkv = "max.matmul"(%x, %w0) : (tensor<?x64xf32>, tensor<64x512xf32>) -> tensor<?x512xf32>
  %q, %k, %v = "max.split"(%qkv) {axis = 1 : i64, sizes = array<i64: 256, 128, 128>} : (tensor<?x512xf32>) -> (tensor<?x256xf32>, tensor<?x128xf32>, tensor<?x128xf32>)
  %q3 = "max.reshape"(%q) {shape = array<i64: -1, 4, 64>} : (tensor<?x256xf32>) -> tensor<?x4x64xf32>
  %k3 = "max.reshape"(%k) {shape = array<i64: -1, 2, 64>} : (tensor<?x128xf32>) -> tensor<?x2x64xf32>
  %v3 = "max.reshape"(%v) {shape = array<i64: -1, 2, 64>} : (tensor<?x128xf32>) -> tensor<?x2x64xf32>
  %qr = "max.rope"(%q3, %pos) {base = 1.0e4 : f64, interleaved = false} : (tensor<?x4x64xf32>, tensor<?xi32>) -> tensor<?x4x64xf32>
  %kr = "max.rope"(%k3, %pos) {base = 1.0e4 : f64, interleaved = false} : (tensor<?x2x64xf32>, tensor<?xi32>) -> tensor<?x2x64xf32>
  %kc1 = "max.cache_write"(%kc, %kr, %st, %sl) {layer = 0 : i64} : (tensor<2x?x?x2x64xf16>, tensor<?x2x64xf32>, tensor<?xi32>, tensor<?xi32>) -> tensor<2x?x?x2x64xf16>
  %vc1 = "max.cache_write"(%vc, %v3, %st, %sl) {layer = 0 : i64} : (tensor<2x?x?x2x64xf16>, tensor<?x2x64xf32>, tensor<?xi32>, tensor<?xi32>) -> tensor<2x?x?x2x64xf16>
  %a0 = "max.cached_attention"(%qr, %kc1, %vc1, %st, %sl) {layer = 0 : i64} : (tensor<?x4x64xf32>, tensor<2x?x?x2x64xf16>, tensor<2x?x?x2x64xf16>, tensor<?xi32>, tensor<?xi32>) -> tensor<?x4x64xf32>
  %q1 = "max.matmul"(%x, %wq) : (tensor<?x64xf32>, tensor<64x256xf32>) -> tensor<?x256xf32>
  %k1 = "max.matmul"(%x, %wk) : (tensor<?x64xf32>, tensor<64x128xf32>) -> tensor<?x128xf32>
  %v1 = "max.matmul"(%x, %wv) : (tensor<?x64xf32>, tensor<64x128xf32>) -> tensor<?x128xf32>
  %q13 = "max.reshape"(%q1) {shape = array<i64: -1, 4, 64>} : (tensor<?x256xf32>) -> tensor<?x4x64xf32>
  %k13 = "max.reshape"(%k1) {shape = array<i64: -1, 2, 64>} : (tensor<?x128xf32>) -> tensor<?x2x64xf32>
  %v13 = "max.reshape"(%v1) {shape = array<i64: -1, 2, 64>} : (tensor<?x128xf32>) -> tensor<?x2x64xf32>
  %qr1 = "max.rope"(%q13, %pos) {base = 5.0e5 : f64, interleaved = true} : (tensor<?x4x64xf32>, tensor<?xi32>) -> tensor<?x4x64xf32>
  %kr1 = "max.rope"(%k13, %pos) {base = 5.0e5 : f64, interleaved = true} : (tensor<?x2x64xf32>, tensor<?xi32>) -> tensor<?x2x64xf32>
  %kc2 = "max.cache_write"(%kc1, %kr1, %st, %sl) {layer = 1 : i64} : (tensor<2x?x?x2x64xf16>, tensor<?x2x64xf32>, tensor<?xi32>, tensor<?xi32>) -> tensor<2x?x?x2x64xf16>
  %vc2 = "max.cache_write"(%vc1, %v13, %st, %sl) {layer = 1 : i64} : (tensor<2x?x?x2x64xf16>, tensor<?x2x64xf32>, tensor<?xi32>, tensor<?xi32>) -> tensor<2x?x?x2x64xf16>
  %a1 = "max.cached_attention"(%qr1, %kc2, %vc2, %st, %sl) {layer = 1 : i64} : (tensor<?x4x64xf32>, tensor<2x?x?x2x64xf16>, tensor<2x?x?x2x64xf16>, tensor<?xi32>, tensor<?xi32>) -> tensor<?x4x64xf32>
  func.return %a0, %a1 : tensor<?x4x64xf32>, tensor<?x4x64xf32>
}

func.func @kept(%qkv: tensor<?x512xf32> {max.name = "qkv"}, %pos: tensor<?xi32> {max.name = "positions"}, %st: tensor<?xi32> {max.name = "start"}, %sl: tensor<?xi32> {max.name = "slot"},
                %kc: tensor<2x?x?x2x64xf16> {max.name = "kc", max.dims = ["", "B", "T", "", ""]},
                %vc: tensor<2x?x?x2x64xf16> {max.name = "vc", max.dims = ["", "B", "T", "", ""]}) -> (tensor<?x4x64xf32>, tensor<?x2x64xf32>) {
  %q, %k, %v = "max.split"(%qkv) {axis = 1 : i64, sizes = array<i64: 256, 128, 128>} : (tensor<?x512xf32>) -> (tensor<?x256xf32>, tensor<?x128xf32>, tensor<?x128xf32>)
  %q3 = "max.reshape"(%q) {shape = array<i64: -1, 4, 64>} : (tensor<?x256xf32>) -> tensor<?x4x64xf32>
  %k3 = "max.reshape"(%k) {shape = array<i64: -1, 2, 64>} : (tensor<?x128xf32>) -> tensor<?x2x64xf32>
  %v3 = "max.reshape"(%v) {shape = array<i64: -1, 2, 64>} : (tensor<?x128xf32>) -> tensor<?x2x64xf32>
  %qr = "max.rope"(%q3, %pos) {base = 1.0e4 : f64, interleaved = false} : (tensor<?x4x64xf32>, tensor<?xi32>) -> tensor<?x4x64xf32>
  %kr = "max.rope"(%k3, %pos) {base = 1.0e4 : f64, interleaved = false} : (tensor<?x2x64xf32>, tensor<?xi32>) -> tensor<?x2x64xf32>
  %kc1 = "max.cache_write"(%kc, %kr, %st, %sl) {layer = 0 : i64} : (tensor<2x?x?x2x64xf16>, tensor<?x2x64xf32>, tensor<?xi32>, tensor<?xi32>) -> tensor<2x?x?x2x64xf16>
  %vc1 = "max.cache_write"(%vc, %v3, %st, %sl) {layer = 0 : i64} : (tensor<2x?x?x2x64xf16>, tensor<?x2x64xf32>, tensor<?xi32>, tensor<?xi32>) -> tensor<2x?x?x2x64xf16>
  %a0 = "max.cached_attention"(%qr, %kc1, %vc1, %st, %sl) {layer = 0 : i64} : (tensor<?x4x64xf32>, tensor<2x?x?x2x64xf16>, tensor<2x?x?x2x64xf16>, tensor<?xi32>, tensor<?xi32>) -> tensor<?x4x64xf32>
  func.return %a0, %kr : tensor<?x4x64xf32>, tensor<?x2x64xf32>
}

func.func @same_cache(%q: tensor<?x4x64xf32> {max.name = "q"}, %k: tensor<?x2x64xf32> {max.name = "k"}, %pos: tensor<?xi32> {max.name = "positions"},
                      %st: tensor<?xi32> {max.name = "start"}, %sl: tensor<?xi32> {max.name = "slot"},
                      %kc: tensor<2x?x?x2x64xf16> {max.name = "kc", max.dims = ["", "B", "T", "", ""]}) -> (tensor<?x4x64xf32>) {
  %qr = "max.rope"(%q, %pos) {base = 1.0e4 : f64, interleaved = false} : (tensor<?x4x64xf32>, tensor<?xi32>) -> tensor<?x4x64xf32>
  %kr = "max.rope"(%k, %pos) {base = 1.0e4 : f64, interleaved = false} : (tensor<?x2x64xf32>, tensor<?xi32>) -> tensor<?x2x64xf32>
  %kc1 = "max.cache_write"(%kc, %kr, %st, %sl) {layer = 0 : i64} : (tensor<2x?x?x2x64xf16>, tensor<?x2x64xf32>, tensor<?xi32>, tensor<?xi32>) -> tensor<2x?x?x2x64xf16>
  %a0 = "max.cached_attention"(%qr, %kc1, %kc1, %st, %sl) {layer = 0 : i64} : (tensor<?x4x64xf32>, tensor<2x?x?x2x64xf16>, tensor<2x?x?x2x64xf16>, tensor<?xi32>, tensor<?xi32>) -> tensor<?x4x64xf32>
  func.return %a0 : tensor<?x4x64xf32>
}
}
