# The paper's dense 1B with ReLU.
inherit('dense_1b.py')
out_dir = 'out/dense_1b_relu'
activation = 'relu'
