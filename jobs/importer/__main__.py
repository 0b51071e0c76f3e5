import sys

from jobs.importer.cli import main

sys.exit(main())
