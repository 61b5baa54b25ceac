// Dims of different inputs that an op forces equal are unified into one symbol (here m
// becomes n through the mul); the artifact's signature shows the shared name, and the
// runtime checks that the inputs agree.
// RUN: maxc compile %s -o %t.maxa
// RUN: maxc inspect %t.maxa | FileCheck %s
// RUN: %python %inputs/npy.py random %t.a.npy 3,4 float32
// RUN: %python %inputs/npy.py random %t.b.npy 5,4 float32
// RUN: not maxc run %t.maxa --input a=%t.a.npy --input b=%t.a.npy --input c=%t.b.npy 2>&1 | FileCheck %s --check-prefix=MISMATCH

// CHECK: dynamic dims:    n{{$}}
// CHECK: input   a f32[n, 4]
// CHECK: input   b f32[n, 4]
// CHECK: input   c f32[n, 4]
// MISMATCH: input 'c' must have shape [n, 4] (dim 'n' is 3, from input 'a'), got [5, 4]
func.func @g(%a: tensor<?x4xf32> {max.name = "a", max.dims = ["n", ""]},
             %b: tensor<?x4xf32> {max.name = "b", max.dims = ["n", ""]},
             %c: tensor<?x4xf32> {max.name = "c", max.dims = ["m", ""]}) -> tensor<?x4xf32> {
  %0 = "max.add"(%a, %b) : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
  %1 = "max.mul"(%0, %c) : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
  func.return %1 : tensor<?x4xf32>
}
