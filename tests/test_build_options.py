"""Cloud Build options in image.toml, cascade.toml and flags: Cloud Build's own ranges and enums."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.cloud.devtools import cloudbuild_v1

from imagecascade.core.build_options import (
    LOGGING_MODES,
    MACHINE_TYPES,
    CloudBuildFlags,
    CloudBuildOptions,
    parse_cloudbuild_options,
    service_account_name,
)
from imagecascade.core.settings import Settings, load_settings
from imagecascade.errors import ConfigError


def test_the_closed_sets_are_the_api_enums() -> None:
    """The pure core cannot import google code; this keeps its copies equal to the API's enums."""
    machine = [name for name in cloudbuild_v1.BuildOptions.MachineType.__members__ if name != "UNSPECIFIED"]
    logging = [
        name for name in cloudbuild_v1.BuildOptions.LoggingMode.__members__ if name != "LOGGING_UNSPECIFIED"
    ]
    assert sorted(MACHINE_TYPES) == sorted(machine)
    assert sorted(LOGGING_MODES) == sorted(logging)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, CloudBuildOptions()),
        ({"machine_type": "E2_STANDARD_2"}, CloudBuildOptions(machine_type="E2_STANDARD_2")),
        (
            {"timeout_minutes": 1440, "disk_size_gb": 4000},
            CloudBuildOptions(timeout_minutes=1440, disk_size_gb=4000),
        ),
        ({"required": True}, CloudBuildOptions(required=True)),
        ({"logs_bucket": "team-logs/cascade"}, CloudBuildOptions(logs_bucket="gs://team-logs/cascade")),
        (
            {"service_account": "b@p.iam.gserviceaccount.com", "logging": "CLOUD_LOGGING_ONLY"},
            CloudBuildOptions(service_account="b@p.iam.gserviceaccount.com", logging="CLOUD_LOGGING_ONLY"),
        ),
        (
            {
                "worker_pool": "projects/p/locations/europe-west4/workerPools/big",
                "machine_type": "n2-highcpu-96",
            },
            CloudBuildOptions(
                worker_pool="projects/p/locations/europe-west4/workerPools/big", machine_type="n2-highcpu-96"
            ),
        ),
    ],
)
def test_parse_accepts(raw: dict[str, Any], expected: CloudBuildOptions) -> None:
    assert parse_cloudbuild_options(raw, "x/image.toml: [cloudbuild]") == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"machine_type": "E2_HIGHCPU_64"},
            "machine_type: 'E2_HIGHCPU_64' is not a Cloud Build machine type",
        ),
        ({"timeout_minutes": 1441}, r"timeout_minutes: 1441 minutes is outside 1..1440 \(24 h\)"),
        ({"timeout_minutes": 0}, "outside 1..1440"),
        ({"disk_size_gb": 4001}, "disk_size_gb: 4001 GB is outside 1..4000"),
        ({"worker_pool": "big"}, "is not a private pool name"),
        ({"region": "Europe West"}, "is not a Cloud Build region"),
        ({"service_account": "builder"}, "neither a service account email"),
        ({"logs_bucket": "gs://UPPER"}, "is not gs://BUCKET"),
        ({"logging": "STDOUT"}, "'STDOUT' is not one of LEGACY, GCS_ONLY"),
        ({"required": "yes"}, "required must be true or false"),
        ({"timeout_minutes": True}, "timeout_minutes must be an integer"),
        ({"machine": "E2_MEDIUM"}, "unknown key 'machine'"),
    ],
)
def test_parse_refuses_what_cloud_build_refuses(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        parse_cloudbuild_options(raw, "images/x/image.toml: [cloudbuild]")
    assert str(raised.value).startswith("images/x/image.toml: [cloudbuild]: ")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (CloudBuildFlags(timeout_minutes=2000), "--timeout: 2000 minutes"),
        (CloudBuildFlags(disk_size_gb=5000), "--disk-size: 5000 GB"),
        (CloudBuildFlags(machine_type="BIG"), "--machine-type: 'BIG'"),
        (CloudBuildFlags(logging="FILES"), "--logging: 'FILES'"),
        (CloudBuildFlags(queued_timeout=0), "--queued-timeout must be a positive number"),
    ],
)
def test_flags_are_checked_with_their_own_names(flags: CloudBuildFlags, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        flags.check()


def test_cascade_toml_holds_service_account_and_logging_defaults(tmp_path: Path) -> None:
    (tmp_path / "cascade.toml").write_text(
        '[cloudbuild]\nproject = "p"\nservice_account = "b@p.iam.gserviceaccount.com"\n'
        'logs_bucket = "team-logs"\nlogging = "GCS_ONLY"\n'
    )
    settings = load_settings(tmp_path)
    assert settings.cloudbuild_defaults() == {
        "service_account": "b@p.iam.gserviceaccount.com",
        "logs_bucket": "gs://team-logs",
        "logging": "GCS_ONLY",
    }


def test_a_bad_cascade_toml_value_names_the_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "cascade.toml").write_text('[cloudbuild]\nlogging = "everything"\n')
    with pytest.raises(ConfigError, match=r"cascade.toml: cloudbuild.logging: 'everything' is not one of"):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    ("project", "region", "expected"),
    [
        ("my-project", "global", "my-project_cloudbuild"),
        ("my-project", "europe-west4", "my-project_europe-west4_cloudbuild"),
        # Domain-scoped ids, as gcloud's staging_bucket_util.GetDefaultStagingBucket turns them into names.
        ("example.com:proj", "global", "example_com_proj_cloudbuild"),
        ("google.com:tools", "global", "elgoog_com_tools_cloudbuild"),
    ],
)
def test_default_source_bucket_is_named_as_gcloud_names_it(project: str, region: str, expected: str) -> None:
    assert Settings(root=Path("."), cloudbuild_project=project).source_bucket(region) == (expected, True)


def test_an_explicit_bucket_is_not_the_default() -> None:
    settings = Settings(root=Path("."), cloudbuild_project="p", cloudbuild_bucket="mine")
    assert settings.source_bucket("us-central1") == ("mine", False)


@pytest.mark.parametrize(
    ("account", "expected"),
    [
        ("b@other.iam.gserviceaccount.com", "projects/other/serviceAccounts/b@other.iam.gserviceaccount.com"),
        ("robot@example.com", "projects/p/serviceAccounts/robot@example.com"),
        (
            "projects/x/serviceAccounts/b@x.iam.gserviceaccount.com",
            "projects/x/serviceAccounts/b@x.iam.gserviceaccount.com",
        ),
    ],
)
def test_service_account_name(account: str, expected: str) -> None:
    assert service_account_name(account, "p") == expected
