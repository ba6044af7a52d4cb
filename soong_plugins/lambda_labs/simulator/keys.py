"""SSH key pairs for ``POST /ssh-keys`` without a public key (the API generates one).

A real Ed25519 pair in OpenSSH format, so a client that saves the private key can use
it with any SSH tool. ``cryptography`` (already installed with paramiko) makes it;
``ssh-keygen`` is the fallback. Neither is imported until a key is generated.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path


class KeyGenerationError(Exception):
    pass


def generate_keypair(comment: str) -> tuple[str, str]:
    """``(public_key, private_key)`` as OpenSSH text."""
    try:
        return _with_cryptography(comment)
    except ImportError:
        return _with_ssh_keygen(comment)


def _with_cryptography(comment: str) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode("ascii")
    return f"{public} {comment}".strip(), private


def _with_ssh_keygen(comment: str) -> tuple[str, str]:
    program = shutil.which("ssh-keygen")
    if program is None:
        raise KeyGenerationError("cannot generate a key pair: neither the cryptography "
                                 "package nor ssh-keygen is available")
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "key"
        subprocess.run([program, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       check=True, capture_output=True, timeout=30)
        return path.with_suffix(".pub").read_text().strip(), path.read_text()
