"""Cloud Storage, through google-cloud-storage. The only module that imports it.

Three verbs for the Cloud Build backend: make sure the source bucket exists and belongs to the
project, upload a source tarball once per content (pinned to its generation), and read a build
log from an offset. Bucket and upload calls follow the one retry policy of `retry.py` (resumable
uploads resume a chunk after a reset); log reads are not retried here: the log reader asks
again at the next poll.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import threading
from typing import IO, Any, Literal

import google.api_core.exceptions as api_exceptions
import google_crc32c
from google.cloud.storage import Blob, Bucket, Client

from imagecascade.cloud.retry import Interrupted, Timing, describe_error, is_transient, storage_retry
from imagecascade.errors import BackendError, ConfigError

OURS = (BackendError, ConfigError, Interrupted)
UploadAction = Literal["uploaded", "already uploaded", "replaced"]


@dataclasses.dataclass(frozen=True)
class SourceObject:
    """An uploaded source tarball, pinned: Cloud Build fetches exactly this generation."""

    bucket: str
    name: str
    generation: int
    action: UploadAction  # what this call did
    md5: str  # base64, as Cloud Storage reports it


class CloudStorage:
    def __init__(self, client: Client, timing: Timing | None = None) -> None:
        self._client = client
        self._timing = timing or Timing()

    @classmethod
    def connect(
        cls, project: str, credentials: Any, endpoint: str | None, timing: Timing | None = None
    ) -> CloudStorage:
        """A client for `project`; `endpoint` (an emulator's URL) replaces storage.googleapis.com."""
        options = {"api_endpoint": endpoint} if endpoint else None
        return cls(Client(project=project, credentials=credentials, client_options=options), timing)

    def ensure_bucket(
        self,
        name: str,
        *,
        project: str,
        location: str = "",
        owned_by_project: bool,
        stop: threading.Event | None = None,
    ) -> bool:
        """Make sure gs://`name` exists; True when this call created it.

        A missing bucket is created in `project` (in `location` when given, with uniform access
        and public access prevention) when `owned_by_project`, else it is a ConfigError: a bucket
        the user named is theirs to create. With `owned_by_project`, an existing bucket must be
        one of `project`'s (listed by `buckets.list?project=P&prefix=NAME`, as gcloud checks its
        default staging bucket: googlecloudsdk/api_lib/storage/storage_api.py,
        `CreateBucketIfNotExists(check_ownership=True)`); a bucket of that name in another
        project, or one this account may not even read, is refused: it could be anyone's, and
        the source would go to them.
        """
        retry = storage_retry(self._timing, stop)
        try:
            self._client.get_bucket(name, retry=retry)
        except api_exceptions.NotFound:
            if not owned_by_project:
                raise ConfigError(
                    f"Cloud Storage: bucket gs://{name} does not exist; create it "
                    f"(gcloud storage buckets create gs://{name}) or pass another --bucket"
                ) from None
            if self._create_bucket(name, project, location, retry):
                return True
        except api_exceptions.Forbidden as error:
            if owned_by_project:
                raise _foreign(name, "this account may not read it") from error
            raise BackendError(
                f"Cloud Storage: not allowed to use gs://{name} ({describe_error(error)})"
            ) from error
        except OURS:
            raise
        except Exception as error:
            raise _failed(f"look up gs://{name}", error) from error
        if owned_by_project and not self._listed_in(name, project, retry):
            raise _foreign(name, f"it is not one of project {project}'s buckets")
        return False

    def _create_bucket(self, name: str, project: str, location: str, retry: Any) -> bool:
        bucket = Bucket(self._client, name=name)
        bucket.iam_configuration.uniform_bucket_level_access_enabled = True
        bucket.iam_configuration.public_access_prevention = "enforced"
        try:
            self._client.create_bucket(bucket, project=project, location=location or None, retry=retry)
        except api_exceptions.Conflict:
            return False  # created meanwhile, perhaps by someone else: the ownership check decides
        except OURS:
            raise
        except Exception as error:
            raise _failed(f"create gs://{name} in project {project}", error) from error
        return True

    def _listed_in(self, name: str, project: str, retry: Any) -> bool:
        try:
            return any(
                bucket.name == name
                for bucket in self._client.list_buckets(project=project, prefix=name, retry=retry)
            )
        except OURS:
            raise
        except Exception as error:
            raise _failed(f"list project {project}'s buckets", error) from error

    def upload_source(
        self, bucket_name: str, object_name: str, source: IO[bytes], stop: threading.Event | None = None
    ) -> SourceObject:
        """Upload `source` unless the object already holds exactly these bytes.

        Source tarballs are named by freshness hash and written deterministically, so an object
        with the same MD5 is this tarball and is reused. One with other bytes (a damaged upload,
        another tar writer) is replaced, guarded by its generation. Large tarballs go up as a
        resumable upload in `Timing.upload_chunk_bytes` chunks; a chunk lost to a reset is sent
        again from where the server says it stopped.
        """
        md5, crc32c, size = _checksums(source)
        retry = storage_retry(self._timing, stop)
        bucket = self._client.bucket(bucket_name)
        for _ in range(3):  # a racing writer can move the object twice at most before we settle
            try:
                existing = bucket.get_blob(object_name, retry=retry)
            except OURS:
                raise
            except Exception as error:
                raise _failed(f"look up gs://{bucket_name}/{object_name}", error) from error
            if existing is not None and _same(existing, md5, crc32c, size):
                return SourceObject(
                    bucket_name, object_name, int(existing.generation), "already uploaded", md5
                )
            blob = bucket.blob(object_name, chunk_size=self._timing.upload_chunk_bytes)
            precondition = int(existing.generation) if existing is not None else 0
            source.seek(0)
            try:
                blob.upload_from_file(
                    source,
                    size=size,
                    content_type="application/gzip",
                    if_generation_match=precondition,
                    checksum="crc32c",
                    retry=retry,
                )
            except api_exceptions.PreconditionFailed:
                continue  # written meanwhile (or by our own lost attempt): compare again
            except OURS:
                raise
            except Exception as error:
                raise _failed(f"upload gs://{bucket_name}/{object_name}", error) from error
            action: UploadAction = "replaced" if existing is not None else "uploaded"
            return SourceObject(bucket_name, object_name, int(blob.generation), action, md5)
        raise BackendError(f"Cloud Storage: gs://{bucket_name}/{object_name} keeps changing under the upload")

    def read_from(self, bucket_name: str, object_name: str, offset: int) -> bytes:
        """The object's bytes from `offset` on; b"" when it does not exist (yet) or has no more.

        Every other failure propagates as raised by google-cloud-storage or the transport.
        """
        blob = self._client.bucket(bucket_name).blob(object_name)
        try:
            data: bytes = blob.download_as_bytes(start=offset, retry=None, checksum=None)
        except (api_exceptions.NotFound, api_exceptions.RequestRangeNotSatisfiable):
            return b""
        return data

    def close(self) -> None:
        self._client.close()


def _checksums(source: IO[bytes]) -> tuple[str, str, int]:
    md5 = hashlib.md5(usedforsecurity=False)
    crc = google_crc32c.Checksum()  # type: ignore[no-untyped-call]
    size = 0
    source.seek(0)
    while chunk := source.read(1 << 20):
        md5.update(chunk)
        crc.update(chunk)  # type: ignore[no-untyped-call]
        size += len(chunk)
    source.seek(0)
    return base64.b64encode(md5.digest()).decode(), base64.b64encode(crc.digest()).decode(), size  # type: ignore[no-untyped-call]


def _same(blob: Blob, md5: str, crc32c: str, size: int) -> bool:
    if blob.size is not None and int(blob.size) != size:
        return False
    if blob.md5_hash:  # composite objects have only a CRC32C
        return bool(blob.md5_hash == md5)
    return bool(blob.crc32c == crc32c)


def _foreign(name: str, why: str) -> ConfigError:
    return ConfigError(
        f"Cloud Storage: the default source bucket gs://{name} already exists and {why}: it may belong "
        "to another project, so nothing is uploaded there; pass --bucket BUCKET or set [cloudbuild] "
        "bucket in cascade.toml to a bucket of your project"
    )


def _failed(what: str, error: BaseException) -> BackendError:
    if is_transient(error):
        return BackendError(f"Cloud Storage: {what}: still {describe_error(error)} after retries")
    return BackendError(f"Cloud Storage: {what}: {describe_error(error)}")
