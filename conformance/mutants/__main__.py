"""``python -m conformance.mutants [--only NAME ...]``: the mutant kill run (see :mod:`conformance.mutants.kill`)."""

from conformance.mutants.kill import main

raise SystemExit(main())
