"""TLS contexts, in one place: the RTSPS listener's and the upstream sources'.

Theory of operation.

- **Server** (:func:`server_context`): TLS 1.2 at least (RFC 8996 deprecates 1.0 and
  1.1), the ECDHE/DHE AEAD suites of Mozilla's "intermediate" profile for TLS 1.2
  (TLS 1.3 has only sane suites), no compression (CRIME), no renegotiation. The
  certificate chain and the key come from files; the key must not be encrypted (the
  proxy runs unattended: nothing could type a pass phrase), so make it readable by the
  proxy's user only.
- **Reload without dropping anyone** (:class:`ServerTls`): the listening socket keeps
  the context it was created with, whose ``sni_callback`` hands every new handshake the
  newest good context (OpenSSL calls it for every ClientHello, with or without a server
  name, so also for clients that connect to an IP address). :meth:`ServerTls.reload`
  re-reads both files into a fresh context and only then swaps it in: a missing,
  broken or mismatched pair is logged and the previous certificate serves on.
  Established connections are never touched: they keep the keys they negotiated.
- **Client** (:func:`client_context`): verification on, against the system's CAs or
  the given CA bundle only; host names (or the IP address SAN) are checked. Turning
  verification off is explicit (``tls_verify: false``) and logged by the caller.

Errors name the file setting they come from (:class:`TlsFileError.field`) and say what
is wrong with it; they never carry the content of a key.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    ]
)
"""TLS 1.2 suites: forward secrecy and AEAD only (Mozilla "intermediate", v5.7)."""


class TlsFileError(ValueError):
    """A certificate, key or CA file cannot be used; ``field`` is the setting naming it
    (``cert_file``, ``key_file`` or ``ca_file``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _no_pass_phrase() -> str:
    # Called by OpenSSL only for an encrypted key: refuse instead of prompting on a tty.
    raise TlsFileError(
        "key_file", "the key is encrypted with a pass phrase: give an unencrypted key file"
    )


def _read_pem(field: str, path: Path, marker: str, what: str) -> str:
    """The text of a PEM file that holds at least one ``marker`` block."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise TlsFileError(field, f"cannot read {path}: {exc.strerror}") from None
    # "PRIVATE KEY" also finds PKCS#1 "RSA PRIVATE KEY", "EC PRIVATE KEY" and encrypted keys.
    if f"{marker}-----" not in text:
        raise TlsFileError(field, f"{path} holds no PEM {what} (-----BEGIN {marker}-----)")
    return text


def _check_certificates(field: str, path: Path, text: str) -> None:
    """Every certificate in ``text`` parses (OpenSSL decodes them into a scratch store)."""
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        scratch.load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsFileError(field, f"{path}: not a valid PEM certificate ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc).lower().replace("_", " ")[:120]


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context with the chain in ``cert_file`` (leaf first) and ``key_file``.

    :class:`TlsFileError` naming ``cert_file`` or ``key_file`` when a file is missing,
    unreadable, not PEM, or the key does not belong to the certificate.
    """
    cert_text = _read_pem("cert_file", cert_file, "CERTIFICATE", "certificate")
    _check_certificates("cert_file", cert_file, cert_text)
    _read_pem("key_file", key_file, "PRIVATE KEY", "private key")  # parsed by OpenSSL below
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_SINGLE_ECDH_USE
        | ssl.OP_SINGLE_DH_USE
    )
    try:
        ctx.load_cert_chain(cert_file, key_file, password=_no_pass_phrase)
    except TlsFileError:
        raise
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsFileError(
                "key_file", f"{key_file} does not match the certificate in {cert_file}"
            ) from None
        if exc.library == "PEM" or exc.reason in ("NO_START_LINE", "BAD_DECRYPT"):
            raise TlsFileError(
                "key_file", f"{key_file}: not a valid PEM private key ({_short(exc)})"
            ) from None
        raise TlsFileError("cert_file", f"{cert_file}: cannot be used ({_short(exc)})") from None
    except OSError as exc:  # the file went away between the two reads
        raise TlsFileError("cert_file", f"cannot read: {exc.strerror}") from None
    return ctx


