"""Every name the top-level package promises resolves to a real object."""

from __future__ import annotations

import pytest

import bitsmith


@pytest.mark.parametrize("name", sorted(bitsmith._EXPORTS))
def test_export_resolves(name):
    assert getattr(bitsmith, name) is not None
    assert name in dir(bitsmith)


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bitsmith.nope  # noqa: B018
