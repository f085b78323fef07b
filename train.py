"""Train the wsense relevance model: `python train.py` on CPU, `accelerate launch train.py --config ...` on GPU.
Same as `wsense train`."""
import sys

from wsense.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
