"""Built-in plugin ``fabric_tunnel``: the ``ssh`` config section (which key and user
reach an instance). It is the place for SSH port forwards and shells via Fabric, which
are not built yet: it registers no tunnel backend."""

from __future__ import annotations

from typing import Any

from soong_core.hookspecs import hookimpl


@hookimpl
def soong_config_schema() -> dict[str, dict[str, Any]]:
    """Section ``ssh``: which key and user reach an instance. The name the provider
    knows the public key by is the core's ``defaults.ssh_key_name``: launch needs it
    whether or not this plugin is loaded."""
    return {
        "ssh": {
            "key_path": {
                "type": "string", "default": "~/.ssh/id_ed25519",
                "meta": {"help": "Private key used to reach instances."},
            },
            "user": {
                "type": "string", "default": "ubuntu",
                "meta": {"help": "Login user on instances."},
            },
        },
    }
