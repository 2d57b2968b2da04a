# The paper's dense 1B with PolyNorm, the paper's best.
inherit('dense_1b.py')
out_dir = 'out/dense_1b_polynorm'
activation = 'polynorm'
