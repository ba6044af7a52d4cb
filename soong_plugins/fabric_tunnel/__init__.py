"""Built-in plugin ``fabric_tunnel``: SSH port forwards and shells via Fabric."""
