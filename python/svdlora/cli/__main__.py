"""``python -m svdlora.cli``: the same as the ``svdlora`` console script."""
import sys

from . import main

sys.exit(main())
