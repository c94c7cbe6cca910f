"""Scores of predicted ground grids against ground-truth grids (``seg_bag eval``, the demo)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seg_node.ground.grid import FREE, OCCUPIED, UNKNOWN


def _near(cells: np.ndarray) -> np.ndarray:
    """True on every cell within one cell (8-neighbourhood) of a True cell."""
    padded = np.pad(cells, 1)
    h, w = cells.shape
    out = np.zeros_like(cells)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


@dataclass
class GridScores:
    """Counts summed over frames; the rates are read from them.

    - cell accuracy: cells whose truth is known (0 or 100) that the prediction got exactly;
    - contact recall: truth obstacle contacts with a predicted contact within one cell;
    - false-free rate: truth obstacle contacts predicted drivable with no predicted contact within
      one cell, per truth contact (the planner's worst error: it would drive there);
    - coverage: cells whose truth is known that the prediction claims (not -1).
    """

    frames: int = 0
    known: int = 0
    correct: int = 0
    claimed: int = 0
    contacts: int = 0
    contacts_found: int = 0
    false_free: int = 0

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        """Count one frame's grids (same shape)."""
        if predicted.shape != truth.shape:
            msg = f'a predicted grid of {predicted.shape} cannot be scored against a truth grid of {truth.shape}'
            raise ValueError(msg)
        known = truth != UNKNOWN
        contact = truth == OCCUPIED
        near_predicted_contact = _near(predicted == OCCUPIED)
        self.frames += 1
        self.known += int(known.sum())
        self.correct += int((known & (predicted == truth)).sum())
        self.claimed += int((known & (predicted != UNKNOWN)).sum())
        self.contacts += int(contact.sum())
        self.contacts_found += int((contact & near_predicted_contact).sum())
        self.false_free += int((contact & (predicted == FREE) & ~near_predicted_contact).sum())

    def summary(self) -> dict[str, float]:
        """The rates (nan where nothing was counted)."""
        def rate(a: int, b: int) -> float:
            return a / b if b else float('nan')
        return {'cell_accuracy': rate(self.correct, self.known), 'coverage': rate(self.claimed, self.known),
                'contact_recall': rate(self.contacts_found, self.contacts),
                'false_free_rate': rate(self.false_free, self.contacts), 'frames': float(self.frames)}

    def text(self) -> str:
        """One line for a report."""
        s = self.summary()
        return (f'ground grid: cell accuracy {s["cell_accuracy"]:.4f} (coverage {s["coverage"]:.4f}), '
                f'obstacle-contact recall within one cell {s["contact_recall"]:.4f}, '
                f'false-free rate {s["false_free_rate"]:.4f} ({self.false_free} of {self.contacts} contacts '
                f'called drivable), {self.frames} frames')
