"""Helpers shared by tests: a private containerd daemon and the fixture set it builds."""
