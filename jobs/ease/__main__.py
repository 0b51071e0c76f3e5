import sys

from jobs.ease.job import main

sys.exit(main())
