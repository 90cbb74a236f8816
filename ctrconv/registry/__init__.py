"""An OCI distribution registry as an image source (``import -i docker://...``) and a sink
(``export --to docker://...``), over ``requests``.

* :mod:`.reference`: ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` and the registry host to talk to;
* :mod:`.credentials`: ``--creds``, auth files (``--authfile``, ``REGISTRY_AUTH_FILE``,
  ``${XDG_RUNTIME_DIR}/containers/auth.json``, ``~/.docker/config.json``);
* :mod:`.options`: :class:`RegistryOptions` (no transport imported with it);
* :mod:`.tls`: TLS settings per host (private CAs, ``certs.d``, containerd's ``hosts.toml``);
* :mod:`.client`: the distribution protocol's transport over requests: TLS contexts from
  :mod:`.tls`, auth challenges (anonymous, basic, bearer tokens with scopes), retries with back-off;
* :mod:`.source`: an :class:`~ctrconv.image.protocols.ImageSource` over a registry;
* :mod:`.push`: images of a containerd root pushed to a registry.
"""

from ctrconv.registry.options import RegistryOptions

__all__ = ["RegistryOptions"]
