import sys

from jobs.train.job import main

sys.exit(main())
