"""What is submitted for one image: which source each option comes from, and what is refused first.

Pure: `build_submission` puts the REST body together without any server. The backend tests show
the same body reaching the fake Cloud Build, which refuses what the real API refuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imagecascade.cloud.submission import Submission, build_submission, registry_tag
from imagecascade.core.build_options import CloudBuildFlags
from imagecascade.core.settings import load_settings
from imagecascade.errors import ConfigError
from tests.cloud_fixtures import REGISTRY, config_text, make_repo, request_for


def submit(root: Path, image: str = "app", **flags: Any) -> Submission:
    return build_submission(request_for(root, image), load_settings(root), CloudBuildFlags(**flags))


def with_yaml(root: Path, **extra: Any) -> Path:
    (root / "cloudbuild" / "app.yaml").write_text(config_text("app", ["MAX_JOBS"], **extra))
    return root


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """The test repository with an app image.toml whose [cloudbuild] sets nothing."""
    return make_repo(tmp_path / "repo", app_cloudbuild="")


def test_the_yaml_timeout_holds_when_neither_image_toml_nor_a_flag_sets_one(bare: Path) -> None:
    submission = submit(with_yaml(bare, timeout="21600s"))
    assert submission.body["timeout"] == "21600s"
    assert "timeout 6:00:00 from cloudbuild/app.yaml" in submission.notes


def test_image_toml_then_a_flag_override_the_yaml_timeout_and_say_so(tmp_path: Path) -> None:
    root = with_yaml(make_repo(tmp_path / "repo"), timeout="21600s")  # image.toml: 180 minutes
    assert submit(root).body["timeout"] == "10800s"
    assert "timeout 3:00:00 from images/app/image.toml [cloudbuild] timeout_minutes" in submit(root).notes
    flagged = submit(root, timeout_minutes=45)
    assert flagged.body["timeout"] == "2700s" and "timeout 0:45:00 from --timeout" in flagged.notes


def test_without_any_timeout_the_default_is_an_hour(bare: Path) -> None:
    submission = submit(bare)
    assert submission.body["timeout"] == "3600s" and "timeout 1:00:00 from the default" in submission.notes


@pytest.mark.parametrize(
    ("yaml", "flags", "message"),
    [
        ({"timeout": "90000s"}, {}, r"cloudbuild/app.yaml: timeout 25:00:00 is outside Cloud Build's range"),
        ({"timeout": "6h"}, {}, r"cloudbuild/app.yaml: timeout: '6h' is not a duration in seconds"),
        ({"queueTtl": "soon"}, {}, r"queueTtl: 'soon' is not a duration"),
        (
            {"options": {"machineType": "E2_HIGHCPU_64"}},
            {},
            r"cloudbuild/app.yaml: machine type 'E2_HIGHCPU_64'",
        ),
        ({"options": {"diskSizeGb": "5000"}}, {}, r"disk size 5000 GB is above Cloud Build's 4000 GB"),
        ({"tags": ["imagecascade", "app", "hash-${_TAG}", "has space"]}, {}, r"tag 'has space' is not"),
        (
            {"serviceAccount": "projects/p/serviceAccounts/b@p.iam.gserviceaccount.com"},
            {},
            "needs somewhere for its log",
        ),
        (
            {"options": {"logging": "GCS_ONLY"}},
            {"service_account": "b@p.iam.gserviceaccount.com"},
            "--service-account: a build",
        ),
    ],
)
def test_what_cloud_build_refuses_is_refused_first(
    bare: Path, yaml: dict[str, Any], flags: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        submit(with_yaml(bare, **yaml), **flags)


def test_a_step_timeout_longer_than_the_build_is_refused(bare: Path) -> None:
    document = json.loads(config_text("app", ["MAX_JOBS"]))
    document["steps"][0]["timeout"] = "7200s"
    (bare / "cloudbuild" / "app.yaml").write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=r"steps\[0\].timeout 2:00:00 is longer than the build's 1:00:00"):
        submit(bare)


@pytest.mark.parametrize(
    "flags",
    [
        {"service_account": "b@fake-project.iam.gserviceaccount.com", "logging": "CLOUD_LOGGING_ONLY"},
        {"service_account": "b@fake-project.iam.gserviceaccount.com", "logging": "NONE"},
        {"service_account": "b@fake-project.iam.gserviceaccount.com", "logs_bucket": "gs://mine/logs"},
    ],
)
def test_a_service_account_with_a_place_for_its_log_is_accepted(bare: Path, flags: dict[str, str]) -> None:
    body = submit(bare, **flags).body
    assert (
        body["serviceAccount"]
        == "projects/fake-project/serviceAccounts/b@fake-project.iam.gserviceaccount.com"
    )
    assert body.get("logsBucket") == flags.get("logs_bucket")
    assert body.get("options", {}).get("logging") == flags.get("logging")


def test_a_regional_default_bucket_behaviour_in_the_yaml_satisfies_a_service_account(bare: Path) -> None:
    with_yaml(bare, options={"defaultLogsBucketBehavior": "REGIONAL_USER_OWNED_BUCKET"})
    body = submit(bare, service_account="b@p.iam.gserviceaccount.com").body
    assert body["options"]["defaultLogsBucketBehavior"] == "REGIONAL_USER_OWNED_BUCKET"


def test_service_account_and_logging_come_from_cascade_toml_unless_image_toml_or_flags_say_otherwise(
    tmp_path: Path,
) -> None:
    root = make_repo(tmp_path / "repo", app_cloudbuild='logging = "GCS_ONLY"\nlogs_bucket = "app-logs"\n')
    defaults = 'service_account = "ci@fake-project.iam.gserviceaccount.com"\nlogging = "CLOUD_LOGGING_ONLY"\n'
    text = (root / "cascade.toml").read_text().replace("[cloudbuild]\n", f"[cloudbuild]\n{defaults}")
    (root / "cascade.toml").write_text(text)
    child = submit(root, "child").body  # only cascade.toml speaks for the child
    assert child["serviceAccount"].endswith("/ci@fake-project.iam.gserviceaccount.com")
    assert child["options"]["logging"] == "CLOUD_LOGGING_ONLY" and "logsBucket" not in child
    app = submit(root).body  # the app's image.toml wins over cascade.toml
    assert app["options"]["logging"] == "GCS_ONLY" and app["logsBucket"] == "gs://app-logs"
    flagged = submit(root, logging="NONE").body
    assert flagged["options"]["logging"] == "NONE"


def test_a_private_pool_decides_region_and_machine(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")  # image.toml: E2_HIGHCPU_32, 200 GB
    pool = "projects/fake-project/locations/europe-west4/workerPools/big"
    submission = submit(root, worker_pool=pool)
    assert submission.region == "europe-west4"
    assert submission.body["options"] == {"pool": {"name": pool}}
    ignored = f"ignored: the private pool {pool} decides the machine"
    assert submission.notes[1:] == (
        f"machine type E2_HIGHCPU_32 (images/app/image.toml [cloudbuild] machine_type) {ignored}",
        f"disk size 200 (images/app/image.toml [cloudbuild] disk_size_gb) {ignored}",
    )
    assert submit(root, worker_pool=pool, region="europe-west4").region == "europe-west4"
    with pytest.raises(ConfigError, match="--region: region us-east1 conflicts with the private pool"):
        submit(root, worker_pool=pool, region="us-east1")


def test_a_pool_in_the_yaml_also_decides_the_region(bare: Path) -> None:
    pool = "projects/fake-project/locations/asia-east1/workerPools/p"
    assert submit(with_yaml(bare, options={"pool": {"name": pool}})).region == "asia-east1"


def test_the_docker_build_step_must_use_the_cloudbuild_network(bare: Path) -> None:
    document = json.loads(config_text("app", ["MAX_JOBS"]))
    document["steps"][0]["args"].remove("--network=cloudbuild")
    (bare / "cloudbuild" / "app.yaml").write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="the docker build step must pass --network=cloudbuild"):
        submit(bare)


def test_queued_timeout_sets_queue_ttl_and_registry_tag_is_added(bare: Path) -> None:
    submission = submit(bare, queued_timeout=90)
    assert submission.body["queueTtl"] == "90s" and submission.queued_timeout == 90
    assert registry_tag(REGISTRY) in submission.body["tags"]
    assert submission.lookup_tags[3] == registry_tag(REGISTRY) != registry_tag(REGISTRY + "x")
    body = submission.with_source("b", "o", 7, "submission-1")
    assert body["source"] == {"storageSource": {"bucket": "b", "object": "o", "generation": "7"}}
    assert body["tags"][-1] == "submission-1" and "submission-1" not in submission.body["tags"]


def test_allow_loose_in_the_yaml_lets_an_unused_substitution_through(bare: Path) -> None:
    document = json.loads(config_text("app", []))  # MAX_JOBS is a build arg the YAML no longer uses
    document["options"] = {"substitutionOption": "ALLOW_LOOSE"}
    (bare / "cloudbuild" / "app.yaml").write_text(json.dumps(document))
    assert submit(bare).body["substitutions"]["_MAX_JOBS"] == "4"
    document.pop("options")
    (bare / "cloudbuild" / "app.yaml").write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="substitution _MAX_JOBS is provided but never used"):
        submit(bare)
