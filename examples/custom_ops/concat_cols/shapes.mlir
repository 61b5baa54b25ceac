// The shape function of concat_cols. Its parameters are the operands' dims in order
// (x: n, a; y: n2, b); it returns the result's dims. maxc reads it as index arithmetic over
// the graph's symbolic dims, so dynamic dims stay dynamic and static ones fold.
func.func @concat_cols_shape(%n: index, %a: index, %n2: index, %b: index) -> (index, index) {
  %w = arith.addi %a, %b : index
  func.return %n, %w : index, index
}
