"""Run ingest under pyinstrument (``pip install pyinstrument``) and write a text report on SIGTERM.

Used by ``bench/bench_ingest.py --profile FILE``; environment as for ``python -m services.ingest``.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pyinstrument import Profiler  # noqa: E402

from services.ingest.api import create_app, tune_gc  # noqa: E402
from services.ingest.settings import IngestSettings  # noqa: E402
from shared.service import serve  # noqa: E402


def main() -> None:
    # uvicorn re-raises the SIGTERM it handled once it has shut down; exiting through SystemExit
    # instead lets the report below be written.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings = IngestSettings()
    app = create_app(settings)
    tune_gc(settings)  # as in production (python -m services.ingest)
    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        serve(app, settings)
    finally:
        profiler.stop()
        Path(sys.argv[1]).write_text(profiler.output_text(unicode=True, show_all=False))


if __name__ == "__main__":
    main()
