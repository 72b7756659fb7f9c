"""Pipelines: the gateway runs a bundled Pipeline's steps through the same agent loop
that serves ``/agents/{name}/invoke`` (``engine``), with the pure rules of each pattern
in ``rules`` and the HTTP routes in ``serve``. See docs/pipelines.md, "How the gateway
runs a pipeline"."""
