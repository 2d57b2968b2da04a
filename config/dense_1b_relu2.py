# The paper's dense 1B with ReLU squared.
exec(open(__file__.replace('dense_1b_relu2.py', 'dense_1b.py')).read())
out_dir = 'out/dense_1b_relu2'
activation = 'relu2'
