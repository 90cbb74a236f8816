"""An OCI distribution registry as an image source (``import -i docker://...``) and a sink
(``export --to docker://...``), over the standard library's HTTP client.

* :mod:`.reference`: ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` and the registry host to talk to;
* :mod:`.credentials`: ``--creds``, auth files (``--authfile``, ``REGISTRY_AUTH_FILE``,
  ``${XDG_RUNTIME_DIR}/containers/auth.json``, ``~/.docker/config.json``);
* :mod:`.client`: the distribution protocol's transport: TLS (private CAs, ``certs.d``),
  auth challenges (anonymous, basic, bearer tokens with scopes), retries with back-off;
* :mod:`.source`: an :class:`~ctrconv.pipeline.source.ImageSource` over a registry;
* :mod:`.push`: images of a containerd root pushed to a registry.
"""

from ctrconv.registry.client import RegistryOptions

__all__ = ["RegistryOptions"]
