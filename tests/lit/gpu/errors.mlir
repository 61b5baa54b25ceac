// GPU target errors name what is wrong.
// RUN: not maxc compile %s --target cuda:sm_10 -o %t.maxa 2>&1 | FileCheck %s --check-prefix=CHIP
// CHIP: cuda:sm_10 (supported: cuda:sm_80, cuda:sm_86, cuda:sm_89, cuda:sm_90)
// RUN: not maxc compile %s --emit ptx 2>&1 | FileCheck %s --check-prefix=PTX
// PTX: --emit ptx needs a cuda target
// RUN: not maxc compile %s --target cuda:sm_90 --emit asm 2>&1 | FileCheck %s --check-prefix=ASM
// ASM: for a cuda target use --emit ptx
func.func @g(%x: tensor<4xf32>) -> tensor<4xf32> {
  %y = "max.relu"(%x) : (tensor<4xf32>) -> tensor<4xf32>
  func.return %y : tensor<4xf32>
}
