import sys

from jobs.registry.cli import main

sys.exit(main())
