"""The OCI side: the format mapping (pure), the stores (layout and registry) and auth."""
