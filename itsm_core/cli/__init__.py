"""The ``itsm`` command line, one module per command group (see :mod:`itsm_core.cli.main`)."""
