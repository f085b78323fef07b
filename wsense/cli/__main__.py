import sys

from wsense.cli import main

sys.exit(main())
