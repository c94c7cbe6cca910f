"""Ground grid: class masks -> a metric occupancy grid on the flat ground of the base frame (ROS-free).

``geometry`` maps grid cells to mask pixels and states the range the flat-ground model can
honestly claim; ``grid`` turns masks into per-camera grids and fuses them; ``mapper`` keeps the
per-camera lookups current and is the one entry point the node (and any live view) calls.
"""
