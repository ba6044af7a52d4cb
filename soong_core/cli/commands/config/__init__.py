"""``soong config ...``: show, validate, locate and change the configuration file.

One module per command; each imports yaml and cerberus only inside ``handle()``.
"""
