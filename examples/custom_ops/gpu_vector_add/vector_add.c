// The CPU fallback of gpu_vector_add (see vector_add.ptx for the GPU kernel).
#include <max/custom_op.h>

MAX_CUSTOM_OP(vector_add_cpu);

int32_t vector_add_cpu(const max_tensor *in, int64_t n_in, max_tensor *out, int64_t n_out) {
    if (n_in != 2 || n_out != 1) return 1;
    const float *a = in[0].data, *b = in[1].data;
    float *c = out[0].data;
    int64_t n = max_num_elements(&out[0]);
    if (max_num_elements(&in[0]) != n || max_num_elements(&in[1]) != n) return 2;
    for (int64_t i = 0; i < n; i++) c[i] = a[i] + b[i];
    return 0;
}
