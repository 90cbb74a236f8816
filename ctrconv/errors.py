"""One error tree for everything a user can hit.

Every error the library raises on bad input or a failed operation is a :class:`CtrconvError`;
the CLI turns it into one ``ctrconv: error: ...`` line and its ``exit_code``. Anything else
escaping the library is a bug (and shows a traceback only with ``--debug``).
"""

from __future__ import annotations


class CtrconvError(Exception):
    """Base class. ``exit_code`` follows the CLI contract: 1 operation failed, 2 usage/input."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle with the hint (errors cross from unpack worker processes)."""
        return (self.__class__, (str(self),), {"hint": self.hint})


class UsageError(CtrconvError):
    """Bad option, unknown image, unreadable input: exit 2."""

    exit_code = 2


class NotFoundError(UsageError):
    """A named thing (image, namespace, file) does not exist."""


class InvalidDigestError(UsageError):
    """A digest string that is not ``<allowed-alg>:<exact-length lowercase hex>``."""


class LockedError(CtrconvError):
    """The bolt file is held by a running containerd (flock)."""


class ContentError(CtrconvError):
    """Blob content is missing, truncated, or does not match its digest/size."""


class MissingContentError(ContentError):
    """A referenced blob is not in the content store."""


class UnreadableContentError(ContentError):
    """A blob is there but cannot be read (permissions, I/O error)."""


class DigestMismatchError(ContentError):
    """Bytes read do not hash to the expected digest."""


class SizeMismatchError(ContentError):
    """Bytes read are fewer or more than the descriptor size says."""


class FormatError(CtrconvError):
    """Malformed input: bad JSON, schema violation, unknown archive shape, hostile tar."""


class UnsafePathError(FormatError):
    """A path that would escape its root (``../``, absolute, symlink escape)."""


#: why an input gives no image a name: where names come from, as ``ctr images import`` reads them
#: (an archive with an ``index.json`` is an OCI layout: its ``manifest.json`` is not read)
NAMES_NO_IMAGE = ("the input names no image (an OCI layout names them by the io.containerd.image.name or "
                  "org.opencontainers.image.ref.name of its index.json entries, a docker-archive by RepoTags; an "
                  "archive with an index.json is an OCI layout, as ctr reads it: its manifest.json is not used)")


class NoSpaceError(CtrconvError):
    """The filesystem being written has no room for what must go there (``ENOSPC``,
    ``EDQUOT``, or a file larger than the free space): a condition of the machine, never a
    verdict on the data being written."""
