"""Model pipeline: train, export and evaluate FCN / PSPNet / DeepLabV3 on a ResNet backbone.

Importing this package does not import torch; ``labels`` stays usable without it.
"""
