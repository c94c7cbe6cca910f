"""Synthetic driving scenes with exact per-pixel labels (numpy and OpenCV only)."""
