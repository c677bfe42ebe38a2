"""Targets: the store protocols, a registry client, layouts and tars."""
