import sys

from producer.main import main

sys.exit(main(sys.argv[1:], prog="python -m producer"))
