"""ctrconv: move container images in and out of containerd's on-disk store without the daemon.

The library is the product; :mod:`ctrconv.cli` is a thin layer over :mod:`ctrconv.api`.
"""

__version__ = "0.1.0"
