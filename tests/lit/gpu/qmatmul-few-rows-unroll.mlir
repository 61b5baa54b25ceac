// The few-rows quantized kernel loads two weight items a lane (here Q4_K pairs: the f16
// scale and min, the scale bytes, the quants) per loop trip before it multiplies either
// with dp4a, so both are in flight at once; `MAX_GPU_QDOT=unroll=1` keeps one a trip (the
// A/B of benches/gpu/check.sh). K = 4096 gives a lane two items of each column.
// RUN: maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=TWO
// RUN: env MAX_GPU_QDOT=unroll=1 maxc compile %s --target cuda:sm_90 --emit ptx | FileCheck %s --check-prefix=ONE
// TWO-LABEL: .entry qmatmul_few(
// TWO: ld.global.v2.b16
// TWO-NOT: dp4a
// TWO: ld.global.v2.b16
// TWO: dp4a
// TWO-LABEL: .entry qmatmul_few_rows(
// ONE-LABEL: .entry qmatmul_few(
// ONE: ld.global.v2.b16
// ONE-NOT: ld.global.v2.b16
// ONE: dp4a
// ONE-LABEL: .entry qmatmul_few_rows(
func.func @g(%x: tensor<?x4096xf32> {max.name = "x"}) -> tensor<?x256xf32> {
  %w = "max.weight"() {name = "w"} : () -> tensor<256x2304xi8>
  %y = "max.qmatmul"(%x, %w) {format = "q4_k", quantize_input = true} : (tensor<?x4096xf32>, tensor<256x2304xi8>) -> tensor<?x256xf32>
  func.return %y : tensor<?x256xf32>
}
