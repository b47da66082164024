"""Throwaway certificate authorities and server certificates for TLS tests, made with `openssl`.

    ca = ThrowawayCa.create(tmp_path / "ca")
    engine = ca.issue("engine", ips=("127.0.0.1",))          # IP SAN only
    named = ca.issue("named", dns=("engine.test",))           # DNS SAN only

Keys are EC P-256 (fast to make) and unencrypted; certificates last a day. The
`openssl` command line is used because the `cryptography` package is not a
dependency of this project.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

OPENSSL = "/usr/bin/openssl"
OPENSSL_TIMEOUT_S = 20.0
_KEY_ARGS = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc")


@dataclass(frozen=True)
class CertPair:
    """A server certificate and its private key, as PEM files."""

    cert: Path
    key: Path

    def flags(self) -> tuple[str, ...]:
        """`--tls-cert CERT --tls-key KEY`."""
        return ("--tls-cert", str(self.cert), "--tls-key", str(self.key))


@dataclass(frozen=True)
class ThrowawayCa:
    """A self-signed CA in `directory` that issues server certificates."""

    directory: Path
    cert: Path
    key: Path
    _serials: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    @classmethod
    def create(cls, directory: Path, name: str = "tidepool test CA") -> ThrowawayCa:
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "ca.pem", directory / "ca.key"
        _openssl(
            "req", "-x509", *_KEY_ARGS, "-keyout", str(key), "-out", str(cert),
            "-days", "1", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        return cls(directory, cert, key)

    def issue(self, name: str, *, ips: Sequence[str] = (), dns: Sequence[str] = ()) -> CertPair:
        """A server certificate for exactly these IP and DNS subject alternative names."""
        if not ips and not dns:
            raise ValueError("a server certificate needs at least one IP or DNS name")
        cert, key = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        request, extensions = self.directory / f"{name}.csr", self.directory / f"{name}.ext"
        names = [f"IP:{ip}" for ip in ips] + [f"DNS:{host}" for host in dns]
        extensions.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n"
            f"subjectAltName={','.join(names)}\n"
        )
        _openssl(
            "req", "-new", *_KEY_ARGS, "-keyout", str(key), "-out", str(request),
            "-subj", f"/CN={name}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-set_serial", str(next(self._serials)), "-days", "1", "-sha256",
            "-extfile", str(extensions), "-out", str(cert),
        )  # fmt: skip
        return CertPair(cert, key)


def _openssl(*args: str) -> None:
    done = subprocess.run(
        [OPENSSL, *args],
        capture_output=True,
        text=True,
        timeout=OPENSSL_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed ({done.returncode}): {done.stderr.strip()}")
