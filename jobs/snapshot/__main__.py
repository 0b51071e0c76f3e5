import sys

from jobs.snapshot.job import main

sys.exit(main())
