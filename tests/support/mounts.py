"""Files laid out as the kubelet mounts them, for gateway processes run by tests."""

from __future__ import annotations

import itertools
from pathlib import Path

_generation = itertools.count(1)


def write_config_map_volume(folder: Path, files: dict[str, str]) -> None:
    """A ConfigMap volume as the kubelet writes it and updates it: the data in a new
    timestamped folder, the ``..data`` link swapped to it atomically, and one link per
    key through ``..data`` (keys no longer in the ConfigMap lose their link)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"..2026_{next(_generation):06d}"
    data.mkdir()
    for key, text in files.items():
        (data / key).write_text(text)
    tmp = folder / "..data_tmp"
    tmp.symlink_to(data.name)
    tmp.replace(folder / "..data")
    for link in folder.iterdir():
        if not link.name.startswith(".") and link.name not in files:
            link.unlink()
    for key in files:
        link = folder / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")
