"""Seeded stratified index splits (scikit-learn's ``train_test_split``), with errors a user can act on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from bitsmith.errors import DataError


def stratified_split(labels: np.ndarray, fraction: float, *, what: str,
                     classes: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(len(labels))`` into (kept, held-out) indices, stratified by label, ``random_state=0``.

    The index order is exactly what ``train_test_split(X, labels, test_size=fraction, stratify=labels,
    random_state=0)`` gives for any ``X``, so a split made here matches one made directly with scikit-learn.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    present = counts[counts > 0]
    if present.size and present.min() < 2:
        rare = int(np.flatnonzero(counts == present.min())[0])
        label = repr(classes[rare]) if classes is not None else str(rare)
        raise DataError(f"{what}: class {label} has only {int(present.min())} image; a stratified "
                        f"{fraction:.0%} split needs at least 2 images per class")
    try:
        kept, held = train_test_split(np.arange(labels.shape[0]), test_size=fraction, stratify=labels,
                                      random_state=0)
    except ValueError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{what}: cannot make a stratified {fraction:.0%} split of {labels.shape[0]} images "
                        f"in {present.size} classes ({reason})") from None
    return kept, held
