"""``rebuild``: turn a damaged containerd root back into a consistent one."""

from ctrconv.recovery.rebuild import RebuildReport, rebuild_root

__all__ = ["RebuildReport", "rebuild_root"]
