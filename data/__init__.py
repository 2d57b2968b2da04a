"""Datasets: the token shard format, the loader, and one prepare.py per corpus."""
