"""The rule that lets a DynamoDB Local on this machine work without any AWS setup.

DynamoDB Local accepts any credentials (with ``-sharedDb``, how kvstore starts it, the key does not
even select a database), but the AWS SDK refuses to send a request without some. So a *loopback*
endpoint with no credentials configured gets dummy ones; an endpoint elsewhere never does, since
there the SDK's own chain (environment, profile, instance role) must decide.

Used by ``kvstore`` (the CLI) and ``python -m kvstore.demo``::

    conf = {"endpoint": "http://127.0.0.1:8000"}
    conf.update(local_credentials(conf["endpoint"], conf, os.environ))
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["LOCAL_CREDENTIALS", "is_loopback", "local_credentials"]

#: The credentials DynamoDB Local is given: it accepts any.
LOCAL_CREDENTIALS: Mapping[str, str] = {"access_key": "local", "secret_key": "local"}


def is_loopback(endpoint: str) -> bool:
    """Whether ``endpoint``'s host is this machine (``localhost``, ``127.x.x.x``, ``::1``)."""
    host = urlsplit(endpoint).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def local_credentials(endpoint: str | None, conf: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The config keys to add to ``conf`` so a client of ``endpoint`` has credentials (often none).

    :data:`LOCAL_CREDENTIALS` when ``endpoint`` is a loopback URL and no credentials are configured:
    no ``access_key`` in ``conf`` and neither ``AWS_ACCESS_KEY_ID`` nor ``AWS_PROFILE`` in
    ``environ``. Otherwise an empty dict: what the user configured always wins.
    """
    if endpoint is None or not is_loopback(endpoint):
        return {}
    if conf.get("access_key") or environ.get("AWS_ACCESS_KEY_ID") or environ.get("AWS_PROFILE"):
        return {}
    return dict(LOCAL_CREDENTIALS)
