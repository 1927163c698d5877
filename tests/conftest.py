"""Shared fixtures. ``shared_data`` points at the real benchmark files (read-only) or skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real datasets: ``$QREC_DATA_DIR``, else ``../shared/data`` beside the repo.
    Tests that use it skip cleanly when it is absent."""
    root = Path(os.environ.get("QREC_DATA_DIR") or _DEFAULT_DATA).resolve()
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set QREC_DATA_DIR)")
    return root


def pytest_collection_modifyitems(items):
    """Mark every test that uses ``shared_data`` so ``-m 'not shared_data'`` deselects them."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)
