// `max run` on an entry with mutable inputs (a KV cache): they are state the call updates
// in place, and `--output NAME=FILE` with a mutable input's name writes its value after the
// call. Here the write puts k at [layer 1, slot 0, position 2] of the cache and nowhere else.
// RUN: maxc compile %s -o %t.maxa
// RUN: %python %inputs/npy.py random %t.q.npy 1,4,8 float32 1
// RUN: %python %inputs/npy.py random %t.k.npy 1,2,8 float32 2
// RUN: %python %inputs/npy.py values %t.pos.npy 2 int32
// RUN: %python %inputs/npy.py values %t.slot.npy 0 int32
// RUN: %python %inputs/npy.py zeros %t.kc.npy 2,1,4,2,8 float16
// RUN: %python %inputs/npy.py random %t.vc.npy 2,1,4,2,8 float16 3
// RUN: max run %t.maxa --input q=%t.q.npy --input k=%t.k.npy --input pos=%t.pos.npy --input slot=%t.slot.npy --input kc=%t.kc.npy --input vc=%t.vc.npy --output %t.out.npy --output kc=%t.kc.after.npy
// RUN: %python %inputs/npy.py cache-row %t.kc.after.npy %t.k.npy 1 0 2 | FileCheck %s
// CHECK: cache row ok
// RUN: not max run %t.maxa --input q=%t.q.npy --input k=%t.k.npy --input pos=%t.pos.npy --input slot=%t.slot.npy --input kc=%t.kc.npy --input vc=%t.vc.npy --output nosuch=%t.x.npy 2>&1 | FileCheck %s --check-prefix=BAD
// BAD: entry 'g' has no output 'nosuch'
func.func @g(%q: tensor<?x4x8xf32> {max.name = "q"}, %k: tensor<?x2x8xf32> {max.name = "k"}, %p: tensor<?xi32> {max.name = "pos"},
             %s: tensor<?xi32> {max.name = "slot"}, %kc: tensor<2x?x?x2x8xf16> {max.name = "kc", max.dims = ["", "B", "T", "", ""]},
             %vc: tensor<2x?x?x2x8xf16> {max.name = "vc", max.dims = ["", "B", "T", "", ""]}) -> tensor<?x4x8xf32> {
  %kc2 = "max.cache_write"(%kc, %k, %p, %s) {layer = 1 : i64} : (tensor<2x?x?x2x8xf16>, tensor<?x2x8xf32>, tensor<?xi32>, tensor<?xi32>) -> tensor<2x?x?x2x8xf16>
  %0 = "max.cached_attention"(%q, %kc2, %vc, %p, %s) {layer = 1 : i64} : (tensor<?x4x8xf32>, tensor<2x?x?x2x8xf16>, tensor<2x?x?x2x8xf16>, tensor<?xi32>, tensor<?xi32>) -> tensor<?x4x8xf32>
  func.return %0 : tensor<?x4x8xf32>
}
