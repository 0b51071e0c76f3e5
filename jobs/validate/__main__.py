import sys

from jobs.validate.job import main

sys.exit(main())
