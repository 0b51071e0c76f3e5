import sys

from jobs.seq.cli import main

sys.exit(main())
