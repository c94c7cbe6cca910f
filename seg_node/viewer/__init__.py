"""Viewers beside RViz that import no ROS: the Foxglove live view (``live``)."""
