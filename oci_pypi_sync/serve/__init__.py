"""A PEP 503/691 simple repository answered from a mirror (``oci-pypi serve``).

:func:`create_app` builds the ASGI app over any
:class:`~oci_pypi_sync.stores.protocols.Store`; :func:`serve` runs it with uvicorn.
"""

from oci_pypi_sync.serve.app import AccessRecord, create_app
from oci_pypi_sync.serve.server import serve
from oci_pypi_sync.serve.view import MirrorView, list_projects

__all__ = ["AccessRecord", "MirrorView", "create_app", "list_projects", "serve"]
