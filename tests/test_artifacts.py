"""Downloaded artifacts pinned like bases: `[[artifacts]]`, `invoke plan`, `invoke upstream`.

One local server plays both the registry (HEAD manifests) and the download site, on loopback.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_repo import write_image
from registry_double import DIGEST, Answer, ScriptedServer, Seen
from test_tasks_core import invoke

from imagecascade.core.declaration import load_images
from imagecascade.core.hook import main as hook_main
from imagecascade.core.hook import write_hashes
from imagecascade.core.plan import compute_plan, plan_document
from imagecascade.core.settings import load_settings

CONTENT = b"the tool, version 1.2\n" * 1000


class Site:
    """The registry and the download site: `files` maps a path to its body (None: 404)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes | None] = {"/files/tool-1.2.tar.gz": CONTENT}
        self.status = 200
        self.server = ScriptedServer(respond=self.respond)

    def respond(self, seen: Seen) -> Answer:
        if seen.path.startswith("/v2/"):
            return Answer(200, {"Docker-Content-Digest": DIGEST})
        if self.status != 200:
            return Answer(self.status)
        body = self.files.get(seen.path)
        return Answer(404) if body is None else Answer(200, {"Content-Type": "application/gzip"}, body)

    def downloads(self) -> list[str]:
        return [seen.path for seen in self.server.seen if seen.method == "GET"]


@pytest.fixture
def site() -> Iterator[Site]:
    served = Site()
    with served.server:
        yield served


def artifact_toml(address: str, sha: str = "", base: str = "") -> str:
    return (
        f'base = "{base or f"{address}/base:1@{DIGEST}"}"\n'
        f'[build_args]\nTOOL_VERSION = "1.2"\nTOOL_SHA256 = "{sha}"\n'
        f'[[artifacts]]\nname = "tool"\nurl = "http://{address}/files/tool-${{TOOL_VERSION}}.tar.gz"\n'
        'sha256_build_arg = "TOOL_SHA256"\n'
    )


@pytest.fixture
def repo(tmp_path: Path, site: Site) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "cascade.toml").write_text("")
    write_image(root, "img", artifact_toml(site.server.address), {"a.txt": "a"})
    write_image(root, "child", 'parent = "img"\n', {"c.txt": "c"})
    write_hashes(root, io.StringIO())
    return root


SHA = hashlib.sha256(CONTENT).hexdigest()


def test_an_unpinned_artifact_is_shown_and_its_image_cannot_build(repo: Path, site: Site) -> None:
    plan = compute_plan(load_settings(repo), use_cache=False)
    (refusal,) = plan.get("img").cannot_build
    assert refusal.reason == "unpinned artifact tool (build arg TOOL_SHA256 is empty)"
    assert (
        f"http://{site.server.address}/files/tool-1.2.tar.gz" in refusal.fix
        and "invoke upstream" in refusal.fix
    )
    document = {item["name"]: item for item in plan_document(plan)["images"]}
    assert document["img"]["artifacts"] == [
        {
            "name": "tool",
            "url": f"http://{site.server.address}/files/tool-1.2.tar.gz",
            "sha256_build_arg": "TOOL_SHA256",
            "sha256": None,
        }
    ]
    table = invoke(repo, "plan", "--offline")
    assert "unpinned artifact tool" in table.stdout
    assert "cannot build: unpinned artifact tool (build arg TOOL_SHA256 is empty)" in table.stdout
    assert site.downloads() == []  # planning downloads nothing


def test_upstream_check_reports_then_upstream_pins_and_names_the_lock_entries(repo: Path, site: Site) -> None:
    declaration = repo / "images/img/image.toml"
    before = declaration.read_text()
    check = invoke(repo, "upstream", "--check")
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"img: artifact tool unpinned → sha256:{SHA[:12]}" in check.stdout
    assert "not current: 1 unpinned" in check.stderr
    assert declaration.read_text() == before

    lock_before = json.loads((repo / "images.lock.json").read_text())["images"]
    done = invoke(repo, "upstream")
    assert done.returncode == 0, done.stdout + done.stderr
    assert declaration.read_text() == before.replace('TOOL_SHA256 = ""', f'TOOL_SHA256 = "{SHA}"')
    plan = compute_plan(load_settings(repo), use_cache=False)
    img, child = plan.get("img"), plan.get("child")
    assert "images.lock.json: these entries changed:" in done.stdout
    assert (
        f"  img: {lock_before['img']['hash'][:16]} → {img.tag}: build arg TOOL_SHA256 '' → '{SHA}'"
        in done.stdout
    )
    assert f"  child: {lock_before['child']['hash'][:16]} → {child.tag}: parent img changed" in done.stdout
    assert plan.lock_is_current and not img.cannot_build  # the lock follows the repin
    again = invoke(repo, "upstream", "--check")
    assert again.returncode == 0 and "all current" in again.stdout


