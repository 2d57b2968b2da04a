# The dense 1B with gated PolyNorm, down(PolyNorm(gate(x)) * up(x)): SwiGLU's FFN (5504 wide, same parameters)
# with PolyNorm in place of SiLU, as Motif's released 2.6B and 12.7B models use it. Not in the paper, which
# compares a non-gated PolyNorm with the gated SwiGLU; this config makes the gated comparison.
inherit('dense_1b.py')
out_dir = 'out/dense_1b_polynorm_glu'
activation = 'polynorm_glu'
