// Tensor-core matmul kernels: bf16 operands, f32 accumulation. sm_80/sm_89 stage through
// shared memory and feed mma.sync from ldmatrix fragments; sm_90 feeds wgmma from
// swizzled shared memory filled by cp.async (its module is sm_90a).
// RUN: maxc compile %s --target cuda:sm_80 --emit ptx | FileCheck %s --check-prefixes=CHECK,SM80
// RUN: maxc compile %s --target cuda:sm_89 --emit ptx | FileCheck %s --check-prefixes=CHECK,SM89
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=SM90
// SM80: .target sm_80
// SM89: .target sm_89
// SM90: .target sm_90a
// SM90: .extern .shared .align 1024 .b8 max_smem[];
// SM90: .visible .entry mm(
// SM90-DAG: cp.async.cg.shared.global
// SM90-DAG: cp.async.wait_group 1;
// SM90-DAG: fence.proxy.async.shared::cta;
// SM90-DAG: wgmma.fence.sync.aligned;
// SM90-DAG: wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16
// SM90-DAG: wgmma.commit_group.sync.aligned;
// SM90-DAG: wgmma.wait_group.sync.aligned 1;
// SM90-DAG: cvt.rn.bf16x2.f32
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
