"""How to reach registries (:class:`RegistryOptions`): kept apart from the transport so the
CLI can build them without importing requests (command start-up stays fast)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class RegistryOptions:
    """How to reach registries: credentials, TLS and retry settings (skopeo's options)."""

    creds: str | None = field(default=None, repr=False)
    authfile: str | None = None
    ca_file: str | None = None
    cert_dir: str | None = None
    tls_verify: bool = True
    plain_http: bool = False
    #: attempts after the first, for 5xx/429 answers and dropped connections
    retries: int = 5
    #: first back-off in seconds, doubled each retry (capped at 10 s)
    backoff: float = 0.5
    timeout: float = 60.0
    #: blobs up to this size are uploaded in one PUT, larger ones in PATCH chunks
    chunk_threshold: int = 16 << 20
    #: None: a larger blob goes in one streamed PATCH; a size: in PATCH chunks of that size
    chunk_size: int | None = None
    #: blobs uploaded side by side (push: ``export --to --jobs``)
    jobs: int = 1
    #: blobs downloaded side by side (pull: ``import -i docker:// --jobs``; containerd's
    #: ``max_concurrent_downloads`` is 3 too)
    pull_jobs: int = 3
    #: sleep function (tests replace it; never used to assert on time)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
