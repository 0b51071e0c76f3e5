import sys

from jobs.importer.job import main

sys.exit(main())
