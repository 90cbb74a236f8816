"""A registry as a source (``import -i docker://``) and a sink (``export --to docker://``).

Real peers: Debian's ``docker-registry`` (CNCF distribution 2.8) in plain HTTP, TLS with a CA
made by openssl, htpasswd basic auth and token auth (a token server in the test); ``skopeo``
seeds it and checks what ctrconv pushed; a private containerd pulls with ``ctr images pull
--plain-http`` for the records ctrconv's pull must equal, and pulls what ctrconv pushed; a
fault-injecting proxy answers 503, drops connections, or holds a request while the ctrconv
process is killed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctrconv.errors import UsageError
from ctrconv.registry.client import _parse_challenge
from ctrconv.registry.credentials import find_credentials
from ctrconv.registry.reference import parse_registry_ref
from support.registry_peers import FaultProxy, TokenServer
from support.registry import PrivateRegistry
from support.registry_checks import needs_registry, one_error_line, raw_digest, records, seed, skopeo, target_of
from support.json_schemas import check as check_json_schema

FAST = ("--retry-delay", "0")


# -- pure functions ---------------------------------------------------------------------------


def test_reference_forms():
    ref = parse_registry_ref("docker://127.0.0.1:5000/team/app:1.2")
    assert (ref.domain, ref.repository, ref.tag, ref.digest, ref.hostname) == ("127.0.0.1:5000", "team/app", "1.2", None, "127.0.0.1")
    assert ref.name == "127.0.0.1:5000/team/app:1.2"
    hub = parse_registry_ref("docker://busybox")
    assert (hub.domain, hub.repository, hub.tag, hub.api_host) == ("docker.io", "library/busybox", "latest", "registry-1.docker.io")
    pinned = parse_registry_ref("docker://localhost/app@sha256:" + "a" * 64)
    assert pinned.tag == "" and pinned.reference == "sha256:" + "a" * 64
    assert parse_registry_ref("docker://reg.example/app", default_tag=False).tag == ""
    with pytest.raises(Exception) as err:
        parse_registry_ref("docker://alice:hunter2@reg.example/app")
    assert "hunter2" not in str(err.value) and "--creds" in str(err.value)


def test_https_requests_that_failed_before_the_fallback_to_http_follow_it():
    """A ``--jobs`` push to a plain-HTTP loopback registry starts its transfers at once, all over
    HTTPS: the first failed handshake falls back to HTTP, and the others, which failed alike
    before it did, found the scheme settled and stopped the push with a TLS error (found by a
    red-team run: 10 of 10 pushes under load)."""
    import ssl

    from ctrconv.registry.client import RegistryClient
    from ctrconv.registry.options import RegistryOptions

    client = RegistryClient("127.0.0.1:5999", "127.0.0.1:5999", "x", RegistryOptions())
    url = "https://127.0.0.1:5999/v2/x/blobs/sha256:" + "0" * 64
    assert client._settle_scheme(url, ssl.SSLError("wrong version number"))
    assert client._settle_scheme(url, ssl.SSLError("wrong version number"))  # another thread's request
    assert client.scheme == "http"
    assert not client._settle_scheme("https://elsewhere.example:443/blob", ssl.SSLError("wrong version number"))
    verified = RegistryClient("registry.example", "registry.example", "x", RegistryOptions())
    assert not verified._settle_scheme("https://registry.example/v2/", ssl.SSLError("wrong version number"))


def test_a_schema_1_manifest_is_named_as_such():
    """Refused as before, but the line said only "the registry served <type>, not an image
    manifest or index", without the image or the reason."""
    from ctrconv.errors import FormatError
    from ctrconv.registry.client import Response
    from ctrconv.registry.source import _media_type

    for content_type, body in (("application/vnd.docker.distribution.manifest.v1+prettyjws", b'{"schemaVersion": 1}'),
                               ("application/json", b'{"schemaVersion": 1, "fsLayers": []}')):
        with pytest.raises(FormatError, match=r"^reg\.example/x:1: the registry served a Docker schema 1 manifest"):
            _media_type(Response(200, {"Content-Type": content_type}, body), body, "reg.example/x:1")


def test_challenge_parsing():
    scheme, params = _parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "registry.example",
                      "scope": "repository:a/b:pull,push"}
    assert _parse_challenge('Basic realm="x, y"') == ("basic", {"realm": "x, y"})


def test_credentials_lookup_order(tmp_path):
    def auth_file(path: Path, key: str, user: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"auths": {key: {"auth": base64.b64encode(f"{user}:pw-{user}".encode()).decode()}}}))
        return path

    home = tmp_path / "home"
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    assert find_credentials("reg.example:5000", "app", env=env) is None
    auth_file(home / ".docker" / "config.json", "https://reg.example:5000/v1/", "docker")
    assert find_credentials("reg.example:5000", "app", env=env).username == "docker"
    auth_file(tmp_path / "run" / "containers" / "auth.json", "reg.example:5000", "podman")
    found = find_credentials("reg.example:5000", "app", env=env)
    assert (found.username, found.password) == ("podman", "pw-podman")
    assert "pw-podman" not in repr(found) and "pw-podman" not in str(found)
    # a repository-scoped key is more specific than the registry's
    auth_file(tmp_path / "scoped.json", "reg.example:5000/app", "scoped")
    assert find_credentials("reg.example:5000", "app", env={**env, "REGISTRY_AUTH_FILE": str(tmp_path / "scoped.json")}).username == "scoped"
    assert find_credentials("reg.example:5000", "other", env={**env, "REGISTRY_AUTH_FILE": str(tmp_path / "scoped.json")}) is None
    assert find_credentials("reg.example:5000", "app", creds="me:secret", env=env).username == "me"


