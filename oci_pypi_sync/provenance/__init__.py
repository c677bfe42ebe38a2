"""PEP 740 provenance: Trusted Publishers, pins, and offline verification of attestations.

:mod:`.publishers` is pure and cheap to import; :mod:`.verify` brings in
``pypi-attestations`` and ``sigstore`` and is imported only where
provenance is verified.
"""
