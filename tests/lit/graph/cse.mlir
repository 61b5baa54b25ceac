// graph-cse: a node that repeats an earlier one (same op, attributes and operands) is
// dropped and its uses read the earlier result; chains of repeats fold from the front.
// RUN: maxc opt %s --pass-pipeline=verify,graph-cse | FileCheck %s
// RUN: maxc opt %s --pass-pipeline=verify | FileCheck %s --check-prefix=BEFORE
// The compiled artifact has the folded graph's kernels.
// RUN: maxc compile %s --no-fusion -o %t.maxa
// RUN: maxc inspect %t.maxa | FileCheck %s --check-prefix=ART
// Outputs that now share a value each get it.
// RUN: %python %inputs/npy.py values %t.x.npy 3,5 float32
// RUN: maxc run %t.maxa --entry constants --input 0=%t.x.npy | FileCheck %s --check-prefix=OUT
// RUN: maxc compile %s -o %t.fused.maxa
// RUN: maxc run %t.fused.maxa --entry constants --input 0=%t.x.npy | FileCheck %s --check-prefix=OUT
// OUT-DAG: output0: f32[2] [2.000000, 3.000000]
// OUT-DAG: output1: f32[2] [2.000000, 3.000000]
// OUT-DAG: output2: f32[2] [-2.000000, -3.000000]

// BEFORE-LABEL: func.func @projections(
// BEFORE-COUNT-4: "max.cast"
// BEFORE-LABEL: func.func @constants(

// CHECK-LABEL: func.func @projections(
// CHECK-NEXT: %[[W16:.*]] = "max.cast"(%v1)
// CHECK-NEXT: %[[X16:.*]] = "max.cast"(%v0)
// CHECK-NEXT: %[[Y:.*]] = "max.matmul"(%[[X16]], %[[W16]])
// CHECK-NEXT: %[[E:.*]] = "max.exp"(%[[Y]])
// The cast to another type and the softmax over another axis are not repeats.
// CHECK-NEXT: "max.cast"(%v0) : (tensor<4x8xf32>) -> (tensor<4x8xf16>)
// CHECK-NEXT: "max.softmax"(%v0) {axis = 1 : i64}
// CHECK-NEXT: "max.softmax"(%v0) {axis = 0 : i64}
// CHECK-NEXT: func.return %[[E]], %[[E]],

// Without fusion every op is a kernel: 7 of the 10.
// ART-LABEL: entry projections:
// ART: dispatches 7
// ART-LABEL: entry constants:
// ART: dispatches 2
module {
func.func @projections(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>)
    -> (tensor<4x8xbf16>, tensor<4x8xbf16>, tensor<4x8xf16>, tensor<4x8xf32>, tensor<4x8xf32>) {
  %w16 = "max.cast"(%w) : (tensor<8x8xf32>) -> tensor<8x8xbf16>
  %a = "max.cast"(%x) : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %ya = "max.matmul"(%a, %w16) : (tensor<4x8xbf16>, tensor<8x8xbf16>) -> tensor<4x8xbf16>
  %ea = "max.exp"(%ya) : (tensor<4x8xbf16>) -> tensor<4x8xbf16>
  %b = "max.cast"(%x) : (tensor<4x8xf32>) -> tensor<4x8xbf16>
  %yb = "max.matmul"(%b, %w16) : (tensor<4x8xbf16>, tensor<8x8xbf16>) -> tensor<4x8xbf16>
  %eb = "max.exp"(%yb) : (tensor<4x8xbf16>) -> tensor<4x8xbf16>
  %h = "max.cast"(%x) : (tensor<4x8xf32>) -> tensor<4x8xf16>
  %s1 = "max.softmax"(%x) {axis = 1 : i64} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %s0 = "max.softmax"(%x) {axis = 0 : i64} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  func.return %ea, %eb, %h, %s1, %s0 : tensor<4x8xbf16>, tensor<4x8xbf16>, tensor<4x8xf16>, tensor<4x8xf32>, tensor<4x8xf32>
}

// Equal constants fold; the same op with its operands swapped does not.
// CHECK-LABEL: func.func @constants(
// CHECK-NEXT: %[[C:.*]] = "max.constant"()
// CHECK-NEXT: %[[S:.*]] = "max.sub"(%v0, %[[C]])
// CHECK-NEXT: %[[T:.*]] = "max.sub"(%[[C]], %v0)
// CHECK-NEXT: func.return %[[S]], %[[S]], %[[T]] :
func.func @constants(%x: tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) {
  %c1 = "max.constant"() {value = dense<[1.0, 2.0]> : tensor<2xf32>} : () -> tensor<2xf32>
  %c2 = "max.constant"() {value = dense<[1.0, 2.0]> : tensor<2xf32>} : () -> tensor<2xf32>
  %a = "max.sub"(%x, %c1) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %b = "max.sub"(%x, %c2) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %c = "max.sub"(%c2, %x) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  func.return %a, %b, %c : tensor<2xf32>, tensor<2xf32>, tensor<2xf32>
}
}
