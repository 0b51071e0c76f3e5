import sys

from jobs.popularity.job import main

sys.exit(main())
