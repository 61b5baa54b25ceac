func.func @concat_cols_shape(%n: index, %a: index, %n2: index, %b: index) -> (index, index) {
  %w = arith.shli %a, %b : index
  func.return %n, %w : index, index
}
