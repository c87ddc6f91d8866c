import sys

from notifier.main import main

sys.exit(main(sys.argv[1:], prog="python -m notifier"))
