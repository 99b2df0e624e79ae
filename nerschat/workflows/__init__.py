"""Sharded, resumable, streaming workflows over the registry's endpoints: judge, run-batch, embed.

`core` plans, runs and merges shards of any `tasks.ItemTask`; `embed` writes vectors by shard.
"""
