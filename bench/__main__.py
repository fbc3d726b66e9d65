"""``python -m bench [--quick] ...``: the benchmark suite (bench/suite.py),
run from the repository's root."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from suite import main  # noqa: E402

sys.exit(main())
