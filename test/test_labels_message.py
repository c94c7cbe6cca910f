"""The class table message: JSON String without vision_msgs, vision_msgs/LabelInfo with it.

vision_msgs is not on PyPI, so the LabelInfo branch runs here with stand-in message classes
shaped like the generated ones (``class_map`` of ``VisionClass(class_id, class_name)``).
"""

import json
from dataclasses import dataclass, field

import pytest
from std_msgs.msg import String

from seg_node.model.classes import CITYSCAPES
from seg_node.model.known_answer import palette_classifier
from seg_node.msg.labels import labels_json, parse_labels_json
from seg_node.ros import camera
from seg_node.runtime.config import EngineConfig
from seg_node.runtime.engine import SegmentationEngine

SPEC = SegmentationEngine(palette_classifier(input_size=(8, 8)).SerializeToString(),
                          EngineConfig(providers=('cpu',))).spec


@dataclass
class VisionClass:
    class_id: int = 0
    class_name: str = ''


@dataclass
class LabelInfo:
    class_map: list = field(default_factory=list)
    threshold: float = 0.0


def test_without_vision_msgs_the_table_is_json_with_colours(monkeypatch):
    monkeypatch.setattr(camera, 'LabelInfo', None)
    msg = camera.labels_message(SPEC, '/models/palette.onnx')
    assert isinstance(msg, String)
    payload = json.loads(msg.data)
    assert payload['model'] == '/models/palette.onnx'
    assert payload['classes'][13] == {'id': 13, 'name': 'car', 'color': [0, 0, 142]}
    assert parse_labels_json(msg.data) == CITYSCAPES


def test_with_vision_msgs_the_table_is_a_label_info(monkeypatch):
    monkeypatch.setattr(camera, 'LabelInfo', LabelInfo)
    monkeypatch.setattr(camera, 'VisionClass', VisionClass, raising=False)
    msg = camera.labels_message(SPEC, '/models/palette.onnx')
    assert isinstance(msg, LabelInfo)
    assert [(c.class_id, c.class_name) for c in msg.class_map] == list(enumerate(CITYSCAPES.names))


@pytest.mark.parametrize('text', ['not json', '{"classes": [{"id": 0}]}', '[]'])
def test_a_payload_that_is_not_a_table_is_refused_in_one_sentence(text):
    with pytest.raises(ValueError, match=r'^not a seg_node labels payload \(\w+: [^\n]*\)$'):
        parse_labels_json(text)


def test_the_payload_round_trips():
    assert parse_labels_json(labels_json(CITYSCAPES, 'm')) == CITYSCAPES
