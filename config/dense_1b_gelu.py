# The paper's dense 1B with GELU.
exec(open(__file__.replace('dense_1b_gelu.py', 'dense_1b.py')).read())
out_dir = 'out/dense_1b_gelu'
activation = 'gelu'
