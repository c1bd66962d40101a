"""``python -m planted_bugs [--only NAME ...]``: the mutant kill run (see :mod:`planted_bugs.kill`)."""

from planted_bugs.kill import main

raise SystemExit(main())
