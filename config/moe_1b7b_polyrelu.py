# The paper's MoE 1B-active / 7B-total with PolyReLU (one PolyReLU per MoE layer, shared by its experts).
exec(open(__file__.replace('moe_1b7b_polyrelu.py', 'moe_1b7b.py')).read())
out_dir = 'out/moe_1b7b_polyrelu'
activation = 'polyrelu'
