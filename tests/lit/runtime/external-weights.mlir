// --external-weights leaves weight data out of the artifact; the runtime takes it from a
// .safetensors file or generates it, and says what to do when it has neither.
// RUN: maxc compile %s --external-weights -o %t.maxa
// RUN: max inspect %t.maxa | FileCheck %s --check-prefix=INSPECT
// INSPECT: weights:         0 B in 0 section(s)
// INSPECT: external:        {{.*}} in 1 weight(s), supplied at load
// INSPECT: weight:w {{.*}}External
// RUN: %python %inputs/npy.py random %t.x.npy 3,4 float32
// RUN: not max run %t.maxa --input x=%t.x.npy 2>&1 | FileCheck %s --check-prefix=MISSING
// MISSING: the artifact's weight(s) w are not in the file (it was compiled with --external-weights)
// RUN: max run %t.maxa --input x=%t.x.npy --random-weights 1 --output %t.a.npy
// RUN: max run %t.maxa --input x=%t.x.npy --random-weights 1 --output %t.b.npy
// RUN: cmp %t.a.npy %t.b.npy
// RUN: %python -c "import numpy as np, struct, json; w = np.arange(8, dtype=np.float32).reshape(4, 2); h = json.dumps({'w': {'dtype': 'F32', 'shape': [4, 2], 'data_offsets': [0, 32]}}).encode(); h += b' ' * (-len(h) % 8); open('%t.w.safetensors', 'wb').write(struct.pack('<Q', len(h)) + h + w.tobytes())"
// RUN: max run %t.maxa --input x=%t.x.npy --weights %t.w.safetensors --output %t.y.npy
// RUN: %python -c "import numpy as np; x = np.load('%t.x.npy'); np.testing.assert_allclose(np.load('%t.y.npy'), x @ np.arange(8, dtype=np.float32).reshape(4, 2), rtol=1e-6)"
func.func @g(%x: tensor<?x4xf32> {max.name = "x"}) -> tensor<?x2xf32> {
  %w = "max.weight"() {name = "w"} : () -> tensor<4x2xf32>
  %y = "max.matmul"(%x, %w) : (tensor<?x4xf32>, tensor<4x2xf32>) -> tensor<?x2xf32>
  func.return %y : tensor<?x2xf32>
}
