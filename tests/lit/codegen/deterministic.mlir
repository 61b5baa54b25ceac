// Same input and flags give a byte-identical artifact, whatever the file's path.
// RUN: maxc compile %s -o %t.a.maxa
// RUN: maxc compile %s -o %t.b.maxa
// RUN: cmp %t.a.maxa %t.b.maxa
// RUN: mkdir -p %t.dir && cp %s %t.dir/copy.mlir
// RUN: maxc compile %t.dir/copy.mlir -o %t.c.maxa
// RUN: cmp %t.a.maxa %t.c.maxa
// RUN: maxc compile %s --depfile %t.d -o %t.d.maxa
// RUN: FileCheck %s --input-file %t.d
// CHECK: {{.*}}.d.maxa: {{.*}}deterministic.mlir{{$}}
func.func @g(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %w = "max.weight"() {name = "w", init = "normal", scale = 0.1 : f64, seed = 9 : i64} : () -> tensor<16x16xf32>
  %0 = "max.matmul"(%x, %w) : (tensor<?x16xf32>, tensor<16x16xf32>) -> tensor<?x16xf32>
  %1 = "max.softmax"(%0) {axis = 1 : i64} : (tensor<?x16xf32>) -> tensor<?x16xf32>
  func.return %1 : tensor<?x16xf32>
}
