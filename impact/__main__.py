import sys

from impact.main import main

sys.exit(main(sys.argv[1:], prog="python -m impact"))
