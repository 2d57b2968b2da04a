# The size ladder (python sweep.py --preset cpu-scale): the stdlib preset's data, context and batch at 4 model sizes
# (sweep.py's PRESETS: 4x32, 4x64, 4x96, 4x136 layers x width, FFN 4 x width), each trained on 10 tokens per
# non-embedding parameter; the sweep sets n_layer, n_embd, ffn_hidden, max_steps, warmup_steps, eval_interval and
# ckpt_interval per size (sweep.size_keys), and activation, seed, out_dir, learning_rate and min_lr per run.
# The stdlib corpus's 8.04 M training bytes are about one epoch at the largest size (0.89 M parameters, 8.9 M tokens).
inherit('sweep_cpu_stdlib.py')
