// The artifact records the CPU features its code needs, by target level.
// RUN: maxc compile %s --target cpu=x86-64-v2 -o %t.v2.maxa
// RUN: maxc inspect %t.v2.maxa | FileCheck %s --check-prefix=V2
// RUN: maxc compile %s --target cpu=x86-64-v4 -o %t.v4.maxa
// RUN: maxc inspect %t.v4.maxa | FileCheck %s --check-prefix=V4
// RUN: not maxc compile %s --target cpu=pentium3 -o %t.bad.maxa 2>&1 | FileCheck %s --check-prefix=BAD

// V2: target: x86_64-linux cpu=x86-64-v2 features=[sse2,sse3,ssse3,sse4.1,sse4.2,popcnt]
// V4: target: x86_64-linux cpu=x86-64-v4 features=[{{.*}}avx2,fma{{.*}}avx512f,avx512bw,avx512cd,avx512dq,avx512vl]
// BAD: maxc: error: bad target 'cpu=pentium3': expected 'host' or 'cpu=LEVEL' with LEVEL one of x86-64, x86-64-v2, x86-64-v3, x86-64-v4
func.func @g(%a: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "max.exp"(%a) : (tensor<4xf32>) -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}
