/* concat_cols: out[i, :] = [x[i, :], y[i, :]], a native CPU kernel through the C ABI of
 * include/max/custom_op.h. Its output is allocated with the shape computed by the shape
 * function in shapes.mlir.
 * Build: cc -O2 -fPIC -I../../../include -c concat.c -o concat.o && ar rcs libconcat.a concat.o */
#include <max/custom_op.h>
#include <string.h>

MAX_CUSTOM_OP(concat_cols);

int32_t concat_cols(const max_tensor *in, int64_t n_in, max_tensor *out, int64_t n_out) {
  if (n_in != 2 || n_out != 1 || in[0].rank != 2 || in[1].rank != 2 || out[0].rank != 2) return 1;
  int64_t n = in[0].shape[0], a = in[0].shape[1], b = in[1].shape[1];
  if (in[1].shape[0] != n) return 2; /* rows differ */
  if (out[0].shape[0] != n || out[0].shape[1] != a + b) return 3;
  const float *x = (const float *)in[0].data, *y = (const float *)in[1].data;
  float *o = (float *)out[0].data;
  for (int64_t i = 0; i < n; i++) {
    memcpy(o + i * (a + b), x + i * a, (size_t)a * sizeof(float));
    memcpy(o + i * (a + b) + a, y + i * b, (size_t)b * sizeof(float));
  }
  return 0;
}
