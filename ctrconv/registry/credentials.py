"""Registry credentials the way skopeo, podman and docker users keep them.

Looked up in this order (the first that names the registry wins):

1. ``--creds USER[:PASS]`` (given on the command line);
2. ``--authfile F``, else ``$REGISTRY_AUTH_FILE`` (containers-auth.json(5));
3. ``${XDG_RUNTIME_DIR}/containers/auth.json`` (podman/skopeo login);
4. ``${XDG_CONFIG_HOME:-~/.config}/containers/auth.json``;
5. ``${DOCKER_CONFIG:-~/.docker}/config.json`` (docker login).

An auth file is JSON ``{"auths": {KEY: {"auth": base64("user:pass")}}}``; ``KEY`` is the
registry (``host[:port]``, optionally with ``https://`` or docker's ``/v1/`` suffix) or a
repository under it (``host/ns/repo``: the longest key that prefixes the repository wins, as
containers/image matches). Docker Hub's keys are ``docker.io`` and
``https://index.docker.io/v1/``.

Credential helpers, as docker and containers/image run them: in any of those files,
``credHelpers: {REGISTRY: NAME}`` names a helper for one registry (it wins over that file's
``auths``), and ``credsStore: NAME`` one for every registry the file's ``auths`` gives no
credentials for (docker leaves ``{}`` placeholders there). The helper is the program
``docker-credential-NAME`` on ``PATH``, run as ``docker-credential-NAME get`` with the
registry on stdin (``host[:port]``; Docker Hub: ``https://index.docker.io/v1/``); it answers
``{"ServerURL", "Username", "Secret"}`` as JSON, or exits non-zero with "credentials not
found" when it has none (then the search goes on). A ``credsStore`` whose program is not
installed is skipped (configs copied from a desktop name ``desktop``); a missing
``credHelpers`` program, a helper that fails otherwise or answers something else, and an
identity token (``Username: <token>``, the OAuth2 refresh-token flow, not supported) are
errors.

A secret never appears in a message: :class:`Credentials` prints as the user name only.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ctrconv.errors import UsageError


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    #: where they came from (for messages: a file name or ``--creds``), never the secret
    origin: str = ""

    def __str__(self) -> str:
        return f"{self.username} (from {self.origin})" if self.origin else self.username


def parse_creds(text: str) -> Credentials:
    """``USER:PASS`` (skopeo's ``--creds``); a missing password is empty."""
    user, _, password = text.partition(":")
    if not user:
        raise UsageError("--creds needs USER[:PASS] with a user name")
    return Credentials(user, password, "--creds")


def default_auth_files(env: dict[str, str] | None = None) -> list[Path]:
    """The auth files looked at when ``--authfile`` is not given, in order."""
    env = dict(os.environ) if env is None else env
    home = Path(env.get("HOME") or Path.home())
    files: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        return [Path(env["REGISTRY_AUTH_FILE"])]
    if env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    files.append(Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "containers" / "auth.json")
    files.append(Path(env.get("DOCKER_CONFIG") or home / ".docker") / "config.json")
    return files


def _normalise_key(key: str) -> str:
    """``https://host/v1/`` -> ``host``; ``index.docker.io`` -> ``docker.io``."""
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    key = key.rstrip("/")
    if key.endswith("/v1") or key.endswith("/v2"):
        key = key[:-3]
    if key == "index.docker.io" or key.startswith("index.docker.io/"):
        key = "docker.io" + key[len("index.docker.io"):]
    if key == "registry-1.docker.io" or key.startswith("registry-1.docker.io/"):
        key = "docker.io" + key[len("registry-1.docker.io"):]
    return key


def _decode(entry: object, origin: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            text = base64.b64decode(auth, validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise UsageError(f"{origin}: an 'auth' entry is not base64 of USER:PASS") from None
        user, sep, password = text.partition(":")
        if not sep or not user:
            raise UsageError(f"{origin}: an 'auth' entry is not base64 of USER:PASS")
        return Credentials(user, password, origin)
    user, password = entry.get("username"), entry.get("password")
    if isinstance(user, str) and user and isinstance(password, str):
        return Credentials(user, password, origin)
    return None


def lookup_file(path: Path, domain: str, repository: str, *, required: bool = False,
                env: dict[str, str] | None = None) -> Credentials | None:
    """Credentials for ``domain/repository`` from one auth file: its ``credHelpers`` entry, its
    ``auths``, its ``credsStore`` (None: none of them has any). ``env``: whose ``PATH`` the
    helpers are looked up in and run with (default: this process's)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise UsageError(f"{path}: auth file not found") from None
        return None
    except OSError as exc:
        if required:
            raise UsageError(f"{path}: cannot read the auth file: {exc.strerror or exc}") from None
        return None
    try:
        doc = json.loads(raw or b"{}")
    except ValueError:
        raise UsageError(f"{path}: the auth file is not valid JSON") from None
    if not isinstance(doc, dict):
        return None
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if _normalise_key(str(key)) == domain and isinstance(name, str) and name:
                found = run_helper(name, domain, env=env, required=True)
                if found is not None:
                    return found
    auths = doc.get("auths")
    wanted = f"{domain}/{repository}"
    best: tuple[int, Credentials] | None = None
    for key, entry in (auths.items() if isinstance(auths, dict) else ()):
        norm = _normalise_key(str(key))
        if norm == domain or wanted == norm or wanted.startswith(norm + "/"):
            creds = _decode(entry, str(path))
            if creds is not None and (best is None or len(norm) > best[0]):
                best = (len(norm), creds)
    if best is not None:
        return best[1]
    store = doc.get("credsStore")
    if isinstance(store, str) and store:
        return run_helper(store, domain, env=env, required=False)
    return None


#: what a helper prints (docker-credential-helpers' ``ErrCredentialsNotFound``) when it has nothing
_NOT_FOUND = "credentials not found"
HELPER_TIMEOUT = 60.0


def helper_server(domain: str) -> str:
    """The name a helper stores a registry under (docker's: Docker Hub keeps its v1 URL)."""
    return "https://index.docker.io/v1/" if domain == "docker.io" else domain


def run_helper(name: str, domain: str, *, env: dict[str, str] | None = None, required: bool) -> Credentials | None:
    """``docker-credential-NAME get`` for ``domain``: its credentials, or None when it has none
    (or, unless ``required``, when it is not installed). Its output is never echoed."""
    program = f"docker-credential-{name}"
    search = (env if env is not None else os.environ).get("PATH")
    path = shutil.which(program, path=search)
    if path is None:
        if required:
            raise UsageError(f"credential helper {program} (credHelpers for {domain}) is not on PATH")
        return None
    try:
        done = subprocess.run([path, "get"], input=helper_server(domain).encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"credential helper {program} failed for {domain}: {type(exc).__name__}") from None
    if done.returncode != 0:
        said = (done.stdout + done.stderr).decode("utf-8", "replace").lower()
        if _NOT_FOUND in said:
            return None
        raise UsageError(f"credential helper {program} failed for {domain} (exit {done.returncode})")
    try:
        answer = json.loads(done.stdout)
        user, secret = answer.get("Username"), answer.get("Secret")
    except (ValueError, AttributeError):
        user = secret = None
    if not isinstance(user, str) or not isinstance(secret, str):
        raise UsageError(f"credential helper {program} answered for {domain} without Username and Secret")
    if user == "<token>":
        raise UsageError(f"credential helper {program} holds an identity token for {domain} "
                         "(OAuth2 refresh tokens are not supported): give --creds")
    if not user and not secret:
        return None
    return Credentials(user, secret, program)


def find_credentials(
    domain: str, repository: str, *, creds: str | None = None, authfile: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> Credentials | None:
    """The credentials for ``domain/repository`` (see the module docs for the order)."""
    if creds:
        return parse_creds(creds)
    if authfile:
        return lookup_file(Path(authfile), domain, repository, required=True, env=env)
    for path in default_auth_files(env):
        found = lookup_file(path, domain, repository, env=env)
        if found is not None:
            return found
    return None
