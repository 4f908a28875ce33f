import sys
from pathlib import Path

# tests/ holds shared helpers (engine_tools, fake_engine) imported by plain module name.
_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
