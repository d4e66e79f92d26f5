"""`python -m train` (or `torchrun --nproc_per_node N -m train`): see train/loop.py."""

import sys

from .loop import main

if __name__ == "__main__":
    sys.exit(main())
