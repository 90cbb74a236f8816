"""Image IDs that collide on purpose: the resolver's ambiguity cases, shared by the unit and
real-daemon tests."""

from __future__ import annotations

#: two config-only image configs whose digests share the 12 hex digits 656f4c56bce7
#: (found by a birthday search over the label value)
COLLIDING = [
    ('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},'
     '"config":{"Labels":{"n":"%u"}}}' % n).encode()
    for n in (6781640, 13990685)
]
SHARED_PREFIX = "656f4c56bce7"
