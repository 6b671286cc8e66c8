"""The ``cleanpairs`` command line (installed as ``cleanpairs.cli``)."""
