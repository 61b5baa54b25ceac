// Tensor-core matmul kernels: bf16 operands, f32 accumulation, shared-memory staging and
// ldmatrix fragments, for each supported chip.
// RUN: maxc compile %s --target cuda:sm_80 --emit ptx | FileCheck %s --check-prefixes=CHECK,SM80
// RUN: maxc compile %s --target cuda:sm_89 --emit ptx | FileCheck %s --check-prefixes=CHECK,SM89
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefixes=CHECK,SM90
// SM80: .target sm_80
// SM89: .target sm_89
// SM90: .target sm_90
// CHECK: .visible .entry mm(
// CHECK: .shared .align {{[0-9]+}} .b8 {{.*}}[10240];
// CHECK: .shared .align {{[0-9]+}} .b8 {{.*}}[8704];
// CHECK-DAG: ld.global.v4.b32
// CHECK-DAG: st.shared.v4.b32
// CHECK-DAG: bar.sync 0;
// CHECK-DAG: ldmatrix.sync.aligned.m8n8.x4.shared.b16
// CHECK-DAG: ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16
// CHECK-DAG: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// CHECK-DAG: cvt.rn.bf16.f32
func.func @g(%a: tensor<?x4096xbf16>, %b: tensor<4096x4096xbf16>) -> tensor<?x4096xbf16> {
  %c = "max.matmul"(%a, %b) : (tensor<?x4096xbf16>, tensor<4096x4096xbf16>) -> tensor<?x4096xbf16>
  func.return %c : tensor<?x4096xbf16>
}
