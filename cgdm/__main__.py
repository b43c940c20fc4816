import sys

from cgdm.cli import main

sys.exit(main())
