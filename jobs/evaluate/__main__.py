import sys

from jobs.evaluate.job import main

sys.exit(main())
