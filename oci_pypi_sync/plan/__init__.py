"""Planning: what to mirror (selection, environments, closure, shards, inputs)."""
