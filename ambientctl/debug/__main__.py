"""`python -m ambientctl.debug ...`: the debugging commands before `ambientctl` wires them."""

import sys

from ambientctl.debug import main

sys.exit(main())
