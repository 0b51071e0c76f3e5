"""Print a fully pinned requirements file from a virtualenv (used by `make lock`).

Usage: python scripts/freeze.py VENV_DIR > requirements.txt

Local version labels are dropped (``torch==2.13.0+cpu`` → ``torch==2.13.0``) so that the same
pin installs the CPU wheel here and the CUDA build in the training image.
"""

import subprocess
import sys
from pathlib import Path

venv = Path(sys.argv[1])
out = subprocess.run(
    [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all", "--exclude-editable"],
    check=True,
    capture_output=True,
    text=True,
).stdout
skip = {"pip", "setuptools", "wheel"}
print("# Fully pinned by `make lock` from requirements.in (python 3.11). Do not edit by hand.")
for line in sorted(out.splitlines(), key=str.lower):
    name = line.split("==")[0].lower()
    if not line or line.startswith("#") or name in skip:
        continue
    print(line.split("+")[0] if "==" in line else line)
