"""``soong sim ...``: start, inspect and stop the local Lambda Cloud simulator.

One module per command, registered by the ``lambda_labs`` plugin through
``soong_register_commands``; each imports the simulator only inside ``handle()``.
"""
