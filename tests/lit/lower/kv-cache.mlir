// The KV-cache kernels are memref-level: the write stores into the cache binding (the
// caller's buffer, which the result aliases) at [layer, slot, pos + s]; attention reads the
// cache per query up to its position, with f16 operands rounded as llama.cpp rounds them.
// RUN: maxc opt %s --pass-pipeline=lower-to-linalg | FileCheck %s
// RUN: maxc compile %s -o %t.maxa && maxc inspect %t.maxa | FileCheck %s --check-prefix=ART
// CHECK-LABEL: func.func @g_k0_cache_write(
// CHECK: scf.for
// CHECK: memref.load %{{.*}} : memref<?xi32>
// CHECK: arith.truncf %{{.*}} : f32 to f16
// CHECK: memref.store %{{.*}} : memref<2x?x?x2x8xf16>
// CHECK-LABEL: func.func @g_k1_cached_attention(
// CHECK: memref.alloca(%{{.*}}) : memref<?xf32>
// CHECK: arith.truncf %{{.*}} : vector<8xf32> to vector<8xf16>
// CHECK: arith.extf %{{.*}} : f32 to f64
// CHECK: vector.fma
// The cache is a mutable input; the write's result is the same buffer.
// ART: input   kc f16[2, B, T, 2, 8] (mutable)
// ART: cache_write  bindings=[4, 1, 2, 3, [[CACHE:[0-9]+]]]
// ART: cached_attention  bindings=[0, [[CACHE]], 5, 2, 3,
func.func @g(%q: tensor<?x4x8xf32> {max.name = "q"}, %k: tensor<?x2x8xf32> {max.name = "k"}, %p: tensor<?xi32> {max.name = "pos"},
             %s: tensor<?xi32> {max.name = "slot"}, %kc: tensor<2x?x?x2x8xf16> {max.name = "kc", max.dims = ["", "B", "T", "", ""]},
             %vc: tensor<2x?x?x2x8xf16> {max.name = "vc", max.dims = ["", "B", "T", "", ""]}) -> tensor<?x4x8xf32> {
  %kc2 = "max.cache_write"(%kc, %k, %p, %s) {layer = 1 : i64} : (tensor<2x?x?x2x8xf16>, tensor<?x2x8xf32>, tensor<?xi32>, tensor<?xi32>) -> tensor<2x?x?x2x8xf16>
  %0 = "max.cached_attention"(%q, %kc2, %vc, %p, %s) {layer = 1 : i64} : (tensor<?x4x8xf32>, tensor<2x?x?x2x8xf16>, tensor<2x?x?x2x8xf16>, tensor<?xi32>, tensor<?xi32>) -> tensor<?x4x8xf32>
  func.return %0 : tensor<?x4x8xf32>
}
