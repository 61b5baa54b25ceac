// A graph built from several op kinds, compiled and run on .npy data; NumPy checks it.
// RUN: maxc compile %s -o %t.maxa
// RUN: %python %inputs/npy.py random %t.x.npy 5,6 float32 1
// RUN: maxc run %t.maxa --input x=%t.x.npy --output %t.y.npy --output 1=%t.z.npy
// RUN: %python -c "import numpy as np; x = np.load('%t.x.npy'); t = np.tanh(x.T) * 2.0; np.save('%t.ref_y.npy', t.reshape(-1, 10)); np.save('%t.ref_z.npy', x.sum(axis=0))"
// RUN: %python %inputs/npy.py close %t.y.npy %t.ref_y.npy
// RUN: %python %inputs/npy.py close %t.z.npy %t.ref_z.npy
func.func @g(%x: tensor<?x6xf32> {max.name = "x"}) -> (tensor<?x10xf32>, tensor<6xf32>) {
  %two = "max.constant"() {value = dense<2.0> : tensor<f32>} : () -> tensor<f32>
  %t = "max.transpose"(%x) {perm = array<i64: 1, 0>} : (tensor<?x6xf32>) -> tensor<6x?xf32>
  %h = "max.tanh"(%t) : (tensor<6x?xf32>) -> tensor<6x?xf32>
  %m = "max.mul"(%h, %two) : (tensor<6x?xf32>, tensor<f32>) -> tensor<6x?xf32>
  %r = "max.reshape"(%m) {shape = array<i64: -1, 10>} : (tensor<6x?xf32>) -> tensor<?x10xf32>
  %s = "max.reduce_sum"(%x) {axes = array<i64: 0>} : (tensor<?x6xf32>) -> tensor<6xf32>
  func.return %r, %s : tensor<?x10xf32>, tensor<6xf32>
}
