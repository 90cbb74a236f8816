"""Moved to :mod:`ctrconv.image.plan` (the image walk sits below sources, sinks and the pipeline).

Only a forwarding name for code written against the old place while the move lands; import
:mod:`ctrconv.image.plan` in new code. To be deleted once nothing imports it.
"""

from ctrconv.image.plan import *  # noqa: F401,F403
from ctrconv.image.plan import DocumentCache, MAX_INDEX_DEPTH, PlatformSelector, _digest  # noqa: F401
