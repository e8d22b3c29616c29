"""`python -m sentiment.train`: the `mltrade sentiment train` command (library:
sentiment.finetune).

python -m sentiment.train                     # 2 epochs: about 0.87 accuracy
python -m sentiment.train --epochs 1          # what serving trains when none is registered
python -m sentiment.train --limit 2000 --no-register   # a quick look
"""

from mltrade.cli import run_command


def main(argv: list[str] | None = None):
    """Run `mltrade sentiment train` (argv None: as a program on sys.argv)."""
    return run_command(("sentiment", "train"), argv, "python -m sentiment.train")


if __name__ == "__main__":
    main()
