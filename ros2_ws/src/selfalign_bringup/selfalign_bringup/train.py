"""`ros2 run selfalign_bringup train ...`: the all-in-one runner (see selfalign_bringup.cli)."""

import sys

from selfalign_bringup.cli import main as cli_main


def main() -> int:
    return cli_main(['train', *sys.argv[1:]])


if __name__ == '__main__':
    raise SystemExit(main())
