// Programmatic dependent launch (sm_90): every kernel waits for the one before it
// (griddepcontrol.wait) before it touches global memory; the runtime launches such kernels
// with programmatic stream serialization, so each one is launched, and the matrix-vector
// kernels' weights prefetched into L2, while the kernel before it retires. By default a
// kernel lets the next one launch as its blocks exit (no launch_dependents: the early
// trigger was slower on an H200); MAX_GPU_GRIDDEP=trigger=1 puts launch_dependents right
// after the wait. Older chips have no griddepcontrol: their kernels carry neither.
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx -o %t.90.ptx
// RUN: %python %inputs/waits_first.py %t.90.ptx | FileCheck %s
// RUN: FileCheck %s --check-prefix=GEMV < %t.90.ptx
// RUN: env MAX_GPU_GRIDDEP=trigger=1 maxc compile %s --target cuda:sm_90 --emit ptx -o %t.early.ptx
// RUN: %python %inputs/waits_first.py %t.early.ptx | FileCheck %s --check-prefix=EARLY
// RUN: FileCheck %s --check-prefix=EARLY-GEMV < %t.early.ptx
// RUN: maxc compile %s --target cuda:sm_80 --emit ptx | FileCheck %s --check-prefix=SM80
// RUN: %if ptxas %{ %python %inputs/ptxas_each.py %ptxas sm_90a %t.90.ptx | FileCheck %s --check-prefix=PTXAS %}

// A decode step's shape: norm and projection (the matrix-vector kernel computing its A),
// softmax rows, elementwise kernels lowered from linalg, a quantized matmul (its few-rows
// and tensor-core kernels), a matmul on the tensor cores.
// CHECK-NOT: griddepcontrol.wait
// CHECK-NOT: touches memory
// CHECK: [[N:[0-9]+]] of [[N]] kernels wait first; 6 prefetch before the wait; 0 trigger after it
// EARLY-NOT: touches memory
// EARLY: [[N:[0-9]+]] of [[N]] kernels wait first; 6 prefetch before the wait; [[N]] trigger after it

// The matrix-vector kernels prefetch their first loop step's weight rows, then wait.
// GEMV-LABEL: .entry gemv1(
// GEMV-COUNT-4: prefetch.L2
// GEMV-NOT: ld.global
// GEMV: griddepcontrol.wait;
// GEMV-NOT: griddepcontrol.launch_dependents;
// GEMV: ld.global
// EARLY-GEMV-LABEL: .entry gemv1(
// EARLY-GEMV: griddepcontrol.wait;
// EARLY-GEMV: griddepcontrol.launch_dependents;
// EARLY-GEMV: ld.global

// The few-rows quantized kernels prefetch the first lines of their columns' weights.
// GEMV-LABEL: .entry qmatmul_few(
// GEMV: prefetch.L2
// GEMV-NOT: ld.global
// GEMV: griddepcontrol.wait;

// SM80-NOT: griddepcontrol

// PTXAS: module(s) assembled
module {
func.func @proj(%x: tensor<1x256xf32> {max.name = "x"}, %w: tensor<256xf32> {max.name = "w"}, %b: tensor<256x512xbf16> {max.name = "b"}) -> (tensor<1x512xf32>) {
  %n = "max.rms_norm"(%x, %w) {epsilon = 1.0e-5 : f64} : (tensor<1x256xf32>, tensor<256xf32>) -> tensor<1x256xf32>
  %h = "max.cast"(%n) : (tensor<1x256xf32>) -> tensor<1x256xbf16>
  %y = "max.matmul"(%h, %b) : (tensor<1x256xbf16>, tensor<256x512xbf16>) -> tensor<1x512xbf16>
  %y32 = "max.cast"(%y) : (tensor<1x512xbf16>) -> tensor<1x512xf32>
  %s = "max.softmax"(%y32) {axis = -1 : i64} : (tensor<1x512xf32>) -> tensor<1x512xf32>
  %e = "max.exp"(%s) : (tensor<1x512xf32>) -> tensor<1x512xf32>
  %t = "max.tanh"(%e) : (tensor<1x512xf32>) -> tensor<1x512xf32>
  func.return %t : tensor<1x512xf32>
}

func.func @quant(%x: tensor<?x256xf32> {max.name = "x"}, %w: tensor<30x160xi8> {max.name = "w"}) -> (tensor<?x30xf32>) {
  %q = "max.qmatmul"(%x, %w) {format = "q4_1", quantize_input = true} : (tensor<?x256xf32>, tensor<30x160xi8>) -> tensor<?x30xf32>
  func.return %q : tensor<?x30xf32>
}

func.func @mm(%a: tensor<128x256xbf16> {max.name = "a"}, %b: tensor<256x128xbf16> {max.name = "b"}) -> (tensor<128x128xbf16>) {
  %c = "max.matmul"(%a, %b) : (tensor<128x256xbf16>, tensor<256x128xbf16>) -> tensor<128x128xbf16>
  func.return %c : tensor<128x128xbf16>
}
}
