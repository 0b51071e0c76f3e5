import sys

from jobs.seq.job import main

sys.exit(main())
