# The paper's dense 1B with SwiGLU (the baseline the paper beats; 5504 wide, same parameters).
exec(open(__file__.replace('dense_1b_swiglu.py', 'dense_1b.py')).read())
out_dir = 'out/dense_1b_swiglu'
activation = 'swiglu'
