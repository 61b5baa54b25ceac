// A module with two graphs: two entries share one kernel library; weights of the same name
// but different data stay separate; each entry runs by name.
// RUN: maxc compile %s -o %t.maxa
// RUN: maxc inspect %t.maxa | FileCheck %s
// RUN: %python %inputs/npy.py random %t.x.npy 2,4 float32
// RUN: maxc run %t.maxa --entry first --input x=%t.x.npy --output %t.a.npy
// RUN: maxc run %t.maxa --entry second --input x=%t.x.npy --output %t.b.npy
// RUN: %python -c "import numpy as np; a, b = np.load('%t.a.npy'), np.load('%t.b.npy'); assert a.shape == b.shape == (2, 4); assert not np.allclose(a, b), 'entries share one weight'"
// CHECK: entry first:
// CHECK: entry second:
// CHECK: weight:w
// CHECK: weight:w#2
module {
  func.func @first(%x: tensor<?x4xf32> {max.name = "x"}) -> tensor<?x4xf32> {
    %w = "max.weight"() {name = "w", init = "uniform", scale = 1.0 : f64, seed = 1 : i64} : () -> tensor<4xf32>
    %0 = "max.mul"(%x, %w) : (tensor<?x4xf32>, tensor<4xf32>) -> tensor<?x4xf32>
    func.return %0 : tensor<?x4xf32>
  }
  func.func @second(%x: tensor<?x4xf32> {max.name = "x"}) -> tensor<?x4xf32> {
    %w = "max.weight"() {name = "w", init = "uniform", scale = 1.0 : f64, seed = 2 : i64} : () -> tensor<4xf32>
    %0 = "max.mul"(%x, %w) : (tensor<?x4xf32>, tensor<4xf32>) -> tensor<?x4xf32>
    func.return %0 : tensor<?x4xf32>
  }
}
