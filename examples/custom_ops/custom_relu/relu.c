/* custom_relu: a native CPU kernel through the C ABI of include/max/custom_op.h.
 * Build: cc -O2 -fPIC -I../../../include -c relu.c -o relu.o && ar rcs librelu.a relu.o */
#include <max/custom_op.h>

MAX_CUSTOM_OP(custom_relu);

int32_t custom_relu(const max_tensor *in, int64_t n_in, max_tensor *out, int64_t n_out) {
  if (n_in != 1 || n_out != 1 || in[0].dtype != MAX_F32) return 1;
  const float *x = (const float *)in[0].data;
  float *y = (float *)out[0].data;
  int64_t n = max_num_elements(&in[0]);
  for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
  return 0;
}
