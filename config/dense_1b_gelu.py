# The paper's dense 1B with GELU.
inherit('dense_1b.py')
out_dir = 'out/dense_1b_gelu'
activation = 'gelu'
