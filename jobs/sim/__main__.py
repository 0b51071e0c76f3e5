import sys

from jobs.sim.cli import main

sys.exit(main())
