"""``python -m tokdiag``: the same as the ``tokdiag`` command."""

from __future__ import annotations

from tokdiag.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
