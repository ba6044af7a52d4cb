"""Built-in plugin ``reporters``: how ``soong status`` renders instances."""
