import sys

from jobs.sim.job import main

sys.exit(main())
