"""A throw-away PKI for the TLS tests, made with the ``openssl`` command at test time.

Nothing here is kept in the repository: every key is generated under the test's
``tmp_path`` (EC P-256: a few milliseconds each).
"""

from __future__ import annotations

import hashlib
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_LEAF_EXTENSIONS = (
    "subjectAltName={san}\n"
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature\n"
    "extendedKeyUsage=serverAuth\n"
)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Pki:
    """A test CA, a server certificate for 127.0.0.1 (IP SAN) it signed, and a second,
    unrelated CA that nothing here trusts."""

    root: Path
    ca: Path
    """The test CA's certificate (what a client verifying the server is given)."""
    cert: Path
    """The server certificate for 127.0.0.1, signed by ``ca``."""
    key: Path
    other_ca: Path
    """A CA that did not sign anything the servers use."""
    _serial: int = 10

    def issue(self, name: str, san: str = "IP:127.0.0.1", issuer: str = "ca") -> tuple[Path, Path]:
        """A new leaf certificate and key signed by ``issuer`` (``ca`` or ``other_ca``)."""
        self._serial += 1
        key, csr, cert = (self.root / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        ext = self.root / f"{name}.ext"
        ext.write_text(_LEAF_EXTENSIONS.format(san=san))
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.root / f"{issuer}.pem"),
            "-CAkey", str(self.root / f"{issuer}.key"), "-set_serial", str(self._serial),
            "-days", "2", "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        return cert, key


def make_pki(root: Path) -> Pki:
    """A fresh :class:`Pki` under ``root`` (skips the test without the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    for ca in ("ca", "other_ca"):
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(root / f"{ca}.key"), "-out", str(root / f"{ca}.pem"),
            "-days", "2", "-subj", f"/CN=rmfproxy test {ca}",
        )  # fmt: skip
    pki = Pki(
        root, root / "ca.pem", root / "server.pem", root / "server.key", root / "other_ca.pem"
    )
    pki.issue("server")
    return pki


def cert_fingerprint(path: Path) -> str:
    """SHA-256 of the (first) certificate in a PEM file, as ``AB:CD:...``."""
    text = path.read_text()
    start = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    der = ssl.PEM_cert_to_DER_cert(text[start:end])
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def client_context(ca: Path) -> ssl.SSLContext:
    """A client context that trusts ``ca`` only (and checks the host name)."""
    return ssl.create_default_context(cafile=ca)


def peer_fingerprint(writer_or_object: object) -> str:
    """The SHA-256 fingerprint of the certificate a TLS connection's server presented."""
    obj = writer_or_object
    if not isinstance(obj, ssl.SSLObject | ssl.SSLSocket):
        obj = obj.get_extra_info("ssl_object")  # type: ignore[attr-defined]
    der = obj.getpeercert(binary_form=True)
    assert der is not None
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
