"""`python -m resnet_repro`: the `resnet-repro` command, for an environment whose scripts are not on PATH."""

import sys

from resnet_repro.cli import main

sys.exit(main())
