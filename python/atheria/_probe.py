"""The probe child: ``python -m atheria._probe __atheria-probe CANDIDATE SECONDS``.

A GPU driver that crashes, aborts or makes the dynamic linker end the process takes this child
down instead of the interpreter that asked; the parent reads the one JSON line printed here, or
classifies how the child ended.
"""

import sys

from atheria import _native


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["__atheria-probe"]:
        args = args[1:]
    print(_native.probe_report(args), flush=True)


if __name__ == "__main__":
    main()
