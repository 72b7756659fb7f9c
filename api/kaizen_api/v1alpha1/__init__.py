"""Resource types of the ``kaizen.studio/v1alpha1`` API (pure: no I/O)."""

GROUP = "kaizen.studio"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
