"""Evaluate wsense models and baselines into reports/report.{md,json}. Same as `wsense evaluate`."""
import sys

from wsense.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
