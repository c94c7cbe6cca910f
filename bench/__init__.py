"""Benchmarks of seg_node through real DDS (make bench)."""
