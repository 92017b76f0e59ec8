"""Following a six-hour Cloud Build: about 1,400 polls (and as many log reads), with and without faults.

The fake Cloud Build and the Cloud Storage front from the tests play a build that stays WORKING
for 1,400 polls. Run once cleanly (the baseline) and once with a 502 on every 7th poll and a
reset connection on every 11th log read. Goal: the faulty run completes (the
build's own SUCCESS decides, nothing is cancelled) and costs at most twice the clean run's time;
the numbers show what the retry policy costs per fault. Polls are back to back (no waiting), so
the times measure the client, the fakes and this machine, never Cloud Build.

Run on demand: `python benchmarks/bench_cloudbuild_polls.py` (not collected by pytest).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gcp_storage_emulator.server import create_server  # noqa: E402

from imagecascade.cloud.retry import Timing  # noqa: E402
from tests.cloud_fixtures import Recorder, backend, make_repo, request_for  # noqa: E402
from tests.fake_cloudbuild import FakeCloudBuild, Phase  # noqa: E402
from tests.fake_storage import StorageFront  # noqa: E402
from tests.faults import RESET, status  # noqa: E402

POLLS = 1400
TIMING = Timing(poll_initial=0.0, poll_max=0.0, retry_initial=0.0, retry_max=0.001, transient_limit=30.0)


def follow(emulator_url: str, root: Path, faults: bool) -> tuple[float, int, int]:
    """(seconds, gets answered, faults served) for one followed build."""
    with StorageFront(emulator_url) as storage, FakeCloudBuild(emulator_url) as fake:
        fake.script = [Phase("WORKING", polls=POLLS, log="compiling\n"), Phase("SUCCESS", log="done\n")]
        if faults:
            fake.faults.every("get", 7, status(502))
            storage.faults.every("object.read", 11, RESET)
        environ = {
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBUILD": fake.url,
            "STORAGE_EMULATOR_HOST": storage.url,
        }
        started = time.perf_counter()
        outcome = backend(root, environ, timing=TIMING).build(
            request_for(root, "app"), Recorder(), threading.Event()
        )
        elapsed = time.perf_counter() - started
        assert outcome.digest and outcome.log_tail == ("compiling", "done"), outcome
        assert fake.cancelled == [] and len(fake.created) == 1
        return elapsed, fake.faults.calls("get"), len(fake.faults.served) + len(storage.faults.served)


def main() -> int:
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    try:
        emulator_url = f"http://127.0.0.1:{server._api._httpd.server_address[1]}"
        with tempfile.TemporaryDirectory() as folder:
            root = make_repo(Path(folder) / "repo")
            clean, clean_polls, _ = follow(emulator_url, root, faults=False)
            server.wipe()
            faulty, faulty_polls, served = follow(emulator_url, root, faults=True)
    finally:
        server.stop()
    print(f"clean:  {clean_polls} polls in {clean:.1f} s ({clean / clean_polls * 1000:.1f} ms a poll)")
    print(f"faulty: {faulty_polls} polls, {served} faults in {faulty:.1f} s ({faulty / clean:.2f} x clean)")
    ok = faulty <= 2 * clean
    print("goal (faulty completes, at most 2 x clean):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
