// IRDL definition of the `max` graph dialect.
// Loaded into every MLIR context maxc creates. IRDL checks op names, operand/result counts
// and that values are builtin tensors; shape and dtype rules live in Rust (verify.rs).
irdl.dialect @max {
  irdl.operation @constant {
    irdl.operands()
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "value" = %a0 }
  }
  irdl.operation @weight {
    irdl.operands()
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "name" = %a0 }
  }
  irdl.operation @neg {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @exp {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @log {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @sqrt {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @rsqrt {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @relu {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @sigmoid {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @tanh {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @gelu {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @silu {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @abs {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @add {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %o0, rhs: %o1)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @sub {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %o0, rhs: %o1)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @mul {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %o0, rhs: %o1)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @div {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %o0, rhs: %o1)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @maximum {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %o0, rhs: %o1)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @minimum {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %o0, rhs: %o1)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @pow {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %o0, rhs: %o1)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @cast {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @matmul {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %o0, rhs: %o1)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @transpose {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "perm" = %a0 }
  }
  irdl.operation @reduce_sum {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "axes" = %a0 }
  }
  irdl.operation @reduce_mean {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "axes" = %a0 }
  }
  irdl.operation @reduce_max {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "axes" = %a0 }
  }
  irdl.operation @softmax {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "axis" = %a0 }
  }
  irdl.operation @reshape {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "shape" = %a0 }
  }
  irdl.operation @broadcast_to {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "shape" = %a0 }
  }
  // IRDL binds one type per constraint variable, so all values of a variadic group must
  // have the same type. concat therefore takes two independently typed operands and a
  // tail whose operands share one type (covering cache appends and most N-ary concats);
  // the Rust verifier checks the actual shape rules.
  irdl.operation @concat {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    %o2 = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %o0, rhs: %o1, rest: variadic %o2)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "axis" = %a0 }
  }
  // Like concat: two independently typed results, then a tail of one type (so sizes
  // [q, k, v] with k == v work; more than two distinct sizes need several splits/slices).
  irdl.operation @split {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    %r1 = irdl.base "!builtin.tensor"
    %r2 = irdl.base "!builtin.tensor"
    irdl.results(first: %r0, second: %r1, rest: variadic %r2)
    %a0 = irdl.any
    irdl.attributes { "axis" = %a0 }
  }
  irdl.operation @slice {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    %a1 = irdl.any
    irdl.attributes { "starts" = %a0, "ends" = %a1 }
  }
  irdl.operation @gather {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0, indices: %o1)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "axis" = %a0 }
  }
  // A user-defined op (--kernels DIR declares it). As with concat/split, IRDL gives a
  // variadic group one type, so the first operand and result are typed independently of
  // the rest.
  irdl.operation @custom {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0, more_inputs: variadic %o1)
    %r0 = irdl.base "!builtin.tensor"
    %r1 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0, more_results: variadic %r1)
    %a0 = irdl.any
    irdl.attributes { "name" = %a0 }
  }
  irdl.operation @rms_norm {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0, weight: %o1)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @layer_norm {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    %o2 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0, gamma: %o1, beta: %o2)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  irdl.operation @rope {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0, positions: %o1)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  // x @ dequantize(w)^T with w in GGUF block format (rows of blocks, as i8 bytes).
  irdl.operation @qmatmul {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0, weight: %o1)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "format" = %a0 }
  }
  irdl.operation @attention {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    %o2 = irdl.base "!builtin.tensor"
    irdl.operands(query: %o0, key: %o1, value: %o2)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
  }
  // dequantize(w): GGUF blocks (i8 bytes) to f32.
  irdl.operation @dequantize {
    %o0 = irdl.base "!builtin.tensor"
    irdl.operands(input: %o0)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "format" = %a0 }
  }
  // In-place write of new keys or values into one layer of a KV cache; the result is the
  // cache buffer itself.
  irdl.operation @cache_write {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    %o2 = irdl.base "!builtin.tensor"
    %o3 = irdl.base "!builtin.tensor"
    irdl.operands(cache: %o0, new: %o1, positions: %o2, slots: %o3)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "layer" = %a0 }
  }
  irdl.operation @cached_attention {
    %o0 = irdl.base "!builtin.tensor"
    %o1 = irdl.base "!builtin.tensor"
    %o2 = irdl.base "!builtin.tensor"
    %o3 = irdl.base "!builtin.tensor"
    %o4 = irdl.base "!builtin.tensor"
    irdl.operands(query: %o0, key_cache: %o1, value_cache: %o2, positions: %o3, slots: %o4)
    %r0 = irdl.base "!builtin.tensor"
    irdl.results(result: %r0)
    %a0 = irdl.any
    irdl.attributes { "layer" = %a0 }
  }
}
