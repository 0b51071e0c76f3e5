import sys

from jobs.monitor.job import main

sys.exit(main())
