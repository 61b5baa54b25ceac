/* Native CPU custom kernels for maxc (custom-op ABI version 1).
 *
 * A kernel is a C function over dense row-major tensors. maxc links the static library or
 * object file that defines it into the artifact's kernel object; the runtime calls it with
 * every input and output of the op (outputs already allocated, shapes filled in; the
 * kernel must write every element of its outputs, whose buffers are not zeroed):
 *
 *     #include <max/custom_op.h>
 *     MAX_CUSTOM_OP(custom_relu);
 *     int32_t custom_relu(const max_tensor *in, int64_t n_in, max_tensor *out, int64_t n_out) {
 *         const float *x = in[0].data; float *y = out[0].data;
 *         for (int64_t i = 0, n = max_num_elements(&in[0]); i < n; i++) y[i] = x[i] > 0 ? x[i] : 0;
 *         return 0;  // nonzero: the runtime reports "kernel ... failed with status N"
 *     }
 *
 * Declare the op in kernels.toml next to the library (see docs/custom-ops.md) and compile
 * with `maxc compile graph.mlir --kernels DIR`. Build the library position-independent
 * (-fPIC). MAX_CUSTOM_OP records the ABI version the kernel was built against; maxc refuses
 * to link a kernel built for another version.
 */
#ifndef MAX_CUSTOM_OP_H
#define MAX_CUSTOM_OP_H

#include <stdint.h>

#define MAX_CUSTOM_OP_ABI_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

/* Element types (the `dtype` field). */
enum max_dtype { MAX_F32 = 0, MAX_F16 = 1, MAX_BF16 = 2, MAX_I32 = 3, MAX_I64 = 4, MAX_I8 = 5 };

/* A dense, row-major tensor. `data` of inputs must not be written. */
typedef struct max_tensor {
  void *data;
  const int64_t *shape;
  int64_t rank;
  int32_t dtype;
} max_tensor;

/* The kernel signature; returns 0 on success. */
typedef int32_t (*max_custom_kernel)(const max_tensor *inputs, int64_t num_inputs,
                                     max_tensor *outputs, int64_t num_outputs);

/* Number of elements of `t`. */
static inline int64_t max_num_elements(const max_tensor *t) {
  int64_t n = 1;
  for (int64_t i = 0; i < t->rank; i++) n *= t->shape[i];
  return n;
}

#define MAX_CUSTOM_OP_CAT2(a, b) a##b
#define MAX_CUSTOM_OP_CAT(a, b) MAX_CUSTOM_OP_CAT2(a, b)
/* Marks `name` as a kernel of this ABI version (and declares it). */
#define MAX_CUSTOM_OP(name)                                                                 \
  const int32_t MAX_CUSTOM_OP_CAT(MAX_CUSTOM_OP_CAT(max_custom_op_abi_v, MAX_CUSTOM_OP_ABI_VERSION), _##name) = \
      MAX_CUSTOM_OP_ABI_VERSION;                                                            \
  int32_t name(const max_tensor *inputs, int64_t num_inputs, max_tensor *outputs, int64_t num_outputs)

#ifdef __cplusplus
}
#endif

#endif /* MAX_CUSTOM_OP_H */
