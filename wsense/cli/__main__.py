import sys

from wsense.cli import main

if __name__ == "__main__":  # not when a child process of `wsense serve` imports it (multiprocessing's spawn)
    sys.exit(main())
