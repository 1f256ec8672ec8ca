"""``python -m edgeqd.demo`` (``make demo``)."""

import sys

from edgeqd.demo import main

sys.exit(main(sys.argv[1:]))
