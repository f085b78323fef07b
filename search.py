"""Search photos by description with a trained wsense model. Same as `wsense search`."""
import sys

from wsense.cli import main

if __name__ == "__main__":
    sys.exit(main(["search", *sys.argv[1:]]))
