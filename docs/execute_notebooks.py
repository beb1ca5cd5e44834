"""Run the tutorial notebooks into the docs build's jupyter-cache, as many at a time as there
are cores, before Sphinx renders them (``make docs``): myst-nb then takes their outputs from
the cache instead of running them one after the other. A notebook that raises, or a cell over
``--timeout`` seconds, fails this step with the notebook's traceback.

Run: ``python docs/execute_notebooks.py CACHE_DIR NOTEBOOK_OR_FOLDER... [--timeout 150]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", type=Path, help="jupyter-cache folder (conf.py's)")
    parser.add_argument("paths", nargs="+", type=Path, help="notebooks, or folders of them")
    parser.add_argument("--timeout", type=int, default=150, help="seconds per cell")
    args = parser.parse_args(argv)

    from jupyter_cache import get_cache
    from jupyter_cache.executors import load_executor

    notebooks = sorted({nb.resolve() for path in args.paths
                        for nb in ([path] if path.suffix == ".ipynb" else path.glob("*.ipynb"))})
    if not notebooks:
        print(f"no notebook in {[str(p) for p in args.paths]}", file=sys.stderr)
        return 2
    cache = get_cache(args.cache)
    for notebook in notebooks:
        cache.add_nb_to_project(str(notebook))
    result = load_executor("local-parallel", cache).run_and_cache(timeout=args.timeout)
    seconds = {record.uri: record.data.get("execution_seconds", float("nan"))
               for record in cache.list_cache_records()}
    for record in cache.list_project_records():
        name = Path(record.uri).name
        if record.uri in seconds:
            print(f"{name}: ran in {seconds[record.uri]:.1f} s")
        elif record.traceback:
            print(f"{name} FAILED:\n{record.traceback}", file=sys.stderr)
    failed = result.errored + result.excepted
    if failed:
        print(f"{len(failed)} notebook(s) failed: {[Path(p).name for p in failed]}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
