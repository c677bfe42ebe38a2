"""The state file: a local cache of what the target holds."""
