import sys

from jobs.score.job import main

sys.exit(main())
