# The paper's dense 1B with PolyReLU.
exec(open(__file__.replace('dense_1b_polyrelu.py', 'dense_1b.py')).read())
out_dir = 'out/dense_1b_polyrelu'
activation = 'polyrelu'
