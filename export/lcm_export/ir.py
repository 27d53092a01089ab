"""Saving OpenVINO IR reproducibly.

OpenVINO names the nodes it creates "<Type>_<n>" from a process-wide counter, so the same
model converted twice in one process (or after different work) gets different names and
different .xml bytes. Renaming those nodes by their position in the graph makes the IR a
function of the model alone. Only friendly names change: inputs and outputs are found by
tensor name, which stays as set.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import openvino as ov

# "<Type>_<n>" or "<Type>_<n>.<port>": the shape of every name OpenVINO generates from its counter.
_AUTO_NAME = re.compile(r"^(?P<prefix>[A-Za-z][A-Za-z0-9]*)_\d+(?P<suffix>\.\d+)?$")


def _renumbered(name: str, position: int) -> str | None:
    match = _AUTO_NAME.match(name)
    if match is None:
        return None
    return f"{match.group('prefix')}_{position}{match.group('suffix') or ''}"


def stabilize_node_names(model: ov.Model) -> ov.Model:
    for position, node in enumerate(model.get_ordered_ops()):
        friendly = _renumbered(node.get_friendly_name(), position)
        if friendly is not None:
            node.set_friendly_name(friendly)
        for output in node.outputs():
            names = output.get_names()
            renamed = {_renumbered(name, position) for name in names}
            if names and None not in renamed:
                output.get_tensor().set_names(renamed)
    return model


def save_reproducibly(model: ov.Model, xml_path: Path, compress_to_fp16: bool) -> None:
    import openvino as ov

    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(stabilize_node_names(model), xml_path, compress_to_fp16=compress_to_fp16)
