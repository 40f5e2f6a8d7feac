import os
from pathlib import Path

import pytest
import torch

# ../shared beside the clone (CI) or beside the working tree.
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("HILOVIT_FIXTURES", ROOT.parent / "shared" / "fixtures"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"reference fixtures not found at {FIXTURES}")
    return FIXTURES
