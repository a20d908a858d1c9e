"""The ``qu`` command line: thin commands over the services."""
