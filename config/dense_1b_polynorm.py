# The paper's dense 1B with PolyNorm, the paper's best.
exec(open(__file__.replace('dense_1b_polynorm.py', 'dense_1b.py')).read())
out_dir = 'out/dense_1b_polynorm'
activation = 'polynorm'
