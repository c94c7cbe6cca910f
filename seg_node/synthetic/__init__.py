"""Synthetic driving scenes with exact per-pixel labels (numpy and OpenCV only).

``layout`` draws a street from a seed and places things on it, ``camera`` and ``canvas`` project and
paint, ``painter`` gives each thing its looks, ``drive`` composes them into frames of a multi-camera
drive, and ``datasets`` writes frames in the layouts training reads.
"""

from seg_node.synthetic.classes import CLASSES_PRESENT
from seg_node.synthetic.datasets import write_camvid_dataset, write_cityscapes_dataset, write_sagemaker_dataset
from seg_node.synthetic.drive import Drive, dataset_frame, render_scene
from seg_node.synthetic.layout import RIG_YAWS, StreetLayout

__all__ = [
    'CLASSES_PRESENT', 'RIG_YAWS', 'Drive', 'StreetLayout', 'dataset_frame', 'render_scene',
    'write_camvid_dataset', 'write_cityscapes_dataset', 'write_sagemaker_dataset',
]
