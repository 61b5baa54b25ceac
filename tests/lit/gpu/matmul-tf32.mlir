// f32 matmuls use TF32 tensor cores only when allowed; otherwise a plain f32 kernel.
// RUN: maxc compile %s --target cuda:sm_90 --allow-tf32 --emit ptx | FileCheck %s --check-prefix=TF32
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=F32
// TF32: mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
// F32-NOT: mma.sync
// F32: fma.rn.f32
// RUN: not maxc compile %s --allow-tf32 -o %t.maxa 2>&1 | FileCheck %s --check-prefix=CPU
// CPU: --allow-tf32 applies to cuda targets only
func.func @g(%a: tensor<?x256xf32>, %b: tensor<256x384xf32>) -> tensor<?x384xf32> {
  %c = "max.matmul"(%a, %b) : (tensor<?x256xf32>, tensor<256x384xf32>) -> tensor<?x384xf32>
  func.return %c : tensor<?x384xf32>
}
