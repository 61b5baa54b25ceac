// The runtime refuses truncated, corrupted, foreign and wrong-version artifacts with a
// clear message and never crashes.
// RUN: maxc compile %s -o %t.maxa
// RUN: %python %inputs/npy.py random %t.x.npy 4 float32
// RUN: maxc run %t.maxa --input x=%t.x.npy
// RUN: head -c 1000 %t.maxa > %t.trunc.maxa
// RUN: not maxc run %t.trunc.maxa --input x=%t.x.npy 2>&1 | FileCheck %s --check-prefix=TRUNC
// RUN: head -c 40 %t.maxa > %t.tiny.maxa
// RUN: not max inspect %t.tiny.maxa 2>&1 | FileCheck %s --check-prefix=TINY
// RUN: cp %t.maxa %t.v2.maxa
// RUN: %python %inputs/npy.py patch-u32 %t.v2.maxa 8 2
// RUN: not maxc run %t.v2.maxa --input x=%t.x.npy 2>&1 | FileCheck %s --check-prefix=VERSION
// RUN: cp %t.maxa %t.kern.maxa
// RUN: %python %inputs/npy.py corrupt %t.kern.maxa 200
// RUN: not max run %t.kern.maxa --input x=%t.x.npy 2>&1 | FileCheck %s --check-prefix=KERNELS
// RUN: cp %t.maxa %t.man.maxa
// RUN: %python %inputs/npy.py corrupt %t.man.maxa -20
// RUN: not max run %t.man.maxa --input x=%t.x.npy 2>&1 | FileCheck %s --check-prefix=MANIFEST
// RUN: not max run %s --input x=%t.x.npy 2>&1 | FileCheck %s --check-prefix=MAGIC
// RUN: not max run %t.missing.maxa --input x=%t.x.npy 2>&1 | FileCheck %s --check-prefix=NOFILE

// TRUNC: maxc: error: {{.*}}trunc.maxa is corrupted: the header records {{[0-9]+}} bytes but the file has 1000 (truncated or appended to)
// TINY: max: error: {{.*}}tiny.maxa is not a .maxa artifact (bad magic)
// VERSION: maxc: error: {{.*}}v2.maxa has artifact format version 2, but this runtime reads version 3; recompile it with a matching maxc
// KERNELS: max: error: {{.*}}kern.maxa is corrupted: section 'kernels.x86_64.so' checksum mismatch
// MANIFEST: max: error: {{.*}}man.maxa is corrupted: manifest checksum mismatch
// MAGIC: max: error: {{.*}}bad-artifacts.mlir is not a .maxa artifact (bad magic)
// NOFILE: max: error: opening artifact {{.*}}missing.maxa: No such file or directory
func.func @g(%x: tensor<4xf32> {max.name = "x"}) -> tensor<4xf32> {
  %c = "max.constant"() {value = dense<[1.0, 2.0, 3.0, 4.0]> : tensor<4xf32>} : () -> tensor<4xf32>
  %0 = "max.add"(%x, %c) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}
