"""The class-table payload of ``<camera>/segmentation/labels``: JSON with ids, names and colours.

The node publishes it in a ``std_msgs/String`` (unless ``vision_msgs`` is installed), the bag tools
write and read it; both go through these two functions so the text is the same everywhere.
"""

from __future__ import annotations

import json

from seg_node.model.classes import ClassTable


def labels_json(table: ClassTable, model_name: str) -> str:
    """``{"model": ..., "classes": [{"id", "name", "color"}, ...]}`` for a class table."""
    classes = [{'id': i, 'name': name, 'color': list(colour)}
               for i, (name, colour) in enumerate(zip(table.names, table.palette, strict=False))]
    return json.dumps({'model': model_name, 'classes': classes})


def parse_labels_json(text: str) -> ClassTable:
    """The class table of a labels payload; ValueError when the text is not one."""
    try:
        classes = json.loads(text)['classes']
        return ClassTable(tuple(str(c['name']) for c in classes),
                          tuple(tuple(int(v) for v in c['color']) for c in classes))
    except (ValueError, KeyError, TypeError) as err:
        msg = f'not a seg_node labels payload ({type(err).__name__}: {err})'
        raise ValueError(msg) from None
