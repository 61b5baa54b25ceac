// Wrong inputs at run time give clear errors naming what was expected (exit status 1).
// RUN: maxc compile %s -o %t.maxa
// RUN: %python %inputs/npy.py random %t.good.npy 3,4 float32
// RUN: %python %inputs/npy.py random %t.wrong_shape.npy 3,5 float32
// RUN: %python %inputs/npy.py random %t.wrong_rank.npy 12 float32
// RUN: %python %inputs/npy.py random %t.wrong_dtype.npy 3,4 int32
// RUN: %python %inputs/npy.py random %t.f64.npy 3,4 float64
// RUN: not maxc run %t.maxa --input x=%t.wrong_shape.npy 2>&1 | FileCheck %s --check-prefix=SHAPE
// RUN: not maxc run %t.maxa --input x=%t.wrong_rank.npy 2>&1 | FileCheck %s --check-prefix=RANK
// RUN: not maxc run %t.maxa --input x=%t.wrong_dtype.npy 2>&1 | FileCheck %s --check-prefix=DTYPE
// RUN: not maxc run %t.maxa --input x=%t.f64.npy 2>&1 | FileCheck %s --check-prefix=F64
// RUN: not maxc run %t.maxa 2>&1 | FileCheck %s --check-prefix=MISSING
// RUN: not maxc run %t.maxa --input x=%t.good.npy --input y=%t.good.npy 2>&1 | FileCheck %s --check-prefix=UNKNOWN
// RUN: not maxc run %t.maxa --input x=%t.good.npy --input x=%t.good.npy 2>&1 | FileCheck %s --check-prefix=TWICE
// RUN: not maxc run %t.maxa --input x%t.good.npy 2>&1 | FileCheck %s --check-prefix=SYNTAX
// RUN: not maxc run %t.maxa --input x=%t.nonexistent.npy 2>&1 | FileCheck %s --check-prefix=NOFILE
// RUN: not maxc run %t.maxa --input x=%s 2>&1 | FileCheck %s --check-prefix=NOTNPY
// RUN: not maxc run %t.maxa --input x=%t.good.npy --output %t.a.npy --output %t.b.npy 2>&1 | FileCheck %s --check-prefix=OUTS
// RUN: not maxc run %t.maxa --input x=%t.good.npy --entry nope 2>&1 | FileCheck %s --check-prefix=ENTRY

// SHAPE: maxc: error: input 'x' must have shape [n, 4], got [3, 5]
// RANK: maxc: error: input 'x' must have shape [n, 4], got [12]
// DTYPE: maxc: error: input 'x' must be f32, got i32
// F64: maxc: error: {{.*}}f64.npy: dtype '<f8' is not supported; convert to float32, float16, int32, int64 or int8
// MISSING: maxc: error: missing input(s): x (give each as --input NAME=FILE.npy)
// UNKNOWN: maxc: error: entry 'g' has no input 'y' (inputs: x)
// TWICE: maxc: error: input 'x' is given twice
// SYNTAX: maxc: error: --input '{{.*}}' must be NAME=FILE.npy
// NOFILE: maxc: error: reading {{.*}}nonexistent.npy: No such file or directory
// NOTNPY: maxc: error: {{.*}}bad-inputs.mlir: not a .npy file (bad magic)
// OUTS: maxc: error: 2 --output files given but entry 'g' has 1 output(s)
// ENTRY: maxc: error: no entry 'nope' in {{.*}} (entries: g)
func.func @g(%x: tensor<?x4xf32> {max.name = "x", max.dims = ["n", ""]}) -> tensor<?x4xf32> {
  %0 = "max.exp"(%x) : (tensor<?x4xf32>) -> tensor<?x4xf32>
  func.return %0 : tensor<?x4xf32>
}
