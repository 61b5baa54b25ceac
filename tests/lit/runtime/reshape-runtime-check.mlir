// A reshape whose -1 cannot be proven at compile time (6*n/10) is checked at run time.
// RUN: maxc compile %s -o %t.maxa
// RUN: %python %inputs/npy.py random %t.ok.npy 5,6 float32
// RUN: %python %inputs/npy.py random %t.bad.npy 3,6 float32
// RUN: maxc run %t.maxa --input x=%t.ok.npy | FileCheck %s --check-prefix=OK
// RUN: not maxc run %t.maxa --input x=%t.bad.npy 2>&1 | FileCheck %s --check-prefix=BAD
// OK: output0: f32[3, 10]
// BAD: maxc: error: a reshape from [6, 3] to [1, 10] changes the element count
func.func @g(%x: tensor<?x6xf32> {max.name = "x"}) -> tensor<?x10xf32> {
  %t = "max.transpose"(%x) {perm = array<i64: 1, 0>} : (tensor<?x6xf32>) -> tensor<6x?xf32>
  %r = "max.reshape"(%t) {shape = array<i64: -1, 10>} : (tensor<6x?xf32>) -> tensor<?x10xf32>
  func.return %r : tensor<?x10xf32>
}
