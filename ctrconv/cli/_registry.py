"""Registry options shared by ``import -i docker://...`` and ``export --to docker://...``.

Named as skopeo names them (``--creds``, ``--authfile``, ``--cert-dir``, ``--tls-verify``) and
as the contract adds (``--ca-file``, ``--insecure``; ``--plain-http`` as ``ctr`` spells it).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

import typer

from ctrconv import api
from ctrconv.run.lines import write_line
from ctrconv.errors import UsageError

if TYPE_CHECKING:
    from ctrconv.api import RegistryOptions

CREDS_OPTION = typer.Option(
    None, "--creds", metavar="USER[:PASS]",
    help="Registry credentials (else --authfile, $REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json, "
         "${XDG_CONFIG_HOME:-~/.config}/containers/auth.json, ~/.docker/config.json, with their "
         "credHelpers/credsStore helpers).",
)
AUTHFILE_OPTION = typer.Option(
    None, "--authfile", metavar="FILE", help="Registry auth file (containers-auth.json / docker config.json).")
CA_FILE_OPTION = typer.Option(None, "--ca-file", metavar="FILE", help="Trust this CA certificate (PEM) for the registry.")
CERT_DIR_OPTION = typer.Option(
    None, "--cert-dir", metavar="DIR",
    help="Certificates dir: *.crt CAs and *.cert/*.key client pairs, in DIR or DIR/HOST:PORT "
         "(docker/containerd certs.d layout, hosts.toml ca/client too).",
)
TLS_VERIFY_OPTION = typer.Option(
    None, "--tls-verify", metavar="true|false",
    help="--tls-verify=false: do not verify the registry's certificate (and use plain HTTP if it does not speak TLS).",
)
PLAIN_HTTP_OPTION = typer.Option(False, "--plain-http", help="Talk plain HTTP to the registry (as ctr --plain-http).")
INSECURE_OPTION = typer.Option(False, "--insecure", help="Same as --plain-http.")
RETRIES_OPTION = typer.Option(
    5, "--retries", min=0, help="Retries of a registry request after a 429 or 5xx answer or a dropped connection.")
RETRY_DELAY_OPTION = typer.Option(
    0.5, "--retry-delay", min=0.0, metavar="SECONDS",
    help="First wait before a retry, doubled each time (at most 10 s; a Retry-After answer is honoured).")


def _tls_verify(value: Optional[str]) -> bool:
    if value is None:
        return True
    text = value.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise UsageError(f"--tls-verify takes true or false, not {value!r}")


def registry_options(
    creds: Optional[str], authfile: Optional[str], ca_file: Optional[str], cert_dir: Optional[str],
    tls_verify: Optional[str], plain_http: bool, insecure: bool, retries: int, retry_delay: float = 0.5,
    **more: object,
) -> RegistryOptions:
    """The library's options from the command line's."""
    for flag, path in (("--authfile", authfile), ("--ca-file", ca_file), ("--cert-dir", cert_dir)):
        if path == "":  # (a variable that expanded to nothing: the option was silently ignored)
            raise UsageError(f"{flag}: an empty path names nothing (did a variable expand to nothing?)")
    for flag, path in (("--authfile", authfile), ("--ca-file", ca_file)):
        if path and not os.path.isfile(path):
            raise UsageError(f"{flag} {path}: no such file")
    return api.RegistryOptions(
        creds=creds, authfile=authfile, ca_file=ca_file, cert_dir=cert_dir, tls_verify=_tls_verify(tls_verify),
        plain_http=plain_http or insecure, retries=retries, backoff=retry_delay, **more,  # type: ignore[arg-type]
    )


def any_given(creds: Optional[str], authfile: Optional[str], ca_file: Optional[str], cert_dir: Optional[str],
              tls_verify: Optional[str], plain_http: bool, insecure: bool) -> bool:
    """Whether a registry option was given (refused when nothing is read from or sent to a registry)."""
    return (any(value is not None for value in (creds, authfile, ca_file, cert_dir, tls_verify))  # ("" too: given)
            or plain_http or insecure)


PUSH_JOBS_OPTION = typer.Option(1, "--jobs", "-j", min=1, help="--to: blobs uploaded side by side.")
CHUNK_THRESHOLD_OPTION = typer.Option(
    "16M", "--chunk-threshold", metavar="SIZE",
    help="--to: blobs up to SIZE are uploaded in one PUT, larger ones in PATCH chunks.")
CHUNK_SIZE_OPTION = typer.Option(
    None, "--chunk-size", metavar="SIZE",
    help="--to: upload larger blobs in PATCH chunks of SIZE (default: one streamed PATCH per blob).")


def push_command(root: object, destination: str, namespace: str, refs: Optional[list[str]], *, platforms: list[str],
                 all_platforms: bool, ignore_lock: bool, as_json: bool, quiet: bool, options: RegistryOptions) -> None:
    """``export --to docker://...``: push, then report (stderr, or ``--json`` on stdout)."""
    import sys

    from ctrconv import api
    from ctrconv.cli._common import print_json
    from ctrconv.run.bars import bars
    from ctrconv.api import check_namespace
    from ctrconv.api import push_report_lines as report_lines

    with bars(quiet) as progress:
        report = api.push_images(
            root, destination, namespace=check_namespace(namespace), images=refs, platforms=platforms,
            all_platforms=all_platforms, registry=options, ignore_lock=ignore_lock, progress=progress,
        )
    if as_json:
        print_json(report.to_json())
    elif not quiet:
        for line in report_lines(report):
            write_line(sys.stderr, line)
