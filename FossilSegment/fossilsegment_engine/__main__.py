"""``python -m fossilsegment_engine`` is the same as ``fossilsegment``."""

import sys

from .cli import main

sys.exit(main())
