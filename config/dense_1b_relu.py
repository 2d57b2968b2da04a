# The paper's dense 1B with ReLU.
exec(open(__file__.replace('dense_1b_relu.py', 'dense_1b.py')).read())
out_dir = 'out/dense_1b_relu'
activation = 'relu'
