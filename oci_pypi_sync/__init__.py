"""Mirror Python packages from a simple repository index into OCI registries and layouts."""

__version__ = "0.1.0.dev0"
