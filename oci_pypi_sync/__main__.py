from oci_pypi_sync.cli import main

main()
