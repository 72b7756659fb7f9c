"""Kaizen Studio's API: resource types (``v1alpha1``) and the REST facade (``server``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kaizen-studio")
except PackageNotFoundError:  # running from a source tree without `pip install -e .`
    __version__ = "0.0.0+unknown"
