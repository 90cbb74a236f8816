"""The image model and the transfer protocols every reader and writer shares.

A bottom layer: it imports only :mod:`ctrconv.digest`, :mod:`ctrconv.errors` and
:mod:`ctrconv.oci`, so sources, sinks and the pipeline can all depend on it without cycles.

* :mod:`.model`: a planned image (index -> manifests -> config + layers, as descriptors and
  the validated documents), the platform formatter;
* :mod:`.protocols`: :class:`~.protocols.ImageSource` (what any reader gives),
  :class:`~.protocols.Sink` (what any layout writer takes) and :class:`~.protocols.RootSink`
  (a containerd root, which takes a whole source).
"""
