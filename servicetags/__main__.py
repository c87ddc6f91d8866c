import sys

from servicetags.cli import main

sys.exit(main())
