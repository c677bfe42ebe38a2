from oci_pypi_sync.cli import main

main(prog_name="oci-pypi")
