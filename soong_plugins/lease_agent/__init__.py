"""Built-in plugin ``lease_agent``: ships the on-instance agent in user_data and reads
its view into ``status``."""
