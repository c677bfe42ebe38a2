"""The engine: run a sync, write releases, record results."""
