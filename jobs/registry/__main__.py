import sys

from jobs.registry.job import main

sys.exit(main())
