"""TLS for both listeners (https API, wss gateway) from one reloadable server context.

Both servers keep the SSLContext object they were started with and create one SSL object per new
connection from it. Loading a new chain into that same object therefore switches every NEW connection
to the new certificate while open ones keep theirs: SIGHUP after a renewal, no restart, no dropped
chats. A new pair is first loaded into a scratch context, so a half-written or mismatched pair is
refused and the running certificate stays.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("kefu.tls")

# Names that certbot, Kubernetes secrets and hand-made setups use, in the order they are tried.
CERT_PAIRS = (("fullchain.pem", "privkey.pem"), ("tls.crt", "tls.key"), ("cert.pem", "key.pem"),
              ("server.crt", "server.key"))


def find_pair(directory: Path) -> tuple[Path, Path] | None:
    """The first certificate/key pair present in `directory` (a mounted /app/certs), or None."""
    for cert, key in CERT_PAIRS:
        if (directory / cert).is_file() and (directory / key).is_file():
            return directory / cert, directory / key
    return None


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])  # neither listener speaks h2
    return context


@dataclass
class ServerTLS:
    cert: Path
    key: Path
    context: ssl.SSLContext

    @classmethod
    def load(cls, cert: Path | str, key: Path | str) -> ServerTLS:
        context = _new_context()
        context.load_cert_chain(cert, key)
        return cls(Path(cert), Path(key), context)

    def reload(self) -> bool:
        """Re-read the files; new connections use them. False (and the old pair kept) when they do not load."""
        try:
            _new_context().load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as error:
            log.error("TLS reload refused, keeping the current certificate", extra={"error": str(error)})
            return False
        self.context.load_cert_chain(self.cert, self.key)
        log.info("TLS certificate reloaded", extra={"cert": str(self.cert)})
        return True
