import sys

from jobs.popularity.trainer import main

sys.exit(main())
