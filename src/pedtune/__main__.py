import sys

from pedtune.cli import main

sys.exit(main())
