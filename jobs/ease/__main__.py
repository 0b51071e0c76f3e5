import sys

from jobs.ease.trainer import main

sys.exit(main())
