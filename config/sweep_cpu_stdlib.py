# The activation sweep's second corpus (python sweep.py --preset cpu-stdlib): the long CPU preset's model, budget
# and schedule, on code instead of Tiny Shakespeare: this Python's standard-library sources as bytes (vocab 256,
# the loss in nats per byte), so that a verdict is not one corpus's. The sweep settings (lr grid, seeds, order
# ablation, budget ladder) are cpu-long's too, the lr grid from 1e-3 (sweep.py's PRESETS).
#
# The same 0.197 M non-embedding parameters and 2.05 M tokens per run (10.4 per parameter); with the corpus's
# default ~8 MB of source (95 % of it for training) that is about a quarter of an epoch, where Tiny Shakespeare
# took two. The corpus is this Python's own library, so it differs a little between Python versions.
inherit('sweep_cpu_long.py')

# data: made by python data/stdlib/prepare.py, offline (sweep.py runs it when the shards are missing)
dataset = 'stdlib'
