# The paper's dense 1B with PolyReLU.
inherit('dense_1b.py')
out_dir = 'out/dense_1b_polyrelu'
activation = 'polyrelu'
