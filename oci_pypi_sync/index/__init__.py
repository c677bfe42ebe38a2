"""The package index side: records, PEP 503/691 parsing, core metadata and the HTTP client."""
