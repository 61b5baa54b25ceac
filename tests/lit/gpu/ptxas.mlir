// The emitted PTX assembles with NVIDIA's ptxas for each chip, with no register spills
// (sm_90 artifacts hold sm_90 and sm_90a modules; ptxas for sm_90a takes both).
// REQUIRES: ptxas
// RUN: maxc compile %s --target cuda:sm_80 --emit ptx -o %t.80.ptx
// RUN: %python %inputs/ptxas_each.py %ptxas sm_80 %t.80.ptx | FileCheck %s
// RUN: maxc compile %s --target cuda:sm_89 --emit ptx -o %t.89.ptx
// RUN: %python %inputs/ptxas_each.py %ptxas sm_89 %t.89.ptx | FileCheck %s
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx -o %t.90.ptx
// RUN: %python %inputs/ptxas_each.py %ptxas sm_90a %t.90.ptx | FileCheck %s
// CHECK: module(s) assembled
func.func @g(%x: tensor<?x256xf16>, %w: tensor<256x512xf16>, %b: tensor<?x512xf16>, %s: tensor<512xf32>) -> tensor<?x512xf32> {
  %m = "max.matmul"(%x, %w) : (tensor<?x256xf16>, tensor<256x512xf16>) -> tensor<?x512xf16>
  %a = "max.add"(%m, %b) : (tensor<?x512xf16>, tensor<?x512xf16>) -> tensor<?x512xf16>
  %g = "max.gelu"(%a) : (tensor<?x512xf16>) -> tensor<?x512xf16>
  %c = "max.cast"(%g) : (tensor<?x512xf16>) -> tensor<?x512xf32>
  %n = "max.rms_norm"(%c, %s) {epsilon = 1.0e-5 : f64} : (tensor<?x512xf32>, tensor<512xf32>) -> tensor<?x512xf32>
  func.return %n : tensor<?x512xf32>
}
