"""``python -m attnxfer`` (and ``torchrun -m attnxfer``) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