def fake_helper(bin_dir: Path, name: str, store: dict[str, tuple[str, str]]) -> Path:
    """``docker-credential-NAME``: answers ``get`` from ``store`` (server -> user, secret) as
    docker-credential-helpers do, logs every server it was asked for, exits 1 with "credentials
    not found in native keychain" for any other."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = bin_dir / f"{name}.log"
    script = bin_dir / f"docker-credential-{name}"
    answers = {server: {"ServerURL": server, "Username": user, "Secret": secret} for server, (user, secret) in store.items()}
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"answers = {answers!r}\n"
        "assert sys.argv[1:] == ['get'], sys.argv\n"
        "server = sys.stdin.read().strip()\n"
        f"open({str(log)!r}, 'a').write(server + '\\n')\n"
        "if server not in answers:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
        "print(json.dumps(answers[server]))\n")
    script.chmod(0o755)
    return log


def test_credential_helpers(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    asked = fake_helper(bin_dir, "fake", {"reg.example:5000": ("helped", "pw-helper"),
                                          "https://index.docker.io/v1/": ("hubuser", "pw-hub")})
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    home = tmp_path / "home"
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    config = home / ".docker" / "config.json"
    config.parent.mkdir(parents=True)
    auth = base64.b64encode(b"inline:pw-inline").decode()
    # credHelpers for the registry wins over the file's own auths entry
    config.write_text(json.dumps({"auths": {"reg.example:5000": {"auth": auth}},
                                  "credHelpers": {"https://reg.example:5000": "fake"}}))
    found = find_credentials("reg.example:5000", "app", env=env)
    assert (found.username, found.password, found.origin) == ("helped", "pw-helper", "docker-credential-fake")
    assert "pw-helper" not in repr(found) + str(found)
    assert asked.read_text().split() == ["reg.example:5000"]
    # credsStore: used where auths has only docker's {} placeholder; Docker Hub by its v1 URL
    config.write_text(json.dumps({"auths": {"reg.example:5000": {}, "other.example": {"auth": auth}},
                                  "credsStore": "fake"}))
    assert find_credentials("reg.example:5000", "app", env=env).username == "helped"
    assert find_credentials("docker.io", "library/busybox", env=env).username == "hubuser"
    assert find_credentials("other.example", "app", env=env).username == "inline"
    # the helper has nothing for it: the search goes on (none left here)
    assert find_credentials("unknown.example", "app", env=env) is None
    assert asked.read_text().split()[-1] == "unknown.example"
    # containers' auth.json takes credHelpers too
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"credHelpers": {"reg.example:5000": "fake"}}))
    assert find_credentials("reg.example:5000", "app", authfile=str(authfile), env=env).username == "helped"
    # a credsStore that is not installed is skipped; a named credHelpers program must exist
    config.write_text(json.dumps({"auths": {}, "credsStore": "desktop"}))
    assert find_credentials("reg.example:5000", "app", env=env) is None
    config.write_text(json.dumps({"credHelpers": {"reg.example:5000": "missing"}}))
    with pytest.raises(UsageError, match="docker-credential-missing"):
        find_credentials("reg.example:5000", "app", env=env)
    # a helper that fails otherwise, or holds an identity token: an error that echoes nothing
    fake_helper(bin_dir, "token", {"reg.example:5000": ("<token>", "refresh-secret")})
    config.write_text(json.dumps({"credHelpers": {"reg.example:5000": "token"}}))
    with pytest.raises(UsageError, match="identity token") as err:
        find_credentials("reg.example:5000", "app", env=env)
    assert "refresh-secret" not in str(err.value)
    broken = bin_dir / "docker-credential-broken"
    broken.write_text("#!/bin/sh\necho 'secret-ish output' >&2\nexit 3\n")
    broken.chmod(0o755)
    config.write_text(json.dumps({"credHelpers": {"reg.example:5000": "broken"}}))
    with pytest.raises(UsageError, match="exit 3") as err:
        find_credentials("reg.example:5000", "app", env=env)
    assert "secret-ish" not in str(err.value)


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path):
    with PrivateRegistry(workdir=tmp_path, access_log=True) as reg:
        yield reg


# -- pull -------------------------------------------------------------------------------------


@needs_registry
@pytest.mark.parametrize("key,repo", [("bbx-oci", "lib/bbx:oci"), ("bbx-multi", "lib/bbx:multi")])
def test_pull_records_equal_ctr_pull(key, repo, fixture_set, private_containerd, registry, cli, tmp_path):
    seed(registry.host, fixture_set, key, repo)
    ref = f"{registry.host}/{repo}"
    daemon = private_containerd()
    daemon.ctr("images", "pull", "--plain-http", ref)
    daemon.stop()
    mine = tmp_path / "mine"
    result = cli("import", "--root", str(mine), "-i", f"docker://{ref}", "--plain-http", "-q")
    assert result.code == 0, result.stderr
    assert f"{ref}: imported" in result.stdout
    assert records(mine) == records(daemon.root)
    # and containerd starts on the pulled root and runs the image
    node = private_containerd(root=mine)
    assert [(r.status.split()[0], r.unpacked) for r in node.images_check()] == [("complete", True)]
    run = node.ctr("run", "--rm", ref, "ctrconv-pulled", "/bin/busybox", "true", check=False, timeout=120)
    assert run.returncode == 0, run.stderr


@needs_registry
def test_pull_by_digest_and_platform(fixture_set, registry, cli, tmp_path):
    seed(registry.host, fixture_set, "bbx-multi", "bbx:multi")
    index = raw_digest(f"docker://{registry.host}/bbx:multi")
    # verify -i reads a registry image too: every platform, every blob hashed
    checked = cli("verify", "-i", f"docker://{registry.host}/bbx:multi")
    assert checked.code == 0 and "clean" in checked.stdout and "11 blobs" in checked.stdout, checked.stdout + checked.stderr
    root = tmp_path / "root"
    result = cli("import", "--root", str(root), "-i", f"docker://{registry.host}/bbx@{index}", "--plain-http",
                 "--platform", "linux/arm64", "--no-unpack", "--json")
    assert result.code == 0, result.stderr
    check_json_schema("import", result.json)
    image = result.json["images"][0]
    assert image["name"] == f"{registry.host}/bbx@{index}" and image["digest"] == index
    assert image["platforms"] == ["linux/arm64"]
    # a digest that is not what the registry holds under it
    wrong = "sha256:" + "0" * 64
    result = cli("import", "--root", str(tmp_path / "other"), "-i", f"docker://{registry.host}/bbx@{wrong}", "--plain-http")
    assert result.code == 2 and "not found" in result.stderr
    assert not (tmp_path / "other").exists()


@needs_registry
def test_pull_through_faults_and_killed_pull_reuses_blobs(fixture_set, registry, tmp_path):
    seed(registry.host, fixture_set, "bbx-oci", "bbx:oci")
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/bbx:oci").stdout)
    layers = [layer["digest"] for layer in manifest["layers"]]
    root = tmp_path / "root"

    def hold_second_layer(method: str, path: str, n: int) -> str | None:
        return "block" if method == "GET" and path.endswith(layers[1]) else None

    with FaultProxy(registry.host, hold_second_layer) as proxy:
        proc = subprocess.Popen([sys.executable, "-m", "ctrconv", "import", "--root", str(root), "-q",
                                 "-i", f"docker://{proxy.host}/bbx:oci", "--plain-http", *FAST],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proxy.reached.wait(120), proc.communicate(timeout=5)
        # the first layer is fetched side by side with the held one: killed once it is in
        first = root / "io.containerd.content.v1.content" / "blobs" / "sha256" / layers[0][7:]
        deadline = time.monotonic() + 120
        while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate(timeout=5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # killed: the first layer was fetched, but no image is recorded
    assert first.is_file()
    meta = root / "io.containerd.metadata.v1.bolt" / "meta.db"
    # (the locked placeholder of a new root's meta.db may stay: empty, as bbolt and the next
    # writer take a 0-byte file)
    assert not meta.exists() or meta.stat().st_size == 0 or records(root)[0] == {}

    # the re-run goes through 503s and dropped connections and fetches only what is missing
    def flaky(method: str, path: str, n: int) -> str | None:
        if n == 1 and method in ("GET", "HEAD"):
            return "503"
        if n == 2 and method == "GET" and "/blobs/" in path:
            return "drop-mid"
        return None

    with FaultProxy(registry.host, flaky) as proxy:
        result = subprocess.run([sys.executable, "-m", "ctrconv", "import", "--root", str(root), "-q",
                                 "-i", f"docker://{proxy.host}/bbx:oci", "--plain-http", *FAST],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        fetched = [path for method, path in proxy.seen if method == "GET" and "/blobs/" in path]
    assert not [p for p in fetched if p.endswith(layers[0])]
    assert [p for p in fetched if p.endswith(layers[1])]
    verify = subprocess.run([sys.executable, "-m", "ctrconv", "verify", "--root", str(root)],
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@needs_registry
def test_pull_fetches_side_by_side_and_unpacks_a_layer_while_it_downloads(fixture_set, registry, cli, tmp_path):
    """The first layer is served half, then held: meanwhile the other layers are requested (they
    are fetched side by side) and the first layer's snapshot already has files (unpacked from
    the stream, in a temp dir). Released, the pull completes; nothing was installed before."""
    seed(registry.host, fixture_set, "bbx-oci", "side/bbx:oci")
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/side/bbx:oci").stdout)
    layers = [layer["digest"] for layer in manifest["layers"]]
    assert len(layers) >= 2

    def hold_first_layer(method: str, path: str, n: int) -> str | None:
        return "hold-mid" if method == "GET" and path.endswith(layers[0]) else None

    root = tmp_path / "root"
    overlay = root / "io.containerd.snapshotter.v1.overlayfs"
    blobs = root / "io.containerd.content.v1.content" / "blobs" / "sha256"

    def concurrent() -> bool:
        return all((blobs / d[7:]).is_file() for d in layers[1:])
    with FaultProxy(registry.host, hold_first_layer) as proxy:
        proc = subprocess.Popen([sys.executable, "-m", "ctrconv", "import", "--root", str(root), "-q", "--json",
                                 "-i", f"docker://{proxy.host}/side/bbx:oci", "--plain-http", *FAST],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proxy.reached.wait(120), proc.communicate(timeout=5)

        def unpacking() -> list[Path]:
            return [p for p in overlay.glob(".ctrconv-tmp-*/snap-*/fs/*")]

        deadline = time.monotonic() + 90  # the proxy holds for 120 s: the checks below say what is missing
        while (not concurrent() or not unpacking()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.holding.is_set(), "the held layer must still be half sent here"
        assert concurrent(), "the other layers were not fetched while the first one downloaded"
        assert not (blobs / layers[0][7:]).exists()
        assert unpacking(), "the first layer was not unpacked while it downloaded"
        assert not (overlay / "snapshots").is_dir() or not any((overlay / "snapshots").iterdir())
        proxy.release.set()
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["blobs_written"] == len(layers) + 2 and report["images"][0]["snapshots_created"] == len(layers)
    assert cli("verify", "--root", str(root)).code == 0
    assert not list(overlay.glob(".ctrconv-tmp-*"))


def _layers_of(host: str, repo: str) -> list[str]:
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{host}/{repo}").stdout
    return [layer["digest"] for layer in json.loads(raw)["layers"]]


def _wait_for(check, proc: subprocess.Popen, limit: float = 90.0) -> None:  # type: ignore[type-arg]
    """Until ``check()`` holds or the process ended (the caller's asserts say what is missing)."""
    deadline = time.monotonic() + limit
    while not check() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


@needs_registry
def test_two_registry_inputs_download_in_one_pool(fixture_set, registry, tmp_path):
    """Two ``docker://`` inputs: while a layer of the first is held half sent, the other input's
    layers are fetched (one pool of ``--jobs`` downloads for every input, not one blob at a
    time input after input); released, both images import, every blob fetched once."""
    seed(registry.host, fixture_set, "bbx-oci", "one/bbx:oci")
    # the same files in zstd layers: blobs of its own
    skopeo("copy", "--dest-tls-verify=false", f"oci-archive:{fixture_set.inputs / 'bbx-zstd.tar'}:zstd",
           f"docker://{registry.host}/two/bbx:zstd")
    first, second = _layers_of(registry.host, "one/bbx:oci"), _layers_of(registry.host, "two/bbx:zstd")
    others = [d for d in second if d not in first]
    assert others, "the two images must have layers of their own for this test to mean anything"
    blobs = tmp_path / "root" / "io.containerd.content.v1.content" / "blobs" / "sha256"

    def hold(method: str, path: str, n: int) -> str | None:
        return "hold-mid" if method == "GET" and path == f"/v2/one/bbx/blobs/{first[0]}" else None

    with FaultProxy(registry.host, hold) as proxy:
        proc = subprocess.Popen([sys.executable, "-m", "ctrconv", "import", "--root", str(tmp_path / "root"), "-q",
                                 "--json", "-i", f"docker://{proxy.host}/one/bbx:oci", "-i",
                                 f"docker://{proxy.host}/two/bbx:zstd", "--plain-http", "-j", "8", *FAST],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proxy.reached.wait(120), proc.communicate(timeout=5)
        _wait_for(lambda: all((blobs / d[7:]).is_file() for d in others), proc)
        assert proxy.holding.is_set(), "the held layer must still be half sent here"
        assert all((blobs / d[7:]).is_file() for d in others), "the second input waited for the first one's download"
        proxy.release.set()
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert len(json.loads(out)["images"]) == 2
    fetched = [path.rsplit("/", 1)[1] for method, path in proxy.seen if method == "GET" and "/blobs/" in path]
    assert sorted(fetched) == sorted(set(fetched)), "a blob was downloaded twice"


@needs_registry
def test_an_archive_input_serves_the_blobs_a_registry_input_shares(fixture_set, registry, cli, tmp_path):
    """An OCI archive and a registry holding the same image, imported together: every blob is
    read from the archive, the registry is only asked for its manifest."""
    seed(registry.host, fixture_set, "bbx-oci", "same/bbx:oci")
    with FaultProxy(registry.host) as proxy:
        # the registry named first: still only asked what no local input holds
        result = cli("import", "--root", str(tmp_path / "root"), "-i", f"docker://{proxy.host}/same/bbx:oci",
                     "-i", str(fixture_set.inputs / "bbx-oci.tar"), "--plain-http", "--json", *FAST)
    assert result.code == 0, result.stderr
    names = [i["name"] for i in result.json["images"]]
    assert f"{proxy.host}/same/bbx:oci" in names and result.json["blobs_written"] >= 3, names
    assert [m for m, path in proxy.seen if "/blobs/" in path] == [], proxy.seen
    assert [m for m, path in proxy.seen if "/manifests/" in path] == ["GET"]
    assert cli("verify", "--root", str(tmp_path / "root")).code == 0


@needs_registry
@pytest.mark.parametrize("held", [0, -1], ids=["first-layer", "last-layer"])
def test_parallel_unpack_starts_before_the_downloads_end(held, fixture_set, registry, cli, tmp_path):
    """``-j 3`` (layers unpacked side by side in worker processes): while one layer is held half
    sent (the first: its worker reads it as it arrives; the last: the layers below it), a
    snapshot already has files; released, the pull completes."""
    seed(registry.host, fixture_set, "bbx-oci", "par/bbx:oci")
    layers = _layers_of(registry.host, "par/bbx:oci")
    assert len(layers) >= 2
    overlay = tmp_path / "root" / "io.containerd.snapshotter.v1.overlayfs"

    def hold_last(method: str, path: str, n: int) -> str | None:
        return "hold-mid" if method == "GET" and path.endswith(layers[held]) else None

    def unpacked() -> list[Path]:
        return list(overlay.glob(".ctrconv-tmp-*/snap-*/fs/*"))

    with FaultProxy(registry.host, hold_last) as proxy:
        proc = subprocess.Popen([sys.executable, "-m", "ctrconv", "import", "--root", str(tmp_path / "root"), "-q",
                                 "--json", "-i", f"docker://{proxy.host}/par/bbx:oci", "--plain-http", "-j", "3",
                                 *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proxy.reached.wait(120), proc.communicate(timeout=5)
        _wait_for(unpacked, proc)
        assert proxy.holding.is_set(), "the held layer must still be half sent here"
        assert unpacked(), "no layer was unpacked while a download was held"
        assert not (overlay / "snapshots").is_dir() or not any((overlay / "snapshots").iterdir())
        proxy.release.set()
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(out)["images"][0]["snapshots_created"] == len(layers)
    assert cli("verify", "--root", str(tmp_path / "root")).code == 0
    assert not list(overlay.glob(".ctrconv-tmp-*"))


@needs_registry
def test_sigterm_during_a_parallel_pull_stops_workers_and_downloads(fixture_set, registry, tmp_path):
    """``-j 3``, the last layer held half sent: the first layer unpacks in a worker while the
    main process waits for that download. SIGTERM then: exit 128+15, one line, no image, no
    snapshot, no temp dirs, and no worker process of the import left."""
    seed(registry.host, fixture_set, "bbx-oci", "term/bbx:oci")
    layers = _layers_of(registry.host, "term/bbx:oci")
    root = tmp_path / "root"
    overlay = root / "io.containerd.snapshotter.v1.overlayfs"

    def hold_last(method: str, path: str, n: int) -> str | None:
        return "hold-mid" if method == "GET" and path.endswith(layers[-1]) else None

    def unpacked() -> list[Path]:
        return list(overlay.glob(".ctrconv-tmp-*/snap-*/fs/*"))

    with FaultProxy(registry.host, hold_last) as proxy:
        proc = subprocess.Popen([sys.executable, "-m", "ctrconv", "import", "--root", str(root), "-q",
                                 "-i", f"docker://{proxy.host}/term/bbx:oci", "--plain-http", "-j", "3", *FAST],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        assert proxy.reached.wait(120), proc.communicate(timeout=5)
        _wait_for(unpacked, proc)
        assert unpacked() and proxy.holding.is_set() and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 128 + signal.SIGTERM and len(lines) == 1 and lines[0].startswith("ctrconv: "), err
    meta = root / "io.containerd.metadata.v1.bolt" / "meta.db"
    # (the locked placeholder of a new root's meta.db may stay: empty, as bbolt and the next
    # writer take a 0-byte file)
    assert not meta.exists() or meta.stat().st_size == 0 or records(root)[0] == {}
    assert not list(overlay.glob("snapshots/*")) and not list(overlay.glob(".ctrconv-tmp-*"))
    assert not list((root / "io.containerd.content.v1.content").glob(".ctrconv-tmp-*"))
    # the workers were killed before the cleanup; the forkserver (and multiprocessing's
    # resource tracker) end once they see the import gone: nothing of its session stays
    deadline, left = time.monotonic() + 60, ["?"]
    while left and time.monotonic() < deadline:
        listed = subprocess.run(["pgrep", "-a", "-s", str(proc.pid)], capture_output=True, text=True).stdout
        left = [line for line in listed.splitlines() if "<defunct>" not in line]  # dead, not yet reaped
        time.sleep(0.1)
    assert left == [], left


@needs_registry
@pytest.mark.parametrize("jobs", ["1", "3"])
def test_a_layer_download_that_fails_mid_unpack_leaves_nothing(fixture_set, registry, tmp_path, jobs):
    """The first layer is cut half way every time (no retries left): the unpack reading it (in
    this process, or with ``-j 3`` in a worker reading it as it arrives) fails, the other
    downloads are cut, and the import fails as a whole: one error line, no image, no snapshot,
    no temp dirs, no blob of the cut layer left."""
    repo = f"cut{jobs}/bbx:oci"
    seed(registry.host, fixture_set, "bbx-oci", repo)
    first = _layers_of(registry.host, repo)[0]

    def always_cut(method: str, path: str, n: int) -> str | None:
        return "drop-mid" if method == "GET" and path.endswith(first) else None

    root = tmp_path / "root"
    # a subprocess: the proxy's threads print the connections they lose on this process's stderr
    with FaultProxy(registry.host, always_cut) as proxy:
        result = subprocess.run([sys.executable, "-m", "ctrconv", "import", "--root", str(root), "--plain-http",
                                 "-i", f"docker://{proxy.host}/{repo}", "--retries", "0", "-j", jobs, *FAST],
                                capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("ctrconv: error: "), result.stderr
    assert first in lines[0] and "connection dropped" in lines[0], lines[0]
    meta = root / "io.containerd.metadata.v1.bolt" / "meta.db"
    # (the locked placeholder of a new root's meta.db may stay: empty, as bbolt and the next
    # writer take a 0-byte file)
    assert not meta.exists() or meta.stat().st_size == 0 or records(root)[0] == {}
    overlay = root / "io.containerd.snapshotter.v1.overlayfs"
    assert not list(overlay.glob("snapshots/*")) and not list(overlay.glob(".ctrconv-tmp-*"))
    assert not list((root / "io.containerd.content.v1.content").glob(".ctrconv-tmp-*"))
    assert not (root / "io.containerd.content.v1.content" / "blobs" / "sha256" / first[7:]).exists()


# -- push -------------------------------------------------------------------------------------


@needs_registry
def test_push_pulls_back_with_skopeo_and_ctr_and_a_rerun_only_heads(fixture_set, registry, private_containerd, cli, tmp_path):
    root = fixture_set.root
    name = "docker.io/library/bbx:oci"
    dest = f"docker://{registry.host}/pushed/bbx"
    result = cli("export", "--root", str(root), "--image", name, "--to", dest, "--plain-http", "--json", "--ignore-lock",
                 "--chunk-threshold", "64K", "--chunk-size", "100000")
    assert result.code == 0, result.stderr
    report = result.json
    check_json_schema("export", report)
    assert report["images"][0]["destinations"] == [f"{registry.host}/pushed/bbx:oci"]
    assert report["blobs_uploaded"] == 4 and report["tags_pushed"] == 1
    digest = target_of(root, name)
    assert raw_digest(f"docker://{registry.host}/pushed/bbx:oci") == digest
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/pushed/bbx:oci", f"oci:{tmp_path / 'layout'}:x")

    before = len(registry.access_lines())
    again = cli("export", "--root", str(root), "--image", name, "--to", dest, "--plain-http", "--json", "--ignore-lock")
    assert again.code == 0, again.stderr
    assert again.json["blobs_present"] == 4 and again.json["blobs_uploaded"] == 0 and again.json["tags_present"] == 1
    methods = {line.split()[0] for line in registry.access_lines()[before:]}
    assert methods == {"HEAD"}, registry.access_lines()[before:]

    daemon = private_containerd()
    daemon.ctr("images", "pull", "--plain-http", f"{registry.host}/pushed/bbx:oci")
    run = daemon.ctr("run", "--rm", f"{registry.host}/pushed/bbx:oci", "ctrconv-pushed", "/bin/busybox", "true",
                     check=False, timeout=120)
    assert run.returncode == 0, run.stderr


@needs_registry
def test_push_index_whole_or_one_platform(fixture_set, registry, cli):
    root = fixture_set.root
    index = target_of(root, "docker.io/library/bbx:multi")
    whole = cli("export", "--root", str(root), "--image", "bbx:multi", "--all-platforms", "--ignore-lock",
                "--to", f"docker://{registry.host}/multi/bbx:all", "--plain-http", "-q")
    assert whole.code == 0, whole.stderr
    assert raw_digest(f"docker://{registry.host}/multi/bbx:all") == index
    one = cli("export", "--root", str(root), "--image", "bbx:multi", "--platform", "linux/arm64", "--ignore-lock",
              "--to", f"docker://{registry.host}/multi/bbx:arm64", "--json")  # loopback: HTTP without --plain-http
    assert one.code == 0, one.stderr
    pushed = one.json["images"][0]
    assert pushed["index"] == index and pushed["platforms"] == ["linux/arm64"]
    assert raw_digest(f"docker://{registry.host}/multi/bbx:arm64") == pushed["digest"] != index
    # the sparse index lacks its other platforms: they cannot be pushed whole
    sparse = cli("export", "--root", str(root), "--image", "bbx:sparse", "--all-platforms", "--ignore-lock",
                 "--to", f"docker://{registry.host}/multi/bbx:sparse", "--plain-http")
    assert sparse.code == 1 and "missing" in sparse.stderr


@needs_registry
def test_push_through_faults_and_a_killed_push_resumes(fixture_set, registry, tmp_path):
    root = fixture_set.root
    name = "docker.io/library/bbx:oci"
    small = ("--chunk-threshold", "64K", "--chunk-size", "64K")

    def hold_fourth_chunk(method: str, path: str, n: int) -> str | None:
        if method == "PATCH":
            hold_fourth_chunk.patches += 1  # type: ignore[attr-defined]
            if hold_fourth_chunk.patches == 4:  # type: ignore[attr-defined]
                return "block"
        return None

    hold_fourth_chunk.patches = 0  # type: ignore[attr-defined]
    with FaultProxy(registry.host, hold_fourth_chunk) as proxy:
        proc = subprocess.Popen([sys.executable, "-m", "ctrconv", "export", "--root", str(root), "--image", name,
                                 "--ignore-lock", "-q", "--to", f"docker://{proxy.host}/killed/bbx", "--plain-http",
                                 *small, *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proxy.reached.wait(120), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    tags = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{registry.host}/killed/bbx"],
                          capture_output=True, text=True, timeout=60)
    assert tags.returncode != 0 or json.loads(tags.stdout)["Tags"] in (None, [])  # no tag on a partial image

    # the re-run streams each large blob in one PATCH (the default): the first is answered 503,
    # the second loses its connection; each time that blob starts over in a new session
    patches = []

    def flaky(method: str, path: str, n: int) -> str | None:
        if method == "PATCH":
            patches.append(path)
            return {1: "503", 2: "drop"}.get(len(patches))
        if n == 1 and method in ("HEAD", "POST", "PUT"):
            return "503"
        return None

    with FaultProxy(registry.host, flaky) as proxy:
        result = subprocess.run([sys.executable, "-m", "ctrconv", "export", "--root", str(root), "--image", name,
                                 "--ignore-lock", "--json", "--to", f"docker://{proxy.host}/killed/bbx", "--plain-http",
                                 "--chunk-threshold", "64K", *FAST], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(patches) >= 3 and len(set(patches)) == len(patches)  # a new session for each attempt
    assert raw_digest(f"docker://{registry.host}/killed/bbx:oci") == target_of(root, name)
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/killed/bbx:oci", f"oci:{tmp_path / 'back'}:x")


# -- auth and TLS -----------------------------------------------------------------------------


@needs_registry
def test_basic_auth(fixture_set, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with PrivateRegistry(workdir=tmp_path, users={"alice": "s3cret-pw"}) as reg:
        push = ("export", "--root", str(fixture_set.root), "--image", "bbx:oci", "--ignore-lock",
                "--to", f"docker://{reg.host}/auth/bbx", "--plain-http", *FAST)
        anonymous = one_error_line(cli(*push))
        assert "requires a user name and password" in anonymous and "--creds" in anonymous
        wrong = one_error_line(cli(*push, "--creds", "alice:nope"))
        assert "authentication failed as alice" in wrong and "nope" not in wrong
        result = cli(*push, "--creds", "alice:s3cret-pw", "--json")
        assert result.code == 0, result.stderr
        assert "s3cret-pw" not in result.stdout + result.stderr
        # pull with credentials from an auth file, from REGISTRY_AUTH_FILE, from ~/.docker/config.json
        auth = {"auths": {reg.host: {"auth": base64.b64encode(b"alice:s3cret-pw").decode()}}}
        authfile = tmp_path / "auth.json"
        authfile.write_text(json.dumps(auth))
        pull = ("import", "-i", f"docker://{reg.host}/auth/bbx:oci", "--plain-http", "-q", *FAST)
        failed = one_error_line(cli(*pull, "--root", str(tmp_path / "r0")))
        assert "requires a user name and password" in failed
        assert not (tmp_path / "r0").exists()
        r1 = cli(*pull, "--root", str(tmp_path / "r1"), "--authfile", str(authfile))
        assert r1.code == 0, r1.stderr
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(authfile))
        assert cli(*pull, "--root", str(tmp_path / "r2")).code == 0
        monkeypatch.delenv("REGISTRY_AUTH_FILE")
        docker_config = tmp_path / "home" / ".docker" / "config.json"
        docker_config.parent.mkdir(parents=True)
        docker_config.write_text(json.dumps(auth))
        assert cli(*pull, "--root", str(tmp_path / "r3")).code == 0
        assert records(tmp_path / "r1") == records(tmp_path / "r3")
        # docker login with a credential store: config.json holds only a placeholder
        asked = fake_helper(tmp_path / "bin", "teststore", {reg.host: ("alice", "s3cret-pw")})
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
        docker_config.write_text(json.dumps({"auths": {reg.host: {}}, "credsStore": "teststore"}))
        helped = cli(*pull, "--root", str(tmp_path / "r4"), "--json")
        assert helped.code == 0, helped.stderr
        assert asked.read_text().split() == [reg.host]
        assert "s3cret-pw" not in helped.stdout + helped.stderr
        assert records(tmp_path / "r1") == records(tmp_path / "r4")


@needs_registry
def test_token_auth_push_pull_and_cross_repository_mount(fixture_set, cli, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    caplog.set_level(logging.DEBUG)  # requests and urllib3 log every request at DEBUG: no secret in it
    with TokenServer(tmp_path, users={"bob": "pw-bob"}) as tokens, \
            PrivateRegistry(workdir=tmp_path, token=tokens.registry_config(), access_log=True) as reg:
        creds = ("--creds", "bob:pw-bob", "--plain-http", *FAST)
        pushed = cli("export", "--root", str(fixture_set.root), "--image", "bbx:oci", "--ignore-lock",
                     "--to", f"docker://{reg.host}/team/a", *creds, "--json")
        assert pushed.code == 0, pushed.stderr
        assert pushed.json["blobs_uploaded"] == 4
        root = tmp_path / "pulled"
        result = cli("import", "--root", str(root), "-i", f"docker://{reg.host}/team/a:oci", *creds, "-q")
        assert result.code == 0, result.stderr
        labels = [b[1] for b in records(root)[1].values()]
        assert labels and all(lbl.get("containerd.io/distribution.source.127.0.0.1") == "team/a" for lbl in labels)
        # pushed to another repository of the same registry: mounted from team/a, nothing uploaded
        before = len(reg.access_lines())
        mounted = cli("export", "--root", str(root), "--all", "--to", f"docker://{reg.host}/team/b", *creds, "--json")
        assert mounted.code == 0, mounted.stderr
        assert mounted.json["blobs_mounted"] == 4 and mounted.json["blobs_uploaded"] == 0
        assert not [line for line in reg.access_lines()[before:] if line.startswith("PATCH") or "digest=" in line]
        assert any("repository:team/a:pull" in s for q in tokens.requests for s in q.get("scope", []))
        assert raw_digest(f"docker://{reg.host}/team/b:oci", "--creds", "bob:pw-bob") == \
            target_of(fixture_set.root, "docker.io/library/bbx:oci")
        wrong = one_error_line(cli("import", "--root", str(tmp_path / "no"), "-i", f"docker://{reg.host}/team/a:oci",
                                   "--creds", "bob:wrong", "--plain-http", *FAST))
        assert "refused the credentials" in wrong and "wrong" not in wrong.split("as bob")[-1]
        assert not (tmp_path / "no").exists()
    logged = caplog.text
    assert "urllib3" in logged or "HTTP/1.1" in logged  # the transport's debug log was captured
    basic = base64.b64encode(b"bob:pw-bob").decode()
    assert "pw-bob" not in logged and basic not in logged and "Bearer" not in logged and "token=" not in logged


@needs_registry
def test_tls_private_ca_and_failures(fixture_set, cli, tmp_path):
    with PrivateRegistry(workdir=tmp_path, tls=True) as reg:
        seed(reg.host, fixture_set, "bbx-oci", "tls/bbx:oci", "--dest-cert-dir", str(reg.cert_dir / reg.host))
        src = f"docker://{reg.host}/tls/bbx:oci"
        untrusted = one_error_line(cli("import", "--root", str(tmp_path / "r0"), "-i", src, *FAST))
        assert "certificate not trusted" in untrusted
        assert not (tmp_path / "r0").exists()
        assert cli("import", "--root", str(tmp_path / "r1"), "-i", src, "--ca-file", str(reg.ca_cert), "-q").code == 0
        assert cli("import", "--root", str(tmp_path / "r2"), "-i", src, "--cert-dir", str(reg.cert_dir), "-q").code == 0
        assert cli("import", "--root", str(tmp_path / "r3"), "-i", src, "--tls-verify=false", "-q").code == 0
        # containerd's hosts.toml naming the CA elsewhere
        hosts = tmp_path / "containerd-certs.d" / reg.host
        hosts.mkdir(parents=True)
        (hosts / "hosts.toml").write_text(f'server = "https://{reg.host}"\n\n[host."https://{reg.host}"]\n'
                                          f'  ca = "{reg.ca_cert}"\n')
        assert cli("import", "--root", str(tmp_path / "r5"), "-i", src, "--cert-dir", str(hosts.parent), "-q").code == 0
        pushed = cli("export", "--root", str(fixture_set.root), "--image", "bbx:docker", "--ignore-lock",
                     "--to", f"docker://{reg.host}/tls/pushed", "--ca-file", str(reg.ca_cert), "-q")
        assert pushed.code == 0, pushed.stderr
    # a certificate for another name
    with PrivateRegistry(workdir=tmp_path, tls=True, tls_names=("registry.invalid",)) as reg:
        mismatch = one_error_line(cli("import", "--root", str(tmp_path / "r4"), "-i", f"docker://{reg.host}/x:y",
                                      "--ca-file", str(reg.ca_cert), *FAST))
        assert "certificate not trusted" in mismatch and "127.0.0.1" in mismatch
        assert not (tmp_path / "r4").exists()


@needs_registry
def test_registry_down(cli, tmp_path):
    from support.registry import free_port

    host = f"127.0.0.1:{free_port()}"
    pull = one_error_line(cli("import", "--root", str(tmp_path / "root"), "-i", f"docker://{host}/x:y", "--plain-http"))
    assert f"cannot reach {host}" in pull
    assert not (tmp_path / "root").exists()
    usage = cli("export", "--root", str(tmp_path), "--image", "x", "-o", str(tmp_path / "o.tar"), "--creds", "a:b")
    assert usage.code == 2 and "--to" in usage.stderr


@needs_registry
@pytest.mark.parametrize("mode", [("--chunk-threshold", "64K"), ("--chunk-threshold", "64K", "--chunk-size", "64K"), ()],
                         ids=["streamed", "chunked", "monolithic"])
def test_push_of_a_corrupt_blob_commits_nothing(mode, tmp_root_copy, registry, cli):
    name = "docker.io/library/bbx:oci"
    manifest_digest = target_of(tmp_root_copy, name)
    blobs = tmp_root_copy / "io.containerd.content.v1.content" / "blobs" / "sha256"
    manifest = json.loads((blobs / manifest_digest[7:]).read_bytes())
    layer = max(manifest["layers"], key=lambda d: d["size"])
    path = blobs / layer["digest"][7:]
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    result = cli("export", "--root", str(tmp_root_copy), "--image", name, "--to", f"docker://{registry.host}/bad/bbx",
                 "--plain-http", *mode, *FAST)
    assert one_error_line(result) and "digest mismatch" in result.stderr
    from ctrconv.registry.client import RegistryClient, RegistryOptions

    client = RegistryClient(registry.host, registry.host, "bad/bbx", RegistryOptions(plain_http=True))
    scopes = ("repository:bad/bbx:pull",)
    assert client.request("HEAD", f"/v2/bad/bbx/blobs/{layer['digest']}", scopes=scopes).status == 404
    assert client.request("HEAD", "/v2/bad/bbx/manifests/oci", scopes=scopes).status == 404


@needs_registry
@pytest.mark.interop
@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_pull_into_k8s_io_records_equal_a_cri_pull(line, fixture_set, registry, private_containerd, cli, tmp_path):
    """``-n k8s.io``: the three CRI names and CRI labels, as the kubelet's pull (CRI ``PullImage``)
    of each containerd line writes them, apart from timestamps. (``private_containerd`` only
    for its skip rule: this daemon runs with the CRI plugin.)"""
    from support.cri import ImageServiceClient
    from support.daemon import PrivateContainerd
    from support.versions import bin_dir_for
    bin_dir = None if line == "1.6" else str(bin_dir_for(line))
    seed(registry.host, fixture_set, "bbx-multi", "cri/bbx:multi")
    ref = f"{registry.host}/cri/bbx:multi"
    node = tmp_path / "node"
    with PrivateContainerd(bin_dir, root=node, workdir=tmp_path, cri=True) as daemon:
        daemon.add_plain_http_registry(registry.host)
        with ImageServiceClient(daemon.address) as client:
            client.wait_ready()
            image_id = client.pull_image(ref)
        daemon.stop()
    mine = tmp_path / "mine"
    result = cli("import", "--root", str(mine), "-n", "k8s.io", "-i", f"docker://{ref}", "--json",
                 "--containerd-version", line)
    assert result.code == 0, result.stderr
    assert image_id in result.json["images"][0]["names"]
    assert records(mine, "k8s.io") == records(node, "k8s.io")


@needs_registry
def test_sigterm_stops_a_parallel_push_without_a_tag(fixture_set, registry):
    """``--jobs 2``: a signal while one upload hangs stops the others too; exit 128+15."""
    name = "docker.io/library/bbx:multi"

    def hold_uploads(method: str, path: str, n: int) -> str | None:
        return "block" if method in ("PATCH", "PUT") and "/blobs/uploads/" in path else None

    with FaultProxy(registry.host, hold_uploads) as proxy:
        proc = subprocess.Popen([sys.executable, "-m", "ctrconv", "export", "--root", str(fixture_set.root), "--image",
                                 name, "--all-platforms", "--ignore-lock", "-q", "--jobs", "2",
                                 "--to", f"docker://{proxy.host}/stopped/bbx", "--plain-http", *FAST],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proxy.reached.wait(120), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)  # a hang would fail here; the proxy holds for 300 s
    assert proc.returncode == 128 + signal.SIGTERM, err
    tags = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{registry.host}/stopped/bbx"],
                          capture_output=True, text=True, timeout=60)
    assert tags.returncode != 0 or json.loads(tags.stdout)["Tags"] in (None, [])


@needs_registry
def test_anonymous_bearer_tokens_and_two_registry_inputs(fixture_set, registry, cli, tmp_path, monkeypatch):
    """A token server that grants anonymous pulls (Docker Hub's way): no credentials at all; and two
    ``docker://`` inputs of two registries imported as one transaction."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    seed(registry.host, fixture_set, "bbx-docker", "plain/bbx:docker")
    with TokenServer(tmp_path) as tokens, PrivateRegistry(workdir=tmp_path, token=tokens.registry_config()) as reg:
        seed(reg.host, fixture_set, "bbx-oci", "anon/bbx:oci")
        root = tmp_path / "root"
        before = len(tokens.requests)
        result = cli("import", "--root", str(root), "-i", f"docker://{reg.host}/anon/bbx:oci",
                     "-i", f"docker://{registry.host}/plain/bbx:docker", "--json", *FAST)
        assert result.code == 0, result.stderr
        assert sorted(i["name"] for i in result.json["images"]) == \
            sorted([f"{reg.host}/anon/bbx:oci", f"{registry.host}/plain/bbx:docker"])
        # one anonymous token for the pull scope, reused for every request of the pull
        assert [q.get("scope") for q in tokens.requests[before:]] == [["repository:anon/bbx:pull"]]


@needs_registry
@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
def test_pull_resumes_a_blob_cut_short(ranges, fixture_set, registry, cli, tmp_path):
    """Every blob download is cut half way once: resumed with ``Range``, or read again from the
    start and the bytes already written skipped when the server ignores ``Range``."""
    seed(registry.host, fixture_set, "bbx-oci", "cut/bbx:oci")

    def cut_once(method: str, path: str, n: int) -> str | None:
        return "drop-mid" if method == "GET" and "/blobs/" in path and n == 1 else None

    with FaultProxy(registry.host, cut_once, ranges=ranges) as proxy:
        root = tmp_path / "root"
        result = cli("import", "--root", str(root), "-i", f"docker://{proxy.host}/cut/bbx:oci", "--plain-http", "-q",
                     *FAST)
        assert result.code == 0, result.stderr
        gets = [path for method, path in proxy.seen if method == "GET" and "/blobs/" in path]
    assert len(gets) == 2 * len(set(gets))  # each blob: the cut download and its resumption
    assert cli("verify", "--root", str(root)).code == 0


def test_an_endless_manifest_answer_is_cut_at_the_document_limit(registry, cli, tmp_path):
    """A registry (or a proxy) answering a manifest GET with an endless body: ctrconv read it all
    into memory before its size check (6.2 GB of RSS for a 3 GB answer, found by a red-team run);
    it now stops reading past the largest document there is, with one error line."""
    with FaultProxy(registry.host, lambda method, path, n: "endless" if "/manifests/" in path else None) as proxy:
        result = cli("import", "--root", str(tmp_path / "root"), "-i", f"docker://{proxy.host}/endless/img:v1",
                     "--plain-http", *FAST)
        sent = proxy.endless_sent
    assert "runs past 16777216 bytes" in one_error_line(result)
    assert sent < 64 << 20, sent  # (what the client's socket buffers took on top of 16 MiB)


def test_a_relative_upload_location_is_resolved_against_the_upload_url(fixture_set, registry, cli):
    """An upload session's ``Location`` given as a relative reference (no leading ``/``): ctrconv
    glued it onto the host name ("'NoneType' object has no attribute 'groups'"); skopeo resolves
    it against the request's URL (RFC 3986), and so does ctrconv now."""
    def relative(method: str, path: str, n: int) -> str | None:
        return "relative-location" if method in ("POST", "PATCH") else None

    with FaultProxy(registry.host, relative) as proxy:
        result = cli("export", "--root", str(fixture_set.root), "--image", "docker.io/library/bbx:oci", "--ignore-lock",
                     "-q", "--to", f"docker://{proxy.host}/relative/bbx:oci", "--plain-http",
                     "--chunk-threshold", "64K", "--chunk-size", "64K", *FAST)
        assert result.code == 0, result.stderr
        assert any(method == "PATCH" for method, _ in proxy.seen)
    pulled = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/relative/bbx:oci")
    assert json.loads(pulled.stdout)["layers"]


def test_a_manifest_containerd_would_not_resolve_is_refused(fixture_set, registry, cli, tmp_path):
    """A 5 MiB manifest: containerd's resolver rejects any over 4*1048*1048 bytes (1.6 to 2.x),
    so a node never pulls it; ctrconv pulled it (found by a red-team run)."""
    seed(registry.host, fixture_set, "bbx-oci", "bbx:oci")
    with FaultProxy(registry.host, lambda method, path, n: "padded" if "/manifests/" in path else None) as proxy:
        result = cli("import", "--root", str(tmp_path / "root"), "-i", f"docker://{proxy.host}/bbx:oci",
                     "--plain-http", *FAST)
    assert "containerd resolves none over 4393216" in one_error_line(result)


@needs_registry
def test_documents_the_root_holds_are_not_fetched_again(fixture_set, registry, cli, tmp_path):
    """A pull read every index, manifest and config from the registry even when the root held
    it: a first pull of an index fetched its config twice (the content copy, then the unpack),
    a re-pull asked again for every document, and a registry answering 404 for a config the
    root holds failed an import that ``ctr images pull`` completes (found by a red-team run).
    Documents the root holds are now read from it, as containerd's pull reads its store first."""
    seed(registry.host, fixture_set, "bbx-multi", "held/bbx:multi")
    root = tmp_path / "root"
    with FaultProxy(registry.host) as proxy:
        ref = f"docker://{proxy.host}/held/bbx:multi"
        assert cli("import", "--root", str(root), "-i", ref, "--plain-http", "-q", *FAST).code == 0
        gets = [path for method, path in proxy.seen if method == "GET"]
        assert len(gets) == len(set(gets)), gets  # each document and blob once
        proxy.seen.clear()
        again = cli("import", "--root", str(root), "-i", ref, "--plain-http", "-q", *FAST)
        assert again.code == 0, again.stderr
        assert proxy.seen == [("GET", "/v2/held/bbx/manifests/multi")]
    config = next(path for path in gets if "/blobs/" in path)
    missing = {config, next(path for path in gets if "/manifests/sha256:" in path)}

    def lost(method: str, path: str, n: int) -> tuple[str, int, str, bytes] | None:
        return ("serve", 404, "application/json", b'{"errors":[{"code":"BLOB_UNKNOWN"}]}') if path in missing else None

    with FaultProxy(registry.host, lost) as proxy:
        result = cli("import", "--root", str(root), "-i", f"docker://{proxy.host}/held/bbx:multi", "--plain-http",
                     "--name", "held/bbx:again", "-q", *FAST)
        assert result.code == 0, result.stderr
    assert cli("verify", "--root", str(root)).code == 0


@needs_registry
def test_a_child_manifest_that_is_no_json_is_named(registry, cli, tmp_path):
    """An index whose child manifest (right digest and size) is not JSON: ``internal error:
    JSONDecodeError`` (the registry source parsed it twice to learn its children); now the
    validation's error line names the document, as for any input."""
    child = b"not json at all"
    child_digest = "sha256:" + hashlib.sha256(child).hexdigest()
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": child_digest, "size": len(child),
         "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()

    def serve(method: str, path: str, n: int) -> tuple[str, int, str, bytes] | None:
        if path.endswith("/manifests/v1"):
            return ("serve", 200, "application/vnd.oci.image.index.v1+json", index)
        if path.endswith(f"/manifests/{child_digest}"):
            return ("serve", 200, "application/vnd.oci.image.manifest.v1+json", child)
        return None

    root = tmp_path / "root"
    with FaultProxy(registry.host, serve) as proxy:
        result = cli("import", "--root", str(root), "--plain-http", "-i", f"docker://{proxy.host}/broken/img:v1", *FAST)
        line = one_error_line(result)
        assert child_digest in line and "invalid JSON" in line and "internal error" not in line, line
        checked = cli("verify", "-i", f"docker://{proxy.host}/broken/img:v1")
        assert checked.code == 1 and "PROBLEM invalid-json" in checked.stdout and child_digest in checked.stdout, \
            checked.stdout + checked.stderr
    assert not root.exists()


@needs_registry
def test_a_blob_shorter_than_its_descriptor_is_named_not_resumed(fixture_set, registry, cli, tmp_path):
    """A registry whose blob answer is whole but shorter than the descriptor (an honest
    Content-Length): ctrconv called it a dropped connection and downloaded it again from where
    it ended, ``--retries`` times (a red-team run). It is one error line at once."""
    seed(registry.host, fixture_set, "bbx-oci", "short/bbx:oci")
    served: list[str] = []

    def short(method: str, path: str, n: int) -> tuple[str, int, str, bytes] | None:
        if method == "GET" and "/blobs/" in path and not served:
            served.append(path)
            return ("serve", 200, "application/octet-stream", b"x" * 10)
        return None

    with FaultProxy(registry.host, short) as proxy:
        result = cli("import", "--root", str(tmp_path / "root"), "-i", f"docker://{proxy.host}/short/bbx:oci",
                     "--plain-http", "-j", "1", *FAST)
        gets = [path for method, path in proxy.seen if method == "GET" and path == served[0]]
    line = one_error_line(result)
    assert "answer ends at byte 10; its descriptor says" in line, line
    assert len(gets) == 1, gets


def test_a_blob_answer_that_overstates_its_length_is_taken_whole(fixture_set, registry, private_containerd, cli,
                                                                 tmp_path):
    """A proxy whose blob answers claim more bytes than they send, then close: every byte of
    the descriptor arrived, and containerd reads the descriptor's size and pulls. ctrconv
    resumed past the blob's end ``--retries`` times and failed (a red-team run)."""
    seed(registry.host, fixture_set, "bbx-oci", "over/bbx:oci")

    def overstated(method: str, path: str, n: int) -> str | None:
        return "overstated" if method == "GET" and "/blobs/" in path else None

    with FaultProxy(registry.host, overstated) as proxy:
        result = cli("import", "--root", str(tmp_path / "root"), "-i", f"docker://{proxy.host}/over/bbx:oci",
                     "--plain-http", "-j", "1", *FAST)
        ranged = [path for method, path in proxy.seen if method == "GET" and "/blobs/" in path]
    assert result.code == 0, result.stderr
    assert len(ranged) == len(set(ranged)), ranged  # each blob fetched once: nothing resumed
    daemon = private_containerd(root=tmp_path / "root")
    [row] = [r for r in daemon.images_check("default") if r.ref.endswith("over/bbx:oci")]
    assert row.complete and row.unpacked, row
