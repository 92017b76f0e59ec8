"""Report whether Vertex AI spot scheduling is active in this interpreter, as one JSON line.

`python3 -m arr_vertex_launcher.spot_check [--expect-active]` imports aiplatform the
way the launch agent does, so the patch applied by the .pth file's import hook is what
gets reported; this module does not install anything itself.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arr_vertex_launcher.spot_check", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--expect-active",
        action="store_true",
        help="exit 1 unless spot scheduling is active (run with VERTEX_SPOT=1)",
    )
    args = parser.parse_args(argv)
    from arr_vertex_launcher import spot

    problem = None
    try:
        import google.cloud.aiplatform  # noqa: F401  (triggers the patch when requested)
    except Exception as error:  # report, rather than crash on, a broken aiplatform
        problem = f"importing google.cloud.aiplatform failed: {error}"
    state = spot.status()
    state["problem"] = state["problem"] or problem
    print(json.dumps(state, sort_keys=True))
    if args.expect_active and not (
        state["active"] and state["patched_methods"] == list(spot.PATCHED_METHODS)
    ):
        return 1
    if state["requested"] and not state["active"]:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
