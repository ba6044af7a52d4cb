"""The ``soong`` command line (cleo). Commands are thin: they call the core and render."""