def client_context(ca_file: Path | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """A client context for an upstream ``rtsps://`` source.

    ``verify`` (the default): the peer's chain must lead to a CA of ``ca_file`` (a PEM
    bundle; then only those CAs) or of the system store, and its name (or IP address
    SAN) must match the URL's host. ``verify=False`` accepts any certificate: the
    connection is encrypted but nobody is authenticated.
    """
    if ca_file is not None:
        text = _read_pem("ca_file", ca_file, "CERTIFICATE", "CA certificate")
        _check_certificates("ca_file", ca_file, text)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def fingerprint(der: bytes) -> str:
    """SHA-256 fingerprint of a DER certificate, as ``AB:CD:...`` (what openssl prints)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def _leaf_der(cert_file: Path) -> bytes:
    text = cert_file.read_text(encoding="ascii", errors="replace")
    start = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(text[start:end])


def _not_after(cert_file: Path) -> float | None:
    """Unix time the leaf certificate expires (None if it cannot be decoded)."""
    try:
        decoded: dict[str, Any] = ssl._ssl._test_decode_cert(str(cert_file))  # type: ignore[attr-defined]
        return float(ssl.cert_time_to_seconds(decoded["notAfter"]))
    except (OSError, ValueError, KeyError, AttributeError, ssl.SSLError):
        return None


class ServerTls:
    """The RTSPS listener's certificate and key, re-read by :meth:`reload`.

    ``context`` is what the listener is created with; it never changes, and its
    ``sni_callback`` gives every new handshake the newest good context (module
    docstring). Raises :class:`TlsFileError` at construction if the files are bad.
    """

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = server_context(cert_file, key_file)
        self._current = self.context
        self.context.sni_callback = self._select
        self.fingerprint = ""
        """SHA-256 fingerprint of the leaf certificate in use."""
        self.not_after: float | None = None
        """Unix time the certificate in use expires."""
        self.loaded_at = time.time()
        self.reloads = 0
        """Successful reloads since start."""
        self.reload_failures = 0
        """Reloads that kept the previous certificate."""
        self._describe()

    def _select(self, conn: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: Any) -> None:
        current = self._current
        if conn.context is not current:
            conn.context = current
        return None

    def _describe(self) -> None:
        try:
            self.fingerprint = fingerprint(_leaf_der(self.cert_file))
        except (OSError, ValueError):
            self.fingerprint = ""
        self.not_after = _not_after(self.cert_file)
        try:
            world_readable = bool(self.key_file.stat().st_mode & 0o004)
        except OSError:
            world_readable = False
        if world_readable:
            # Served anyway (refusing would take the listener down at a renewal), but
            # every local user can read the key that authenticates this proxy.
            log.warning(
                "tls.key_file_world_readable",
                path=str(self.key_file),
                reason="any local user can read the private key: chmod o-r it",
            )

    def reload(self, cert_file: Path | None = None, key_file: Path | None = None) -> bool:
        """Re-read the files (new paths if given); True if the new pair is in use.

        On any problem an ``tls.reload_failed`` error is logged (with the setting and
        what is wrong) and the certificate in use stays.
        """
        cert = cert_file or self.cert_file
        key = key_file or self.key_file
        try:
            ctx = server_context(cert, key)
        except TlsFileError as exc:
            self.reload_failures += 1
            log.error(
                "tls.reload_failed",
                field=f"rtsp.tls.{exc.field}",
                reason=str(exc),
                kept=self.fingerprint,
            )
            return False
        old = self.fingerprint
        self.cert_file, self.key_file = cert, key
        self._current = ctx
        self.loaded_at = time.time()
        self.reloads += 1
        self._describe()
        log.info(
            "tls.reloaded",
            fingerprint=self.fingerprint,
            changed=self.fingerprint != old,
            not_after=self.not_after,
        )
        return True
