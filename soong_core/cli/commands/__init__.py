"""One module per command; namespaces are folders (``tunnel/start.py``)."""
