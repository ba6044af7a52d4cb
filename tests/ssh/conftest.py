"""Fixtures of the SSH tests: a real sshd on 127.0.0.1 and a service behind it."""

from soong_plugins.fabric_tunnel.testing import instance_service, sshd

__all__ = ["sshd", "instance_service"]
