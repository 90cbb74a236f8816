"""What ``ls`` learnt from a large root's indexes, manifests and configs, kept for its next run.

Why: ``ls`` of a 10,000-image root reads 20,000 documents, and parsing and schema-validating
them is most of its time. What it takes from a valid document (a manifest's config and layer
descriptors, a config's ``os`` and ``architecture``, an index's ``manifests`` array) is a
function of the document's bytes, which its digest names, of its media type and of
ctrconv's validation rules: so it is remembered, per content store, in the user's cache
directory, and a later run takes it from there instead of parsing and validating the document
again.

What a run still does for every document: it reads it and checks its size and digest
(:meth:`~ctrconv.containerd.content.ContentStore.read_exact`), so a blob that changed on disk
(damage, a hand edit) is never summarised from memory: it is parsed and validated, or left to
the walks that word its problem, as without this file. Only documents that validated are
remembered; the rules' fingerprint covers the schema files and the source of the modules
that validate and summarise, so a new ctrconv never trusts an older one's verdicts.

The cache is never written into the root (a source is read-only to ctrconv). It lives in
``$CTRCONV_CACHE_DIR`` or ``${XDG_CACHE_HOME:-~/.cache}/ctrconv``, one JSON file per content
store; ``CTRCONV_NO_CACHE=1`` turns it off. A file no listing used for 30 days (its store
removed, moved or no longer listed) is removed when a listing next saves its own. A file that
does not end with the SHA-256 of the rest (damaged or edited after it was written), does not
parse or comes from other rules is ignored and replaced, and so is an entry not of the shape
this module writes (a file made by hand); a directory that cannot be written is no error (the
run is then as without a cache). Written whole with a rename and without ``fsync``: after a power
cut it is old, missing or unreadable, and each of those only costs the next run its speed.
Roots of fewer than :data:`FACTS_FROM` images do not use it: for them parsing is cheaper than
loading a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from itertools import chain
from pathlib import Path
from typing import Any, Callable

from ctrconv.digest import is_canonical
from ctrconv.errors import CtrconvError
from ctrconv.oci.validate import MAX_SIZE, validate_object

#: images in a listing from which the cache is used
FACTS_FROM = 1000
#: bumped when the file's layout changes (3: a manifest's layers as one string)
FORMAT = 3
#: the kinds of document whose facts are kept, as the file names them
KINDS = ("manifests", "configs", "indexes")
#: a facts file no listing used for this long (seconds) is removed at the next save of any
UNUSED_FOR = 30 * 86400
#: a temporary file of a save older than this (seconds) was left by a crash
ABANDONED_AFTER = 3600

#: a document's key: (digest, media type, size), as the listing's document cache keys it
Key = tuple[str, str, Any]
#: a manifest's facts: config (media type, digest, size, has a ``platform``), layers (digest, size)
ManifestFacts = tuple[str, str, int, bool, list[tuple[str, int]]]
#: a config's facts: its ``os`` and ``architecture`` values as the document holds them
ConfigFacts = tuple[Any, Any]
#: an index's facts: its ``manifests`` array as the document holds it
IndexFacts = list[dict[str, Any]]
#: what a process used (keys) and learnt (how many facts, and they as JSON members) of each kind
Fresh = tuple[dict[str, set[str]], dict[str, tuple[int, str]]]


def cache_directory(env: dict[str, str] | os._Environ[str] = os.environ) -> Path | None:
    """Where the listing facts live; None when ``CTRCONV_NO_CACHE`` turns the cache off."""
    if env.get("CTRCONV_NO_CACHE", "") not in ("", "0"):
        return None
    if env.get("CTRCONV_CACHE_DIR"):
        return Path(env["CTRCONV_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ctrconv"


def rules_fingerprint() -> str:
    """A digest of everything a remembered verdict depends on: the schema files and the source
    of the modules that parse, validate and summarise documents."""
    from ctrconv import __version__, inventory
    from ctrconv.oci import fastschema, validate

    h = hashlib.sha256(f"{FORMAT} {__version__}".encode())
    files = sorted(Path(validate.SCHEMA_DIR).glob("*.json"))
    files += [Path(m.__file__) for m in (validate, fastschema, inventory) if m.__file__]
    files.append(Path(__file__))
    for path in files:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _text_key(key: Key) -> str:
    return f"{key[0]} {key[1]} {key[2]}"


class ListingFacts:
    """The facts of one content store: those loaded (:meth:`load`), those this run used or
    learnt (saved by :meth:`save`, so facts of documents no image uses any more drop out)."""

    def __init__(self, path: Path | None, rules: str, known: dict[str, dict[str, Any]] | None = None) -> None:
        self.path = path
        self.rules = rules
        self._known = {kind: dict((known or {}).get(kind) or {}) for kind in KINDS}
        #: keys of the loaded facts this run used, and the facts it learnt, per kind
        self._used, self._new = _nothing_fresh()
        #: facts other processes (or this one) learnt, already written as JSON members, per kind
        self._written: dict[str, list[str]] = {kind: [] for kind in KINDS}
        self._written_count = 0
        #: documents whose bytes this listing found unchanged (read and hashed once each)
        self.checked: set[Key] = set()

    @property
    def learnt(self) -> int:
        return sum(len(new) for new in self._new.values()) + self._written_count

    @classmethod
    def load(cls, content_store: str | os.PathLike[str], directory: Path | None = None) -> "ListingFacts":
        """The facts remembered for ``content_store`` (none when the file is absent, unreadable
        or from other rules); ``directory`` defaults to :func:`cache_directory`."""
        directory = cache_directory() if directory is None else directory
        rules = rules_fingerprint()
        if directory is None:
            return cls(None, rules)
        path = directory / "ls" / (_store_name(content_store) + ".json")
        try:
            with open(path, "rb") as f:
                body, _, trailer = f.read().rpartition(b"\n")
                if hashlib.sha256(body).hexdigest().encode() == trailer:  # written whole by this module
                    doc = json.loads(body)
                    if doc.get("format") == FORMAT and doc.get("rules") == rules:
                        facts = cls(path, rules, {kind: doc[kind] for kind in KINDS})
                        _mark_used(f.fileno())
                        return facts
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
            pass
        return cls(path, rules)

    def _lookup(self, kind: str, key: Key, sound: Callable[[Any, Key], bool]) -> Any:
        """The remembered facts of ``key``, when they have the shape this module writes
        (``sound``); None otherwise, and the document is then read as if nothing was known."""
        known = self._known[kind]
        if not known:  # (a first listing: nothing to look for)
            return None
        text = _text_key(key)
        found = known.get(text)
        if found is None or not sound(found, key):
            return None
        self._used[kind].add(text)
        return found

    def manifest(self, key: Key) -> ManifestFacts | None:
        found = self._lookup("manifests", key, _sound_manifest)
        if found is None:
            return None
        media_type, digest, size, has_platform, packed = found
        layers = _unpacked_layers(packed)
        return None if layers is None else (media_type, digest, size, has_platform, layers)

    def config(self, key: Key) -> ConfigFacts | None:
        found = self._lookup("configs", key, _sound_config)
        return None if found is None else (found[0], found[1])

    def index(self, key: Key) -> IndexFacts | None:
        return self._lookup("indexes", key, _sound_index)  # type: ignore[no-any-return]

    # (the facts are kept as given: JSON writes their tuples as the arrays :meth:`manifest` and
    # :meth:`config` read back, a manifest's layers packed; only a loaded file's facts are ever
    # looked up)

    def remember_manifest(self, key: Key, facts: ManifestFacts) -> None:
        media_type, digest, size, has_platform, layers = facts
        self._new["manifests"][_text_key(key)] = (media_type, digest, size, has_platform, _packed_layers(layers))

    def remember_config(self, key: Key, facts: ConfigFacts) -> None:
        self._new["configs"][_text_key(key)] = facts

    def remember_index(self, key: Key, children: IndexFacts) -> None:
        self._new["indexes"][_text_key(key)] = children

    def take_fresh(self) -> Fresh:
        """What this process used (keys only: the loaded facts are the same in a forked one)
        and learnt since it last took them, handed to :meth:`absorb` (a forked process's
        share of a listing comes back with each piece of work it did). What it learnt comes
        as the JSON members the file will hold: each process writes its own share's while the
        other works, so the file is not written all by one process after both finished."""
        used, new = self._used, self._new
        self._used, self._new = _nothing_fresh()
        return used, {kind: (len(facts), _members(facts)) for kind, facts in new.items()}

    def absorb(self, fresh: Fresh) -> None:
        used, written = fresh
        for kind in KINDS:
            self._used[kind].update(used[kind])
            count, members = written[kind]
            if count:
                self._written[kind].append(members)
                self._written_count += count

    def save(self, *, keep_unused: bool = False) -> bool:
        """Write what this run used and learnt when it differs from what was loaded (something
        learnt, or a remembered document no longer used); False when nothing was written.
        ``keep_unused`` keeps the facts this run did not use (a listing of some namespaces
        only: the others' images are still there)."""
        if self.path is None:
            return False
        kept = {}
        for kind in KINDS:
            known = self._known[kind]
            facts = dict(known) if keep_unused else {key: known[key] for key in self._used[kind]}
            facts.update(self._new[kind])
            kept[kind] = facts
        if not self.learnt and all(len(kept[kind]) == len(self._known[kind]) for kind in KINDS):
            return False
        # (a document learnt by both processes is a member written twice, with the same value)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=".ls-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as raw:
                    f = _HashingWriter(raw)
                    f.write(f'{{"format":{FORMAT},"rules":{json.dumps(self.rules)}')
                    for kind in KINDS:
                        f.write(f',"{kind}":')
                        _write_object(f, kept[kind], self._written[kind])
                    f.write("}")
                    raw.write(b"\n" + f.digest.hexdigest().encode())
                os.replace(temp, self.path)
            except BaseException:
                os.unlink(temp)
                raise
        except OSError:
            return False
        prune(self.path.parent, keep=self.path)
        return True


def _mark_used(fd: int) -> None:
    """Keep a facts file that served a listing from looking unused to :func:`prune` (its time
    is set at most once a day: a listing that learnt nothing does not rewrite the file)."""
    try:
        if time.time() - os.fstat(fd).st_mtime > 86400:
            os.utime(fd)
    except OSError:  # a cache directory this user cannot write: the file is only kept longer
        pass


def prune(directory: Path, *, keep: Path | None = None, now: float | None = None) -> list[str]:
    """Remove from ``directory`` the facts files no listing used for :data:`UNUSED_FOR` seconds
    (those of stores removed, moved or not listed any more: nothing else ever removes them)
    and temporary files older than :data:`ABANDONED_AFTER` (a save interrupted by a crash);
    ``keep`` is never removed. Run after a save. Returns the names removed; a file that cannot
    be removed is left (it is only a cache)."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.endswith(".json") and not entry.name.startswith("."):
            limit = UNUSED_FOR
        elif entry.name.startswith(".ls-"):
            limit = ABANDONED_AFTER
        else:
            continue
        try:
            if keep is not None and os.path.samefile(entry.path, keep):
                continue
            if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > limit:
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            continue
    return removed


# -- the shapes the remember_* methods write ---------------------------------------------------
# The trailer tells a file changed by damage; a file made or edited by hand with a valid trailer
# can still hold entries of any shape. An entry that is not what this module writes is ignored
# (its document is read, validated and learnt again), so no shape of file makes ``ls`` fail.


def _descriptor_fields(digest: Any, size: Any) -> bool:
    """A canonical digest text and a size in JSON's exact integer range, as validation leaves them."""
    return type(digest) is str and is_canonical(digest) and type(size) is int and 0 <= size <= MAX_SIZE


def _sound_manifest(found: Any, key: Key) -> bool:
    """The shape of a manifest's facts; its packed layers are judged as they are unpacked."""
    if type(found) is not list or len(found) != 5:
        return False
    media_type, digest, size, has_platform, layers = found
    return type(media_type) is str and _descriptor_fields(digest, size) and type(has_platform) is bool \
        and type(layers) is str


def _packed_layers(layers: list[tuple[str, int]]) -> str:
    """A manifest's layer descriptors as one string, ``"<digest> <size> <digest> <size> ..."``:
    loaded as JSON arrays, 20,000 manifests of 14 layers were 62 MiB of objects held for the
    whole listing (a list, a digest string and a size per layer); one string each is a third."""
    return " ".join(f"{digest} {size}" for digest, size in layers)


def _unpacked_layers(packed: str) -> list[tuple[str, int]] | None:
    """:func:`_packed_layers` undone; None for a string it does not write (a hand-made file)."""
    parts = packed.split(" ") if packed else []
    if len(parts) % 2:
        return None
    layers = []
    for i in range(0, len(parts), 2):
        digest, size_text = parts[i], parts[i + 1]
        if not (size_text.isascii() and size_text.isdigit()):
            return None
        size = int(size_text)
        if not _descriptor_fields(digest, size):
            return None
        layers.append((digest, size))
    return layers


def _sound_config(found: Any, key: Key) -> bool:
    return type(found) is list and len(found) == 2 and all(value is None or type(value) is str for value in found)


def _sound_index(found: Any, key: Key) -> bool:
    """An index's ``manifests`` array that passes the validation its document passed (the
    array in an index of the key's media type)."""
    if type(found) is not list:
        return False
    try:
        validate_object(key[1], {"schemaVersion": 2, "mediaType": key[1], "manifests": found}, digest=key[0])
    except (CtrconvError, RecursionError):  # (nesting a parsed document could never have)
        return False
    return True


def _nothing_fresh() -> tuple[dict[str, set[str]], dict[str, dict[str, Any]]]:
    return {kind: set() for kind in KINDS}, {kind: {} for kind in KINDS}


class _HashingWriter:
    """Text written as UTF-8 to a binary file and hashed on the way: the file ends with the
    SHA-256 of everything before its last line, so a file changed after it was written (a bit
    flipped on disk, a hand edit, a torn write) is ignored as a whole, never half-trusted."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def write(self, text: str) -> None:
        data = text.encode()
        self.digest.update(data)
        self.raw.write(data)


def _write_object(f: Any, mapping: dict[str, Any], written: list[str] = [], batch: int = 1000) -> None:  # noqa: B006
    """``json.dump(mapping, f)`` a thousand entries at a time, then the members already
    ``written`` (:func:`_members`): the C encoder's speed (three times ``json.dump``'s) without
    a string of the whole file (~25 MB more at the peak of a 20,000-image listing)."""
    items = list(mapping.items())
    parts = (_members(dict(items[start:start + batch])) for start in range(0, len(items), batch))
    f.write("{")
    first = True
    for part in chain(parts, written):
        if part:
            f.write(part if first else "," + part)
            first = False
    f.write("}")


def _members(mapping: dict[str, Any]) -> str:
    """A mapping's members as JSON, without the braces ('' for none)."""
    return _ENCODER.encode(mapping)[1:-1] if mapping else ""


#: compact JSON of facts (trees made of parsed documents: no cycle to look for, ~20 % faster)
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def _store_name(content_store: str | os.PathLike[str]) -> str:
    """A file name for a content store: a digest of its resolved path (facts are checked
    against the bytes on disk, so a store replaced at the same path only misses them)."""
    return hashlib.sha256(os.path.realpath(content_store).encode()).hexdigest()[:32]