def test_a_different_file_at_the_same_url_is_reported_as_changed(repo: Path, site: Site) -> None:
    assert invoke(repo, "upstream").returncode == 0
    site.files["/files/tool-1.2.tar.gz"] = CONTENT + b"tampered"
    check = invoke(repo, "upstream", "--check")
    assert check.returncode == 1
    new = hashlib.sha256(CONTENT + b"tampered").hexdigest()
    assert f"img: artifact tool sha256:{SHA[:12]} → sha256:{new[:12]} (a different file" in check.stdout
    assert "not current: 1 changed" in check.stderr


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [(404, 2, "answered 404: no such file"), (500, 3, "answered 500"), (503, 3, "answered 503")],
)
def test_a_failed_download_is_an_error_and_nothing_is_written(
    repo: Path, site: Site, status: int, code: int, message: str
) -> None:
    site.status = status
    before = {path: path.read_bytes() for path in repo.rglob("*.toml")}
    done = invoke(repo, "upstream")
    assert done.returncode == code, done.stdout + done.stderr
    assert message in done.stderr and done.stderr.count("\n") == 1
    assert {path: path.read_bytes() for path in repo.rglob("*.toml")} == before


def test_an_unreachable_site_is_never_a_checksum(repo: Path, site: Site) -> None:
    address = site.server.address
    site.server.__exit__()  # nothing listens there any more
    from imagecascade.errors import BackendError
    from imagecascade.pins.artifacts import download_sha256

    with pytest.raises(BackendError, match="cannot download it"):
        download_sha256(f"http://{address}/files/tool-1.2.tar.gz", timeout=5)


def test_an_unpinned_base_is_called_unpinned_not_moved(repo: Path, site: Site) -> None:
    address = site.server.address
    write_image(repo, "img", artifact_toml(address, SHA, base=f"{address}/base:1"), {"a.txt": "a"})
    write_hashes(repo, io.StringIO())
    check = invoke(repo, "upstream", "--check")
    assert check.returncode == 1
    assert f"img: {address}/base:1 unpinned → {DIGEST[:19]}" in check.stdout
    assert "not current: 1 unpinned" in check.stderr and "moved" not in check.stderr


def test_a_stale_lock_is_left_alone_and_the_repins_entries_are_named(repo: Path, site: Site) -> None:
    (repo / "images/child/c.txt").write_text("an unrelated change\n")
    lock = (repo / "images.lock.json").read_bytes()
    done = invoke(repo, "upstream")
    assert done.returncode == 0, done.stderr
    assert "images.lock.json was stale before and is left as it is" in done.stdout
    assert "  img: " in done.stdout and "run `invoke hashes --write`" in done.stdout
    assert (repo / "images.lock.json").read_bytes() == lock


def _tool(tail: str):  # type: ignore[no-untyped-def]
    def change(root: Path) -> None:
        top, _, tables = tail.rpartition("\n#tables\n")  # top-level keys go before the first table
        write_image(root, "img", f'base = "x:1"\n{top}\n[build_args]\nV = "1"\nSUM = ""\n' + tables)

    return change


ARTIFACT = (
    '[[artifacts]]\nname = "tool"\nurl = "https://example.invalid/tool-${V}.tgz"\nsha256_build_arg = "SUM"\n'
)
BAD = [
    ("not an array", 'artifacts = "x"\n#tables\n', "artifacts must be an array of tables"),
    ("unknown key", ARTIFACT + 'sha = "x"\n', "unknown key 'sha'"),
    (
        "no url",
        ARTIFACT.replace('url = "https://example.invalid/tool-${V}.tgz"\n', ""),
        "url must be a non-empty",
    ),
    ("bad name", ARTIFACT.replace('"tool"', '"Tool X"'), "name 'Tool X' must be lower-case"),
    ("twice", ARTIFACT + ARTIFACT, "a second artifact named 'tool'"),
    ("not http", ARTIFACT.replace("https://", "ftp://"), "must be an http(s) URL"),
    (
        "unknown variable",
        ARTIFACT.replace("${V}", "${VERSION}"),
        "url uses ${VERSION}, which is not in [build_args]",
    ),
    ("own checksum", ARTIFACT.replace("${V}", "$SUM"), "url uses ${SUM}, the artifact's own checksum"),
    ("undeclared checksum", ARTIFACT.replace('"SUM"', '"OTHER"'), "declare build_args.OTHER"),
]


@pytest.mark.parametrize(("tail", "problem"), [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_artifacts_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tail: str, problem: str
) -> None:
    (tmp_path / "cascade.toml").write_text("")
    _tool(tail)(tmp_path)
    assert hook_main(["--root", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "images/img/image.toml: artifacts" in lines[0] and problem in lines[0], lines


def test_a_checksum_that_is_not_a_sha256_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cascade.toml").write_text("")
    write_image(tmp_path, "img", 'base = "x:1"\n[build_args]\nV = "1"\nSUM = "ABC"\n' + ARTIFACT)
    with pytest.raises(Exception, match="must be empty or a SHA-256"):
        load_images(load_settings(tmp_path))


def test_the_launchers_gcloud_tarball_is_an_unpinned_artifact_of_the_dockerfiles_url() -> None:
    root = Path(__file__).resolve().parents[1]
    spec = load_images(load_settings(root))["arr-vertex-launcher"]
    (artifact,) = spec.artifacts
    assert artifact.sha256_build_arg == "GCLOUD_SHA256" and spec.unpinned_artifacts == [artifact]
    url = artifact.render(spec.build_args)
    assert url.endswith(f"google-cloud-cli-{spec.build_args['GCLOUD_VERSION']}-linux-x86_64.tar.gz")
    text = spec.dockerfile.read_text()
    prefix = url.rsplit("/", 1)[0]
    assert f'"{prefix}/${{archive}}"' in text
    assert 'archive="google-cloud-cli-${GCLOUD_VERSION}-linux-x86_64.tar.gz"' in text
