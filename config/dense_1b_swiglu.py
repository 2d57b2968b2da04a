# The paper's dense 1B with SwiGLU (the baseline the paper beats; 5504 wide, same parameters).
inherit('dense_1b.py')
out_dir = 'out/dense_1b_swiglu'
activation = 'swiglu'
